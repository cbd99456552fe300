"""`train()` on real actors with the tiny model: the user guide's quick start as written
(model name replaced), AutoTrainer training a ToolAgent (its tools in training) under a
health monitor, and bad input that must fail early or be counted."""

import asyncio
import json
from pathlib import Path

import pytest

from rayrl import ConfigError, ConversationEnvironment, MultiTurnAgent, train
from rayrl.core.agent import AgentConfig, ToolAgent, load_agent_from_checkpoint
from rayrl.training import Callback, DiagnosticsMonitor, HealthStatus
from rayrl.training.train import AutoTrainer, build_config

# A test's size: short contexts, no dashboard, and environments in the agent loop (the
# per-episode environment actors are tested in test_env_isolation).
SMALL = {
    "inference.max_model_len": 1024,
    "inference.kv_cache_gb": 1,
    "ray.include_dashboard": False,
    "environment.isolation": "inline",
}


def _run_rows(run_dir: Path) -> list[dict]:
    (run,) = [p for p in run_dir.iterdir() if (p / "metrics.jsonl").exists()]
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_quick_start_as_written_trains_and_answers_with_the_trained_policy(ray_local, tiny_model, tmp_path):
    async def quick_example():
        # 1. Create an agent
        config = AgentConfig(
            model_name=tiny_model, system_prompt="You are a helpful AI assistant.", temperature=0.8
        )
        agent = MultiTurnAgent(config)
        await agent.initialize()

        # 2. Create environment with scenarios
        scenarios = [
            {
                "id": "help_conversation",
                "user_responses": [
                    "Hi! Can you help me?",
                    "I need advice on learning Python.",
                    "Thank you for the suggestions!",
                ],
            }
        ]
        environment = ConversationEnvironment(scenarios=scenarios)

        # 3. Train the agent
        trained_agent = await train(
            agent=agent,
            environment=environment,
            num_episodes=16,
            profile="balanced",
            # replies of 32 tokens: the random tiny model never ends one, and 256 a turn
            # (the agent's default) made this test's update 8x longer
            config_overrides={**SMALL, "max_new_tokens": 32, "checkpoint.run_dir": str(tmp_path / "runs")},
            save_path=str(tmp_path / "my_agent"),
        )

        # 4. Use the trained agent
        response = await trained_agent.generate_response([{"role": "user", "content": "Hello! How are you?"}])
        await trained_agent.shutdown()

        # Load trained agent (the guide's checkpointing snippet)
        loaded_agent = await load_agent_from_checkpoint(
            str(tmp_path / "my_agent"), agent_class=MultiTurnAgent
        )
        loaded = (loaded_agent.model_name, loaded_agent.config.temperature, loaded_agent.system_prompt)
        await loaded_agent.shutdown()
        return agent, trained_agent, response, loaded

    agent, trained, response, loaded = asyncio.run(quick_example())
    assert loaded == (trained.model_name, 0.8, "You are a helpful AI assistant.")
    assert trained is agent and isinstance(response, str)
    assert Path(trained.model_name) == (tmp_path / "my_agent").resolve()
    assert (tmp_path / "my_agent" / "config.json").exists() and (
        tmp_path / "my_agent" / "agent.json"
    ).exists()
    rows = _run_rows(tmp_path / "runs")
    assert len(rows) == 1  # 16 episodes / 16 per batch (balanced)
    # the scenario from the constructor reached training: every episode replied to it
    assert all(r["env_errors"] == 0 and r["turns_mean"] == 2 for r in rows)


class Raises(Callback):
    def on_step_end(self, trainer, row):
        raise ValueError("bug in a user callback")


def test_auto_trainer_trains_a_tool_agent_under_a_monitor(ray_local, tiny_model, tmp_path):
    """The guide's pieces in one run (one trainer start): AutoTrainer with early stopping
    trains a ToolAgent whose calculator takes part in training, watched by a
    DiagnosticsMonitor, beside a user callback that raises."""
    calls = []

    def calculator_tool(expression):
        calls.append(expression)
        return eval(expression)

    tools = [
        {
            "name": "calculator",
            "description": "Perform mathematical calculations",
            "function": calculator_tool,
        }
    ]
    agent = ToolAgent(AgentConfig(model_name=tiny_model, max_new_tokens=16), tools=tools)
    env = ConversationEnvironment(scenarios=[{"id": "m", "user_responses": ["What is 12*13?", "Sure?"]}])
    monitor = DiagnosticsMonitor()
    auto_trainer = AutoTrainer(auto_adjust=True, early_stopping=True, patience=1)
    asyncio.run(
        auto_trainer.train(
            agent=agent,
            environment=env,
            num_episodes=16,
            callbacks=[monitor, Raises()],
            config_overrides={**SMALL, "training.batch_size": 4, "checkpoint.run_dir": str(tmp_path)},
        )
    )
    health = monitor.get_health_status()
    assert health.status in (HealthStatus.HEALTHY, HealthStatus.WARNING, HealthStatus.CRITICAL)
    assert str(health.status) in ("HEALTHY", "WARNING", "CRITICAL")
    rows = _run_rows(tmp_path)
    # patience 1 on a 4-epoch run: early stopping ends it once reward stops improving
    assert 2 <= len(rows) <= 4 and len(monitor.rows if hasattr(monitor, "rows") else rows) == len(rows)
    # a random model's replies are answers to the conversation, never tool calls: tool
    # stats are reported, no parse error is charged to an answer, and every episode ran
    for row in rows:
        assert row["env_successful_tool_calls"] == 0 and row["env_parse_errors"] == 0
        assert row["turns_mean"] == 2 and row["env_errors"] == 0


def test_bad_input_fails_before_any_actor_starts():
    agent = MultiTurnAgent(AgentConfig())
    with pytest.raises(ConfigError, match="unknown training profile 'fast'.*aggressive"):
        asyncio.run(train(agent, None, num_episodes=4, profile="fast"))
    with pytest.raises(ConfigError, match="unknown training profile"):
        AutoTrainer(profile="fast")
    with pytest.raises(ConfigError, match="unknown key 'learnin_rate'"):
        build_config(agent, 4, config_overrides={"learnin_rate": 1e-5})
    config, callbacks = build_config(
        agent,
        100,
        "balanced",
        {"learning_rate": 1e-5, "num_generations": 8, "early_stopping": True, "patience": 30},
    )
    assert config.training.learning_rate == 1e-5 and config.training.group_size == 8
    assert config.training.num_epochs == 7 and callbacks == {"early_stopping": True, "patience": 30}
