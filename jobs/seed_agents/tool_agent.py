# A tool-using agent with a calculator given as a plain function, as the agent API shows it.
# Changes from the user's original: the import path (rayrl) and the model.
#   .venv/bin/python jobs/seed_agents/tool_agent.py
import asyncio
import os

from rayrl.core.agent import AgentConfig, ToolAgent

MODEL = os.environ.get("RAYRL_EXAMPLE_MODEL", "SmolLM2-135M-Instruct")

config = AgentConfig(
    model_name=MODEL,
    system_prompt="You are a helpful assistant.",
    temperature=0.8,
    max_new_tokens=256,
    memory_window=10  # Remember last 10 turns
)


# Define tools
def calculator_tool(expression):
    try:
        return eval(expression)  # Note: unsafe for production
    except:  # noqa: E722 - kept as the user wrote it
        return "Error in calculation"


tools = [{
    "name": "calculator",
    "description": "Perform mathematical calculations",
    "function": calculator_tool
}]


async def main():
    # Create tool agent
    tool_agent = ToolAgent(config, tools=tools)
    await tool_agent.initialize()
    turn = await tool_agent.process_turn([], "What is 1234 * 5678? Use the calculator.")
    print(f"Agent: {turn.content}")
    print(f"Tool calls: {turn.metadata.get('tool_calls')}")
    await tool_agent.shutdown()
    return turn


if __name__ == "__main__":
    asyncio.run(main())
