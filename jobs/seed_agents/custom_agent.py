# A custom agent class (extra state and metadata on every turn), as the agent API shows it.
# Changes from the user's original: the import path (rayrl) and the model.
#   .venv/bin/python jobs/seed_agents/custom_agent.py
import asyncio
import os

from rayrl.core.agent import AgentConfig, MultiTurnAgent

MODEL = os.environ.get("RAYRL_EXAMPLE_MODEL", "SmolLM2-135M-Instruct")


class CustomAgent(MultiTurnAgent):
    def __init__(self, model_name):
        config = AgentConfig(
            model_name=model_name,
            system_prompt="Custom system prompt...",
            temperature=0.7
        )
        super().__init__(config)
        self.custom_state = {}

    async def process_turn(self, history, user_input, context=None):
        # Custom logic before generating response
        self.custom_state["turn_count"] = self.custom_state.get("turn_count", 0) + 1

        # Generate response using parent method
        turn = await super().process_turn(history, user_input, context)

        # Add custom metadata
        turn.metadata["custom_state"] = self.custom_state.copy()

        return turn


async def main():
    agent = CustomAgent(MODEL)
    await agent.initialize()
    history = []
    turns = []
    for text in ["Hi!", "What is 2+2?"]:
        turn = await agent.process_turn(history, text)
        history += [{"role": "user", "content": text}, turn]
        turns.append(turn)
        print(f"[{turn.metadata['custom_state']}] Agent: {turn.content}")
    await agent.shutdown()
    return turns


if __name__ == "__main__":
    asyncio.run(main())
