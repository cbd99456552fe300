# A goal-directed task with a callable success criterion, as the agent API shows it,
# played by an agent for one episode and then trained on for a few steps.
# Changes from the user's original: the import path (rayrl) and the model.
#   .venv/bin/python jobs/seed_agents/task_environment.py
import asyncio
import os

from rayrl.core.agent import AgentConfig, MultiTurnAgent
from rayrl.core.environment import TaskEnvironment
from rayrl.training.train import train

MODEL = os.environ.get("RAYRL_EXAMPLE_MODEL", "SmolLM2-135M-Instruct")

tasks = [{
    "description": "Help user plan a vacation",
    "goal": "Create a complete vacation plan",
    "required_actions": [
        {"name": "destination", "keywords": ["where", "destination", "place"]},
        {"name": "budget", "keywords": ["cost", "budget", "price"]},
        {"name": "activities", "keywords": ["do", "activities", "attractions"]},
        {"name": "schedule", "keywords": ["when", "dates", "time"]}
    ]
}]


def success_criteria(turns, context):
    completed = len(context.get("completed_actions", []))
    required = len(context.get("required_actions", []))
    return completed >= required


env = TaskEnvironment(
    tasks=tasks,
    success_criteria=success_criteria,
    max_turns=15
)


async def main():
    agent = MultiTurnAgent(AgentConfig(model_name=MODEL, system_prompt="You plan trips.", max_new_tokens=96))
    trained = await train(
        agent, env, num_episodes=int(os.environ.get("RAYRL_EXAMPLE_EPISODES", "32")),
        config_overrides={"environment.max_turns": 3},
    )
    print("trained policy:", trained.model_name)
    return trained


if __name__ == "__main__":
    asyncio.run(main())
