"""EnvironmentSource: one fresh environment per episode from a name, class, instance or
tool manager; tools stay bound to their own episode's environment."""

import copy
import sys
from pathlib import Path

import cloudpickle
import pytest

from rayrl import JSONActionParser, MultiTurnManager, ToolRegistry
from rayrl.config import EnvironmentConfig
from rayrl.envs import ConversationEnvironment, MathFeedbackEnvironment
from rayrl.envs.source import EnvironmentSource
from rayrl.envs.tool_use import ToolUseEnvironment

SEED_JOB = Path(__file__).resolve().parents[2] / "jobs" / "seed_integration"


@pytest.fixture
def game():
    sys.path.insert(0, str(SEED_JOB))
    try:
        import game_env
        import game_tools
    finally:
        sys.path.pop(0)
    env = game_env.TextAdventureEnvironment(EnvironmentConfig())
    registry = ToolRegistry()
    for tool in (game_tools.AttackTool, game_tools.TakeTool, game_tools.HealTool, game_tools.LevelUpTool):
        registry.register(tool(env))
    return env, MultiTurnManager(registry, JSONActionParser(registry), env, max_turns=5)


def test_name_class_and_instance():
    cfg = EnvironmentConfig()
    assert isinstance(EnvironmentSource(cfg)(), MathFeedbackEnvironment)
    assert isinstance(EnvironmentSource(cfg, MathFeedbackEnvironment)(), MathFeedbackEnvironment)
    scenarios = [{"id": "s", "user_responses": ["Hi there", "Bye now"]}]
    template = ConversationEnvironment(scenarios=scenarios)
    source = EnvironmentSource(cfg, template)
    a, b = source(), source()
    assert a is not template and a is not b
    assert a.reset() == "Hi there"  # constructor data reaches the copies
    with pytest.raises(TypeError, match="BaseEnvironment"):
        EnvironmentSource(cfg, object())


def test_each_episode_gets_its_own_game_and_tools(game):
    env, manager = game
    source = EnvironmentSource(EnvironmentConfig(), env, manager)
    first, second = source(), source()
    assert isinstance(first, ToolUseEnvironment) and first.turn_limit() == 5
    assert "attack" in first.get_prompt_prefix() and '"tool"' in first.get_prompt_prefix()
    first.reset()
    second.reset()
    obs, reward, done, info = first.step('{"tool": "take", "arguments": {"item": "potion"}}')
    assert "Took potion" in obs and reward == 1.0 and info["successful_tool_calls"] == 1
    # the call acted on the first episode's game only
    assert first.inner.inventory == ["potion"] and second.inner.inventory == [] and env.inventory == []
    _, _, _, info = second.step("I will attack")
    assert info["parse_errors"] == 1 and info["successful_tool_calls"] == 0
    # and it survives the trip to an actor
    shipped = cloudpickle.loads(cloudpickle.dumps(source))()
    shipped.reset()
    shipped.step('{"tool": "heal", "arguments": {}}')
    assert shipped.manager.episode_summary()["tools"]["successful_tool_calls"] == 1


def test_manager_environment_must_match(game):
    env, manager = game
    other = copy.deepcopy(env)
    with pytest.raises(ValueError, match="tool_manager.environment"):
        EnvironmentSource(EnvironmentConfig(), other, manager)
    with pytest.raises(TypeError, match="MultiTurnManager"):
        EnvironmentSource(EnvironmentConfig(), env, tool_manager="tools")


def test_answers_to_environment_send_plain_replies_to_the_environment(game):
    env, _ = game
    registry = ToolRegistry()
    from rayrl import CalculatorTool

    registry.register(CalculatorTool())
    scenarios = [{"id": "s", "user_responses": ["What is 12*13?", "Thanks"]}]
    conv = ConversationEnvironment(scenarios=scenarios)
    manager = MultiTurnManager(registry, JSONActionParser(registry), conv, 4, answers_to_environment=True)
    ep = EnvironmentSource(EnvironmentConfig(), conv, manager)()
    ep.reset()
    obs, reward, done, _ = ep.step('{"tool": "calculator", "arguments": {"expression": "12*13"}}')
    assert obs == "156" and reward == 0.0 and not done
    obs, reward, done, info = ep.step("It is 156.")
    assert obs == "Thanks" and reward > 0 and info["parse_errors"] == 0
