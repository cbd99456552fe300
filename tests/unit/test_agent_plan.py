"""Which agent a run uses: registered names, import paths, files and Python objects, resolved
on the driver before any actor starts, with clear errors."""

import pytest

from rayrl.actors.agent_drivers import plan_agent
from rayrl.agent.async_agent import Agent, register_agent
from rayrl.agents.math_multi_turn import MathMultiTurnAgent, MathSingleStepEnv
from rayrl.config import AgentRunConfig, ConfigError, ConfigStore


class Mine(Agent):
    async def collect_trajectory(self, prompt, env, obs_queue, act_queue):
        return []


async def run(client, task) -> float:
    return 0.0


def test_names_paths_files_and_objects_resolve(tmp_path):
    plan = plan_agent(AgentRunConfig(name="math-multi-turn"))
    assert (plan.kind, plan.agent, plan.env) == ("queue", MathMultiTurnAgent, MathSingleStepEnv)
    register_agent("mine-for-test", Mine)
    assert plan_agent(AgentRunConfig(name="mine-for-test")).agent is Mine
    assert plan_agent(AgentRunConfig(name="tests.unit.test_agent_plan:Mine")).agent is Mine
    plan = plan_agent(AgentRunConfig(function="tests.unit.test_agent_plan:run"))
    assert (plan.kind, plan.agent) == ("function", run)
    (tmp_path / "my_agent.py").write_text("async def run(client, task):\n    return 1.0\n")
    plan = plan_agent(AgentRunConfig(function=f"{tmp_path}/my_agent.py:run"))
    assert plan.kind == "function" and plan.agent.__module__.startswith("rayrl_user_my_agent")
    assert plan_agent(AgentRunConfig(), Mine).kind == "queue"
    assert plan_agent(AgentRunConfig(), run).agent is run
    assert plan_agent(AgentRunConfig()) is None


def test_bad_agents_fail_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match="no agent registered as 'nope'; registered: .*math-multi-turn"):
        plan_agent(AgentRunConfig(name="nope"))
    with pytest.raises(ConfigError, match="no environment service registered as 'nope'"):
        plan_agent(AgentRunConfig(name="math-multi-turn", env="nope"))
    with pytest.raises(ConfigError, match="neither an Agent subclass nor an async function"):
        plan_agent(AgentRunConfig(function="json:dumps"))
    with pytest.raises(ConfigError, match="no file"):
        plan_agent(AgentRunConfig(function=f"{tmp_path}/missing.py:run"))
    with pytest.raises(ConfigError, match="has no 'walk'"):
        plan_agent(AgentRunConfig(function="json:walk"))
    with pytest.raises(ConfigError, match="agent.name and agent.function both set"):
        ConfigStore.from_dict({"agent": {"name": "math-multi-turn", "function": "a:b"}})
    with pytest.raises(ConfigError, match="agent.on_rewrite"):
        ConfigStore.from_dict({"agent": {"on_rewrite": "retokenise"}})
    with pytest.raises(ValueError, match="taken"):
        register_agent("math-multi-turn", Mine)
