"""The agent layer without a model: config, tools from functions, memory window, pickling, agent.json."""

import asyncio
import copy
import json
import pickle
import subprocess
import sys
import threading
import time
from typing import Literal, Optional

import pytest

from rayrl.agent.conversation import ConversationTurn
from rayrl.agent.multi_turn import MultiTurnManager
from rayrl.agent.parsers import FunctionCallingParser, JSONActionParser, ReActActionParser
from rayrl.agent.tools import CalculatorTool
from rayrl.agents import (
    AGENT_FILE,
    AgentConfig,
    MultiTurnAgent,
    ToolAgent,
    apply_memory_window,
    load_agent_from_checkpoint,
    read_agent_config,
    save_agent_config,
    tool_from_function,
)
from rayrl.config import DEFAULT_MODEL, ConfigError


def calculator_tool(expression):
    # The user guide's calculator, as written there (untyped, returns eval's int).
    try:
        return eval(expression)  # the guide's own example
    except:  # noqa: E722
        return "Error in calculation"


GUIDE_TOOLS = [
    {"name": "calculator", "description": "Perform mathematical calculations", "function": calculator_tool}
]


def search(query: str, limit: int = 5, mode: Literal["fast", "deep"] = "fast", *args, **kwargs) -> str:
    """Search the notes.

    Longer explanation that is not part of the summary.

    Args:
        query: what to look for,
            possibly over two lines.
        limit (int): most results.

    Returns:
        The hits.
    """
    return f"{query}:{limit}:{mode}"


def make_agent(**overrides) -> MultiTurnAgent:
    return MultiTurnAgent(AgentConfig(**overrides))


def make_tool_agent(tools=GUIDE_TOOLS, **kwargs) -> ToolAgent:
    return ToolAgent(AgentConfig(system_prompt="You can calculate."), tools=tools, **kwargs)


def model_folder(path, agent_config=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    if agent_config is not None:
        save_agent_config(agent_config, path)
    return path


# ---- AgentConfig ------------------------------------------------------------------
def test_config_defaults_and_guide_fields():
    c = AgentConfig(
        system_prompt="You are a helpful assistant.", temperature=0.8, max_new_tokens=256, memory_window=10
    )
    assert c.model_name == DEFAULT_MODEL == "SmolLM2-135M-Instruct"
    assert (c.temperature, c.max_new_tokens, c.memory_window, c.top_p) == (0.8, 256, 10, 1.0)
    assert AgentConfig().memory_window is None


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"temprature": 0.5}, "temprature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"memory_window": 0}, "memory_window"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"AgentConfig: {key}"):
        AgentConfig(**overrides)


def test_config_assignment_is_validated():
    c = AgentConfig()
    c.memory_window = 4
    with pytest.raises(ConfigError, match="max_new_tokens"):
        c.max_new_tokens = -1
    assert c.max_new_tokens == 256


def test_agents_keep_their_own_copy_of_the_config():
    shared = AgentConfig(system_prompt="x")
    a, b = MultiTurnAgent(shared), MultiTurnAgent(shared)
    a.config.model_name = "elsewhere"
    assert b.model_name == shared.model_name == DEFAULT_MODEL
    with pytest.raises(TypeError, match="AgentConfig"):
        MultiTurnAgent({"model_name": "x"})


# ---- agent.json -------------------------------------------------------------------
def test_agent_json_round_trip_leaves_out_the_model(tmp_path):
    config = AgentConfig(model_name="/somewhere", system_prompt="Be brief.", temperature=0.3, memory_window=6)
    written = save_agent_config(config, tmp_path / "ckpt")
    data = json.loads(written.read_text())
    assert written.name == AGENT_FILE and "model_name" not in data
    assert read_agent_config(tmp_path / "ckpt") == data
    assert AgentConfig(**data).system_prompt == "Be brief."
    assert read_agent_config(tmp_path) == {}  # no agent.json: nothing to restore


