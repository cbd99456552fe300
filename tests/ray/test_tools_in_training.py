"""The integration example's shape in training: RayPPOTrainer(config, environment=<user
instance>, reward_fn=<closure>, tool_manager=<MultiTurnManager>) on real actors.

The user's modules (jobs/seed_integration) are not importable in the actors, so their
classes travel by value. A random tiny model never writes a valid JSON call, so the
tool path is driven by a parser of the user's own (an `ActionParser` subclass is a
supported extension point) that reads every reply as a call of `heal`: each episode's
heal tool then steps that episode's own copy of the game.
"""

import sys
from pathlib import Path

import pytest

from rayrl import MultiTurnManager, ToolRegistry
from rayrl.agent.parsers import ActionParser, ParseResult
from rayrl.trainer import RayPPOTrainer
from tests.ray.test_trainer import tiny_config

SEED_JOB = Path(__file__).resolve().parents[2] / "jobs" / "seed_integration"


def _seed_modules():
    sys.path.insert(0, str(SEED_JOB))
    try:
        import game_env
        import game_tools
    finally:
        sys.path.pop(0)
    return game_env, game_tools


class AlwaysHeal(ActionParser):
    """Reads any reply as a call of the `heal` tool."""

    def _parse(self, text: str) -> ParseResult:
        return self._check("heal", {}, text)

    def format_instructions(self) -> str:
        return "Reply with anything; it heals."


def _manager(env, game_tools, parser_class=None, max_turns=3):
    registry = ToolRegistry()
    for tool in (game_tools.AttackTool, game_tools.TakeTool, game_tools.HealTool, game_tools.LevelUpTool):
        registry.register(tool(env))
    parser = (parser_class or AlwaysHeal)(registry)
    return MultiTurnManager(
        tool_registry=registry, action_parser=parser, environment=env, max_turns=max_turns
    )


def test_tools_run_in_training_on_each_episodes_own_environment(ray_local, tiny_model, tmp_path):
    game_env, game_tools = _seed_modules()
    config = tiny_config(
        tiny_model,
        training={"num_epochs": 1, "batch_size": 4, "group_size": 2, "kl_coef": 0.0},
        checkpoint={"run_dir": str(tmp_path), "save_final": False},
    )
    config.inference.max_model_len = 1024  # the game's prompt, tool list and three turns fit
    env = game_env.TextAdventureEnvironment(config.environment)
    env.reset()
    manager = _manager(env, game_tools, max_turns=3)
    seen = []

    def reward_fn(summary):
        seen.append(summary["tools"]["successful_tool_calls"])
        return summary["total_reward"] + summary["tools"]["successful_tool_calls"] * 2

    trainer = RayPPOTrainer(config=config, environment=env, reward_fn=reward_fn, tool_manager=manager)
    try:
        row = trainer.fit(num_epochs=1)[0]
    finally:
        trainer.cleanup()
    # 3 turns (the manager's max_turns, not environment.max_turns=2), each a successful
    # heal without a potion: -0.5 in the game, +2 bonus per call
    assert row["turns_mean"] == 3
    assert row["env_successful_tool_calls"] == 3 and row["env_parse_errors"] == 0
    assert row["env_valid_call_rate"] == 1.0
    assert row["reward_mean"] == pytest.approx(3 * (-0.5 + 2))
    assert row["env_errors"] == 0
    # the driver's instance was never stepped by training
    assert env.step_count == 0 and env.episode_reward == 0.0


@pytest.mark.slow  # a warning path; the tool counts themselves are checked in the default run
def test_reward_reading_tool_counts_without_tools_warns_once(ray_local, tiny_model, tmp_path, caplog):
    game_env, _ = _seed_modules()
    config = tiny_config(
        tiny_model,
        training={"num_epochs": 2, "batch_size": 4, "group_size": 2, "kl_coef": 0.0},
        checkpoint={"run_dir": str(tmp_path), "save_final": False},
    )
    env = game_env.TextAdventureEnvironment(config.environment)

    def reward_fn(summary):
        return summary["total_reward"] + summary["tools"]["successful_tool_calls"] * 2

    trainer = RayPPOTrainer(config=config, environment=env, reward_fn=reward_fn)
    with caplog.at_level("WARNING", logger="rayrl.trainer"):
        try:
            trainer.fit(num_epochs=2)
        finally:
            trainer.cleanup()
    warnings = [r.getMessage() for r in caplog.records if "tool_manager=" in r.getMessage()]
    assert len(warnings) == 1 and "summary['tools']" in warnings[0]


def test_immediate_reward_scores_every_turn(ray_local, tiny_model, tmp_path):
    """A per-turn reward given as reward_fn scores each assistant turn on the conversation
    up to it (turn k of a 2-turn episode scores k); the episode's reward is their sum."""
    from rayrl import ConversationEnvironment
    from rayrl.rewards import RewardType, reward_function

    @reward_function(reward_type=RewardType.IMMEDIATE)
    async def turn_number(turns, context=None):
        return float(sum(t.role == "assistant" for t in turns))

    config = tiny_config(
        tiny_model,
        training={"num_epochs": 1, "batch_size": 4, "group_size": 2, "kl_coef": 0.0},
        checkpoint={"run_dir": str(tmp_path), "save_final": False},
    )
    env = ConversationEnvironment(scenarios=[{"id": "s", "user_responses": ["Hi", "And then?"]}], max_turns=2)
    trainer = RayPPOTrainer(config, environment=env, reward_fn=turn_number)
    try:
        row = trainer.fit(num_epochs=1)[0]
    finally:
        trainer.cleanup()
    assert row["turns_mean"] == 2 and row["env_errors"] == 0
    assert row["reward_mean"] == pytest.approx(1.0 + 2.0) and row["reward_std"] == 0.0
