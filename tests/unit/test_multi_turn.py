"""MultiTurnManager with real tools, a real parser and a real environment."""

import asyncio

import pytest

from rayrl.agent.multi_turn import MultiTurnManager
from rayrl.agent.parsers import JSONActionParser
from rayrl.agent.tools import Tool, ToolDefinition, ToolParameter, ToolRegistry
from rayrl.config import EnvironmentConfig
from rayrl.envs.math_feedback import MathFeedbackEnvironment


class AnswerTool(Tool):
    def __init__(self, env):
        self.env = env
        super().__init__(
            ToolDefinition(
                name="answer",
                description="Give the answer",
                parameters=[ToolParameter(name="value", type="integer", description="the answer")],
            )
        )

    def execute(self, value: int, **kwargs) -> str:
        obs, reward, done, info = self.env.step(str(value))
        return f"{obs} (reward {reward})"


class BrokenTool(Tool):
    def __init__(self):
        super().__init__(ToolDefinition(name="broken", description="always fails", parameters=[]))

    def execute(self, **kwargs) -> str:
        raise RuntimeError("disk on fire")


def make_manager(max_turns=3):
    env = MathFeedbackEnvironment(EnvironmentConfig(max_turns=3))
    registry = ToolRegistry([AnswerTool(env), BrokenTool()])
    return MultiTurnManager(registry, JSONActionParser(registry), env, max_turns=max_turns), env


def test_episode_with_parse_error_failed_tool_and_success():
    manager, env = make_manager(max_turns=5)
    first = manager.reset({"a": 2, "b": 3})
    assert first == "What is 2 + 3?"
    t0 = manager.step("I think it's five", first)
    assert t0.tool_call is None and t0.parse_error and t0.feedback == t0.parse_error
    t1 = manager.step('{"tool": "broken", "arguments": {}}', t0.feedback)
    assert t1.tool_call.success is False and "disk on fire" in t1.feedback and t1.reward == 0.0
    t2 = manager.step('{"tool": "answer", "arguments": {"value": 4}}', t1.feedback)
    assert t2.tool_call.success is True and t2.reward == 0.0 and not t2.done
    t3 = manager.step('{"tool": "answer", "arguments": {"value": 5}}', t2.feedback)
    assert t3.done and t3.reward == pytest.approx(0.5)  # right on the environment's 2nd answer
    summary = manager.episode_summary()
    assert summary["num_turns"] == 4
    assert summary["total_reward"] == pytest.approx(0.5)
    assert summary["tools"]["successful_tool_calls"] == 2
    assert summary["tools"]["failed_tool_calls"] == 1
    assert summary["tools"]["parse_errors"] == 1
    assert summary["tools"]["calls_by_tool"] == {"broken": 1, "answer": 2}
    with pytest.raises(RuntimeError):
        manager.step('{"tool": "answer", "arguments": {"value": 5}}')


def test_turn_limit_ends_the_episode():
    manager, _ = make_manager(max_turns=2)
    manager.reset({"a": 1, "b": 1})
    assert not manager.step("nothing").done
    assert manager.step("still nothing").done
    assert manager.episode_summary()["done"] is True


def test_invalid_arguments_are_fed_back():
    manager, _ = make_manager()
    manager.reset({"a": 1, "b": 1})
    turn = manager.step('{"tool": "answer", "arguments": {"value": "two"}}')
    assert turn.tool_call is None and "value" in turn.feedback


def test_async_step_matches_sync():
    manager, _ = make_manager()
    manager.reset({"a": 4, "b": 4})
    turn = asyncio.run(manager.astep('{"tool": "answer", "arguments": {"value": 8}}'))
    assert turn.done and turn.reward == 1.0
    assert manager.episode_summary()["tools"]["successful_tool_calls"] == 1


def test_instructions_name_the_tools():
    manager, _ = make_manager()
    text = manager.instructions()
    assert "answer" in text and "broken" in text