@pytest.mark.parametrize(
    "content, match",
    [
        ({"temprature": 1.0}, "unknown key 'temprature'"),
        ({"model_name": "x"}, "model_name must not be set"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_agent_json_is_named(tmp_path, content, match):
    (tmp_path / AGENT_FILE).write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=match):
        read_agent_config(tmp_path)


def test_load_from_checkpoint_restores_settings_and_overrides(tmp_path):
    folder = model_folder(tmp_path / "my_agent", AgentConfig(system_prompt="Saved.", temperature=0.2))
    agent = asyncio.run(load_agent_from_checkpoint(folder, initialize=False, temperature=0.9))
    assert isinstance(agent, MultiTurnAgent) and not agent.is_initialized
    assert agent.model_name == str(folder.resolve())
    assert (agent.config.system_prompt, agent.config.temperature) == ("Saved.", 0.9)
    tool_agent = asyncio.run(
        load_agent_from_checkpoint(folder, ToolAgent, agent_kwargs={"tools": GUIDE_TOOLS}, initialize=False)
    )
    assert tool_agent.tool_registry.names() == ["calculator"]


def test_load_from_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        asyncio.run(load_agent_from_checkpoint(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*config.json"):
        asyncio.run(load_agent_from_checkpoint(tmp_path / "empty"))
    folder = model_folder(tmp_path / "ok")
    with pytest.raises(TypeError, match="model_name"):
        asyncio.run(load_agent_from_checkpoint(folder, model_name="other", initialize=False))
    with pytest.raises(TypeError, match="subclass of Agent"):
        asyncio.run(load_agent_from_checkpoint(folder, dict, initialize=False))
    with pytest.raises(ConfigError, match="temprature"):
        asyncio.run(load_agent_from_checkpoint(folder, temprature=1.0, initialize=False))


# ---- messages and memory window ---------------------------------------------------
def msgs(*roles):
    return [{"role": r, "content": f"{r}{i}"} for i, r in enumerate(roles)]


def test_memory_window_keeps_system_prompt_and_last_messages():
    history = msgs("system", "user", "assistant", "user", "assistant", "user")
    assert apply_memory_window(history, None) == history
    assert apply_memory_window(history, 2) == [history[0], *history[-2:]]
    assert apply_memory_window(history, 100) == history
    assert apply_memory_window(history[1:], 1) == history[-1:]  # no system message to keep
    with pytest.raises(ValueError, match="memory window"):
        apply_memory_window(history, 0)


def test_prepare_messages_adds_the_system_prompt_and_applies_the_window():
    agent = make_agent(system_prompt="Sys.", memory_window=2)
    turns = [
        ConversationTurn("user", "a"),
        ConversationTurn("assistant", "b"),
        {"role": "user", "content": "c"},
    ]
    prepared = agent.prepare_messages(turns)
    assert prepared == [
        {"role": "system", "content": "Sys."},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    own = agent.prepare_messages([{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}])
    assert own[0]["content"] == "Mine."  # a conversation's own system message wins
    assert make_agent(system_prompt=None).prepare_messages(msgs("user"))[0]["role"] == "user"


def test_bad_messages_are_refused_clearly():
    agent = make_agent()
    with pytest.raises(ValueError, match="nothing to answer"):
        agent.prepare_messages([])
    with pytest.raises(TypeError, match="list of chat dicts"):
        agent.prepare_messages("hello")
    with pytest.raises(TypeError, match=r"messages\[1\]"):
        agent.prepare_messages([{"role": "user", "content": "x"}, 42])
    with pytest.raises(TypeError, match="user_input"):
        agent.build_messages([], 42)
    assert agent.build_messages(msgs("user"), None) == msgs("user")


# ---- pickling and pointing at trained weights ----------------------------------------------
class CustomAgent(MultiTurnAgent):
    # The user guide's subclass pattern: its own constructor and state.
    def __init__(self, model_name):
        super().__init__(AgentConfig(model_name=model_name, system_prompt="Custom", temperature=0.7))
        self.custom_state = {"turn_count": 3}


def test_agents_pickle_and_copy_without_their_engine():
    agent = CustomAgent(DEFAULT_MODEL)
    agent._engine = threading.Lock()  # stands in for an engine: it cannot be pickled either
    agent._owns_engine = True
    for clone in (pickle.loads(pickle.dumps(agent)), copy.deepcopy(agent)):
        assert clone.engine is None and not clone.is_initialized
        assert clone.custom_state == {"turn_count": 3} and clone.config == agent.config
        with clone._engine_lock:  # a fresh lock of its own
            pass
    assert agent.engine is not None  # the original keeps its engine
    agent._engine = None


def test_tool_agent_pickles_with_its_tools():
    clone = pickle.loads(pickle.dumps(make_tool_agent()))
    assert clone.tool_registry.execute_tool("calculator", expression="6*7") == (True, "42")
    assert clone.parser.registry is clone.tool_registry


def test_load_weights_from_repoints_the_same_agent(tmp_path):
    agent = make_agent(system_prompt="Keep me.")
    trained = model_folder(tmp_path / "trained")
    agent.load_weights_from(trained)
    assert agent.model_name == str(trained.resolve()) and agent.config.system_prompt == "Keep me."
    with pytest.raises(FileNotFoundError, match="missing"):
        agent.load_weights_from(tmp_path / "missing")
    other = model_folder(tmp_path / "other")
    clone = agent.with_model(other)
    assert clone.model_name == str(other.resolve()) and agent.model_name == str(trained.resolve())


def test_shared_engines_belong_to_their_owner(tmp_path):
    class FakeEngine:  # only what use_engine and is_initialized read; no shutdown() to call
        def __init__(self, path):
            self.model_path = str(path)
            self.llm = object()

    agent = MultiTurnAgent(AgentConfig(model_name=str(model_folder(tmp_path / "b"))))
    with pytest.raises(ValueError, match="serves"):
        agent.use_engine(FakeEngine(model_folder(tmp_path / "a")))
    engine = FakeEngine(tmp_path / "b")
    agent.use_engine(engine)
    assert agent.is_initialized and agent.engine is engine
    engine.llm = None  # its owner shut it down: this agent would start its own
    assert not agent.is_initialized
    asyncio.run(agent.shutdown())  # detaches without shutting the engine down
    assert agent.engine is None


def test_importing_agents_loads_no_heavy_packages():
    code = (
        "import sys, rayrl.agents; "
        "print([m for m in ('torch', 'vllm', 'ray', 'transformers', 'rayrl.trainer') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- tools from functions -----------------------------------------------------------
def test_guide_calculator_dict_becomes_a_string_tool():
    agent = make_tool_agent()
    schema = agent.tool_registry.openai_tools()[0]["function"]
    assert schema["name"] == "calculator" and schema["description"] == "Perform mathematical calculations"
    assert schema["parameters"]["properties"]["expression"]["type"] == "string"
    assert schema["parameters"]["required"] == ["expression"]
    # eval returns an int; the model is shown text
    assert agent.tool_registry.execute_tool("calculator", expression="2+3") == (True, "5")


def test_schema_from_type_hints_defaults_and_docstring():
    tool = tool_from_function(search)
    definition = tool.definition
    assert definition.name == "search" and definition.description == "Search the notes."
    params = {p.name: p for p in definition.parameters}
    assert list(params) == ["query", "limit", "mode"]  # *args / **kwargs are not shown
    assert (params["query"].type, params["query"].required) == ("string", True)
    assert params["query"].description == "what to look for, possibly over two lines."
    assert (params["limit"].type, params["limit"].required, params["limit"].default) == ("integer", False, 5)
    assert params["limit"].description == "most results."
    assert (params["mode"].enum, params["mode"].default, params["mode"].description) == (
        ["fast", "deep"],
        "fast",
        "mode",
    )
    assert tool.execute(query="x") == "x:5:fast"


def test_more_type_hints():
    # typing.Optional on purpose: user code still writes it
    def f(a: float, b: bool, c: list[int], d: dict, e: Optional[int] = None, g=2.5, h: int | float = 1, /):  # noqa: UP045
        """Doc."""

    params = {p.name: p for p in tool_from_function(f).definition.parameters}
    kinds = {name: p.type for name, p in params.items()}
    assert kinds == {
        "a": "number",
        "b": "boolean",
        "c": "array",
        "d": "object",
        "e": "integer",
        "g": "number",
        "h": "number",
    }
    assert not params["e"].required and params["e"].default is None


def test_positional_only_async_and_structured_results():
    def pos(x: int, /, y: int = 1) -> int:
        """Add."""
        return x + y

    async def later(n: int) -> dict:
        """Wait, then answer."""
        await asyncio.sleep(0)
        return {"n": n, "items": [1, 2]}

    def nothing(n: int):
        """Return nothing."""

    agent = make_tool_agent(tools=[pos, later, {"name": "nothing", "function": nothing}])
    run = agent.tool_registry.execute_tool
    assert run("pos", x=2, y=3) == (True, "5")
    assert run("later", n=4) == (True, '{"n": 4, "items": [1, 2]}')
    assert run("nothing", n=1) == (True, "(no result)")


@pytest.mark.parametrize(
    "spec, error, match",
    [
        (
            {"name": "calc", "description": "d"},
            ValueError,
            r"tools\[0\] \('calc'\): key 'function' is missing",
        ),
        ({"name": "calc", "function": 42}, TypeError, r"'calc'.*'function' must be callable"),
        ({"description": "d", "function": calculator_tool}, ValueError, r"tools\[0\]: key 'name'"),
        ({"name": "calc", "function": calculator_tool, "fn": 1}, ValueError, "unknown key 'fn'"),
        ({"name": "bad name!", "function": calculator_tool, "description": "d"}, ValueError, "bad name!"),
        ({"name": "calc", "function": lambda x: x}, ValueError, "'calc'.*'description'"),
        ("calculator", TypeError, r"tools\[0\] must be a Tool"),
    ],
)
def test_bad_tool_specs_name_the_tool_and_key(spec, error, match):
    with pytest.raises(error, match=match):
        ToolAgent(AgentConfig(), tools=[spec])


def test_duplicate_and_unsupported_tools():
    with pytest.raises(ValueError, match=r"duplicate tool name 'calculator' \(tools\[0\] and tools\[1\]\)"):
        ToolAgent(AgentConfig(), tools=[GUIDE_TOOLS[0], CalculatorTool()])

    def odd(when: complex):
        """Doc."""

    with pytest.raises(TypeError, match="tool 'odd', parameter 'when'"):
        tool_from_function(odd)
    with pytest.raises(TypeError, match="tools must be a list"):
        ToolAgent(AgentConfig(), tools=GUIDE_TOOLS[0])


def test_raising_and_hanging_functions_fail_the_call_only():
    def broken(x: int) -> int:
        """Always fails."""
        raise RuntimeError("boom")

    release = threading.Event()

    def stuck(x: int) -> int:
        """Never answers in time."""
        release.wait(5)
        return x

    agent = make_tool_agent(tools=[broken, {"name": "stuck", "function": stuck, "timeout_s": 0.2}])
    ok, message = agent.tool_registry.execute_tool("broken", x=1)
    assert not ok and "RuntimeError: boom" in message
    start = time.perf_counter()
    ok, message = agent.tool_registry.execute_tool("stuck", x=1)
    assert not ok and "timed out" in message and time.perf_counter() - start < 3
    step = asyncio.run(agent.handle_reply('{"tool": "broken", "arguments": {"x": 1}}'))
    assert step.call["success"] is False and "boom" in step.observation and not step.is_answer
    release.set()


# ---- ToolAgent without a model ---------------------------------------------------------
def test_handle_reply_runs_the_calculator():
    agent = make_tool_agent()
    step = asyncio.run(
        agent.handle_reply('Let me compute. {"tool": "calculator", "arguments": {"expression": "2+3"}}')
    )
    assert step.call == {
        "name": "calculator",
        "arguments": {"expression": "2+3"},
        "success": True,
        "result": "5",
    }
    assert step.observation == "Result of calculator: 5" and step.parse_error is None


def test_handle_reply_tells_answers_from_bad_calls():
    agent = make_tool_agent()
    answer = asyncio.run(agent.handle_reply("The answer is 5."))
    assert answer.is_answer and answer.call is None and answer.parse_error.startswith("No tool call found")
    bad = asyncio.run(agent.handle_reply('{"tool": "calculater", "arguments": {"expression": "1"}}'))
    assert not bad.is_answer and "unknown tool" in bad.observation


def test_parsers_and_system_prompt():
    assert isinstance(make_tool_agent().parser, JSONActionParser)
    assert isinstance(make_tool_agent(parser="react").parser, ReActActionParser)
    agent = make_tool_agent(parser="function_calling")
    assert isinstance(agent.parser, FunctionCallingParser)
    assert agent.system_prompt.startswith("You can calculate.")
    assert agent.parser.format_instructions() in agent.system_prompt
    assert agent.prepare_messages(msgs("user"))[0]["content"] == agent.system_prompt
    with pytest.raises(ValueError, match="parser='xml' is unknown"):
        make_tool_agent(parser="xml")
    with pytest.raises(ValueError, match="max_tool_rounds"):
        make_tool_agent(max_tool_rounds=0)


def test_tool_manager_shares_the_agents_tools():
    agent = make_tool_agent()
    manager = agent.tool_manager(max_turns=2)
    assert isinstance(manager, MultiTurnManager) and manager.max_turns == 2
    assert manager.tool_registry is agent.tool_registry and manager.action_parser is agent.parser
    manager.reset()
    turn = manager.step('{"tool": "calculator", "arguments": {"expression": "7*6"}}')
    assert turn.tool_call.success and turn.feedback == "42"
