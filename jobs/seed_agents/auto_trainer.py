# Automatic training (early stopping, automatic adjustment) and a health monitor, as the
# agent API shows them. Changes from the user's original: the import path (rayrl), the model,
# and fewer episodes (RAYRL_EXAMPLE_EPISODES) so that it runs on a CPU machine.
#   .venv/bin/python jobs/seed_agents/auto_trainer.py
import asyncio
import os

from rayrl.core.agent import AgentConfig, MultiTurnAgent
from rayrl.core.environment import ConversationEnvironment
from rayrl.training.diagnostics import DiagnosticsMonitor
from rayrl.training.train import AutoTrainer, train

MODEL = os.environ.get("RAYRL_EXAMPLE_MODEL", "SmolLM2-135M-Instruct")
EPISODES = int(os.environ.get("RAYRL_EXAMPLE_EPISODES", "64"))


async def main():
    agent = MultiTurnAgent(AgentConfig(model_name=MODEL, max_new_tokens=64))
    environment = ConversationEnvironment(
        scenarios=[{"id": "help", "user_responses": ["Hi! Can you help me?", "Thanks!"]}]
    )

    auto_trainer = AutoTrainer(
        auto_adjust=True,      # Automatically adjust hyperparameters
        early_stopping=True,   # Stop if no improvement
        patience=50           # Steps to wait before stopping
    )

    trained_agent = await auto_trainer.train(
        agent=agent,
        environment=environment,
        num_episodes=EPISODES
    )

    monitor = DiagnosticsMonitor()

    # Monitor training health
    await train(
        agent=agent,
        environment=environment,
        num_episodes=EPISODES,
        callbacks=[monitor]
    )

    # Get health report
    health = monitor.get_health_status()
    print(f"Training health: {health.status}")
    return trained_agent, monitor


if __name__ == "__main__":
    asyncio.run(main())
