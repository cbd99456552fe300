# The agent API's quick start, run as a job: a MultiTurnAgent trained on a scripted
# conversation with the "balanced" profile, then asked a question with the trained weights.
# Changes from the user's original: the import path (rayrl) and the model (the offline default).
#   .venv/bin/python jobs/seed_agents/quick_start.py
import asyncio
import os

from rayrl import (
    MultiTurnAgent, ConversationEnvironment,
    HelpfulnessReward, train
)
from rayrl.core.agent import AgentConfig

MODEL = os.environ.get("RAYRL_EXAMPLE_MODEL", "SmolLM2-135M-Instruct")


async def quick_example():
    # 1. Create an agent
    config = AgentConfig(
        model_name=MODEL,
        system_prompt="You are a helpful AI assistant.",
        temperature=0.8
    )
    agent = MultiTurnAgent(config)
    await agent.initialize()

    # 2. Create environment with scenarios
    scenarios = [{
        "id": "help_conversation",
        "user_responses": [
            "Hi! Can you help me?",
            "I need advice on learning Python.",
            "Thank you for the suggestions!"
        ]
    }]
    environment = ConversationEnvironment(scenarios=scenarios)

    # 3. Train the agent
    trained_agent = await train(
        agent=agent,
        environment=environment,
        num_episodes=int(os.environ.get("RAYRL_EXAMPLE_EPISODES", "100")),
        profile="balanced"
    )

    # 4. Use the trained agent
    response = await trained_agent.generate_response([
        {"role": "user", "content": "Hello! How are you?"}
    ])
    print(f"Agent: {response}")
    return trained_agent, response


if __name__ == "__main__":
    # Run the example
    asyncio.run(quick_example())
