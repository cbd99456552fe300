"""Action parsers on good replies, bad replies, hostile replies and random ones."""

import json
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rayrl.agent.parsers import (
    ActionParser,
    FunctionCallingParser,
    JSONActionParser,
    ParseResult,
    ReActActionParser,
    ToolCall,
    describe_tools,
)
from rayrl.agent.tools import CalculatorTool, Tool, ToolDefinition, ToolParameter, ToolRegistry

FAST = settings(max_examples=200, deadline=None)
PARSERS = [JSONActionParser, ReActActionParser, FunctionCallingParser]


class RecordingTool(Tool):
    def __init__(self, name, *parameters):
        super().__init__(
            ToolDefinition(name=name, description=f"The {name} tool", parameters=list(parameters))
        )

    def execute(self, **kwargs):
        return json.dumps(kwargs)


def param(name, type="string", **kwargs) -> ToolParameter:
    return ToolParameter(name=name, type=type, description=f"the {name}", **kwargs)


def make_registry() -> ToolRegistry:
    return ToolRegistry(
        [
            RecordingTool("attack", param("enemy"), param("times", "integer", required=False, default=1)),
            RecordingTool("heal"),
            RecordingTool(
                "move",
                param("direction", enum=["north", "south", "east", "west"]),
                param("steps", "integer", required=False),
            ),
            RecordingTool("lookup", param("name")),
            RecordingTool("wait", param("seconds", "number")),
            RecordingTool("give", param("item"), param("to")),
            RecordingTool(
                "configure",
                param("flags", "array"),
                param("options", "object", required=False),
                param("verbose", "boolean", required=False),
                param("ratio", "number", required=False),
            ),
            CalculatorTool(),
        ]
    )


REGISTRY = make_registry()  # tools here are stateless, so one registry serves every test
TOOL_NAMES = "attack, heal, move, lookup, wait, give, configure, calculator"


def parse(parser_cls, text, **kwargs) -> ParseResult:
    return parser_cls(REGISTRY, **kwargs).parse(text)


def assert_call(result: ParseResult, name: str, arguments: dict) -> None:
    assert result.ok, result.error
    assert result.error is None
    assert (result.tool_call.name, result.tool_call.arguments) == (name, arguments)


def assert_error(result: ParseResult, fragment: str) -> None:
    assert not result.ok and result.tool_call is None
    assert fragment in result.error


def test_parse_result_ok():
    call = ToolCall(name="heal", arguments={}, raw="")
    assert ParseResult(tool_call=call).ok
    assert not ParseResult(error="no").ok
    assert not ParseResult(tool_call=call, error="no").ok
    assert not ParseResult().ok


# ---- JSON ----------------------------------------------------------------------------


def test_json_bare_object():
    text = '{"tool": "attack", "arguments": {"enemy": "slime"}}'
    result = parse(JSONActionParser, text)
    assert result.tool_call == ToolCall(name="attack", arguments={"enemy": "slime", "times": 1}, raw=text)


def test_json_after_prose_in_a_fence():
    call = '{"tool": "attack", "arguments": {"enemy": "slime", "times": 2}}'
    result = parse(JSONActionParser, f"The slime is weak, so:\n```json\n{call}\n```\nThat should work.")
    assert_call(result, "attack", {"enemy": "slime", "times": 2})
    assert result.tool_call.raw == call


@pytest.mark.parametrize(
    "obj",
    [
        {"tool": "attack", "arguments": {"enemy": "slime"}},
        {"name": "attack", "args": {"enemy": "slime"}},
        {"action": "attack", "parameters": {"enemy": "slime"}},
        {"action": "attack", "action_input": {"enemy": "slime"}},
        {"action": "attack", "action_input": "slime"},
        {"name": "attack", "arguments": '{"enemy": "slime"}'},
        {"type": "function", "function": {"name": "attack", "arguments": '{"enemy": "slime"}'}},
        {"thought": "go", "tool": "attack", "arguments": {"enemy": "slime"}},
    ],
)
def test_json_key_variants(obj):
    assert_call(parse(JSONActionParser, json.dumps(obj)), "attack", {"enemy": "slime", "times": 1})


def test_json_tool_without_arguments_and_plain_text_arguments():
    assert_call(parse(JSONActionParser, '{"tool": "heal"}'), "heal", {})
    assert_call(parse(JSONActionParser, '{"tool": "heal", "arguments": "none"}'), "heal", {})
    assert_call(
        parse(JSONActionParser, '{"tool": "calculator", "arguments": "2 * (3 + 4)"}'),
        "calculator",
        {"expression": "2 * (3 + 4)"},
    )


def test_json_braces_and_quotes_inside_strings():
    name = 'a}b{c"} \\ {"tool": "heal"}'
    result = parse(JSONActionParser, "x " + json.dumps({"tool": "lookup", "arguments": {"name": name}}))
    assert_call(result, "lookup", {"name": name})


def test_json_skips_objects_that_are_not_calls_and_finds_wrapped_ones():
    text = 'Plan: {"thought": "heal first", "confidence": 0.9}. Then {"tool": "heal"}'
    assert_call(parse(JSONActionParser, text), "heal", {})
    assert_call(parse(JSONActionParser, '{"response": {"tool": "heal"}}'), "heal", {})


def test_json_first_valid_call_wins():
    text = '{"tool": "fly"} then {"tool": "attack", "arguments": {"enemy": "bat"}} or {"tool": "heal"}'
    assert_call(parse(JSONActionParser, text), "attack", {"enemy": "bat", "times": 1})


def test_json_arguments_of_a_call_are_not_calls():
    # {"name": "heal", "x": 1} is the call's arguments; it must not be read as a call of "heal".
    result = parse(JSONActionParser, '{"tool": "lookup", "arguments": {"name": "heal", "x": 1}}')
    assert_error(result, "tool 'lookup' has no argument 'x'; its arguments are name")
    assert_call(
        parse(JSONActionParser, '{"tool": "lookup", "arguments": {"name": "heal"}}'),
        "lookup",
        {"name": "heal"},
    )


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("I attack the slime.", 'No tool call found. Reply with a JSON object such as {"tool": '),
        ('{"tool": "attack", "arguments": {"enemy": "slime"', "No tool call found."),
        ("{'tool': 'heal'}", "No tool call found."),
        (
            '{"tool": "fly"} {"tool": "attack", "arguments": {}}',
            f"unknown tool 'fly'; available tools: {TOOL_NAMES}",
        ),
        (
            '{"tool": "attack", "arguments": {"enemy": 5}}',
            "argument 'enemy' of tool 'attack' must be a string, got integer 5",
        ),
        (
            '{"tool": "attack", "arguments": ["slime"]}',
            "the arguments of tool 'attack' must be a JSON object, got array",
        ),
        (
            '{"tool": "attack", "arguments": "{\\"enemy\\": "}',
            "the arguments of tool 'attack' are not valid JSON",
        ),
        (
            '{"tool": "give", "arguments": "sword"}',
            'takes the arguments item, to; give them as a JSON object such as {"item": ...}',
        ),
        (
            '{"tool": "move", "arguments": {"direction": "up"}}',
            "must be one of 'north', 'south', 'east', 'west', got 'up'",
        ),
        ('{"tool": "wait", "arguments": {"seconds": NaN}}', "must be a finite number"),
        ('{"tool": "wait", "arguments": {"seconds": 1e999}}', "must be a finite number"),
        ('{"tool": "  ", "arguments": {}}', "The tool name is missing or empty."),
    ],
)
def test_json_errors_are_for_the_model(text, fragment):
    assert_error(parse(JSONActionParser, text), fragment)


def test_json_reads_only_max_chars():
    call = '{"tool": "heal"}'
    assert parse(JSONActionParser, "x" * 19_000 + call).ok
    assert not parse(JSONActionParser, "x" * 20_000 + call).ok
    assert not parse(JSONActionParser, "x" * 10 + call, max_chars=12).ok
    with pytest.raises(ValueError, match="max_chars"):
        JSONActionParser(REGISTRY, max_chars=0)
    with pytest.raises(TypeError, match="ToolRegistry"):
        JSONActionParser([CalculatorTool()])


# ---- ReAct ---------------------------------------------------------------------------


def test_react_standard_reply():
    text = 'Thought: the slime is weak.\nAction: attack\nAction Input: {"enemy": "slime"}\nObservation: ...'
    result = parse(ReActActionParser, text)
    assert_call(result, "attack", {"enemy": "slime", "times": 1})
    assert result.tool_call.raw == 'Action: attack\nAction Input: {"enemy": "slime"}'


@pytest.mark.parametrize(
    "text, name, arguments",
    [
        ("thought: hurt\nACTION: heal\naction input: {}", "heal", {}),
        ("Thought: hurt\nAction: heal", "heal", {}),
        ("Thought: hurt\nAction: heal\nAction Input: none", "heal", {}),
        ("Action: `heal`", "heal", {}),
        ("Action: calculator\nAction Input: (3 + 4) * 2", "calculator", {"expression": "(3 + 4) * 2"}),
        (
            "Action: calculator\nAction Input: 2 + 2\nObservation: 4\nThought: done",
            "calculator",
            {"expression": "2 + 2"},
        ),
        ('Action: attack\nAction Input: "slime"', "attack", {"enemy": "slime", "times": 1}),
        ("Action: attack\nAction Input: slime\n", "attack", {"enemy": "slime", "times": 1}),
        ("Action: wait\nAction Input: 2.5", "wait", {"seconds": 2.5}),
        ("Action: move\nAction_Input: south", "move", {"direction": "south"}),
        (
            'Action: attack\nAction Input:\n```json\n{"enemy": "slime"}\n```',
            "attack",
            {"enemy": "slime", "times": 1},
        ),
        (
            'Action: attack\nAction Input: {\n  "enemy": "bat",\n  "times": 3\n}',
            "attack",
            {"enemy": "bat", "times": 3},
        ),
        (
            'Action: lookup\nAction Input: {"name": "Action: heal\\nAction: fly"}',
            "lookup",
            {"name": "Action: heal\nAction: fly"},
        ),
        (
            "Action: heal\nAction Input: {}\nObservation: healed\nThought: now hit\n"
            'Action: attack\nAction Input: {"enemy": "bat"}',
            "attack",
            {"enemy": "bat", "times": 1},
        ),
    ],
)
def test_react_variants(text, name, arguments):
    assert_call(parse(ReActActionParser, text), name, arguments)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (
            "I would attack the slime.",
            "No tool call found. Reply with the lines 'Thought: <reasoning>', 'Action:",
        ),
        ("Thought: hmm\nAction:\nAction Input: {}", "The Action line names no tool."),
        ("Action: fly\nAction Input: {}", f"unknown tool 'fly'; available tools: {TOOL_NAMES}"),
        ("Action: attack", "tool 'attack' needs the argument 'enemy'"),
        ("Action: give\nAction Input: sword to bob", "tool 'give' takes the arguments item, to"),
        ("Action: attack\nAction Input: {enemy: slime}", "Action Input is not a valid JSON object"),
        (
            "Action: wait\nAction Input: soon",
            "argument 'seconds' of tool 'wait' must be a number, got string 'soon'",
        ),
        ('Action: attack\nAction Input: {"enemy": "a"}\nAction: fly', "unknown tool 'fly'"),
    ],
)
def test_react_errors_are_for_the_model(text, fragment):
    assert_error(parse(ReActActionParser, text), fragment)


# ---- function calling (Hermes / Qwen) --------------------------------------------------


def test_function_calling_standard_block():
    block = '<tool_call>\n{"name": "attack", "arguments": {"enemy": "slime"}}\n</tool_call>'
    result = parse(FunctionCallingParser, f"<think>The slime is weak.</think>\n{block}\nwaiting")
    assert_call(result, "attack", {"enemy": "slime", "times": 1})
    assert result.tool_call.raw == block


@pytest.mark.parametrize(
    "text, name, arguments",
    [
        (
            '<tool_call>{"name": "attack", "arguments": "{\\"enemy\\": \\"bat\\"}"}</tool_call>',
            "attack",
            {"enemy": "bat", "times": 1},
        ),
        ('<tool_call>\n{"name": "heal", "arguments": {}}', "heal", {}),
        ('<tool_call>{"name": "heal"}</tool_call>', "heal", {}),
        (
            '<tool_call>{"name": "lookup", "arguments": {"name": "</tool_call>"}}</tool_call>',
            "lookup",
            {"name": "</tool_call>"},
        ),
        ('<tool_call>\n```json\n{"name": "heal", "arguments": {}}\n```\n</tool_call>', "heal", {}),
        ('<tool_call>{"name": "fly"}</tool_call><tool_call>{"name": "heal"}</tool_call>', "heal", {}),
        (
            '<tool_call>{"name": "heal"}</tool_call><tool_call>{"name": "move", "arguments": {"direction": "east"}}</tool_call>',
            "heal",
            {},
        ),
        ('<tool_call>{"name": "heal", "arguments": {"x": 1}}<tool_call>{"name": "heal"}', "heal", {}),
    ],
)
def test_function_calling_variants(text, name, arguments):
    assert_call(parse(FunctionCallingParser, text), name, arguments)


def test_function_calling_raw_of_a_truncated_block():
    result = parse(FunctionCallingParser, 'ok <tool_call>\n{"name": "heal", "arguments": {}}')
    assert result.tool_call.raw == '<tool_call>\n{"name": "heal", "arguments": {}}'


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"name": "heal"}', 'No tool call found. Reply with <tool_call>{"name": "<tool name>"'),
        ("<tool_call>heal</tool_call>", "The <tool_call> block holds no JSON object."),
        ('<tool_call>{"name": "heal", </tool_call>', "The <tool_call> block is not valid JSON"),
        ('<tool_call>{"name": "attack", "argum', "The <tool_call> block is not valid JSON"),
        ('<tool_call>{"arguments": {}}</tool_call>', 'The <tool_call> object has no "name".'),
        ('<tool_call>{"name": "fly"}</tool_call>', f"unknown tool 'fly'; available tools: {TOOL_NAMES}"),
        (
            '<tool_call>{"name": "attack", "arguments": "slime"}</tool_call>',
            "the arguments of tool 'attack' must be a JSON object",
        ),
        (
            '<tool_call>{"name": "attack", "arguments": {}}</tool_call>',
            "tool 'attack' needs the argument 'enemy'",
        ),
    ],
)
def test_function_calling_errors_are_for_the_model(text, fragment):
    assert_error(parse(FunctionCallingParser, text), fragment)


# ---- instructions --------------------------------------------------------------------


@pytest.mark.parametrize("parser_cls", PARSERS)
def test_instructions_list_every_tool_and_argument(parser_cls):
    instructions = parser_cls(REGISTRY).format_instructions()
    for definition in REGISTRY.list_definitions():
        assert definition.name in instructions
        for p in definition.parameters:
            assert p.name in instructions


def test_function_calling_instructions_embed_the_schemas():
    instructions = FunctionCallingParser(REGISTRY).format_instructions()
    inside = instructions.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert [json.loads(line) for line in inside.splitlines()] == REGISTRY.openai_tools()


def test_describe_tools():
    text = describe_tools(REGISTRY)
    assert "- heal: The heal tool\n    (no arguments)" in text
    assert "    times (integer; optional; default 1): the times" in text
    assert '    direction (string; required; one of "north", "south", "east", "west"): the direction' in text
    assert describe_tools(ToolRegistry()) == "(no tools are available)"


# ---- never raise -----------------------------------------------------------------------


@pytest.mark.parametrize("parser_cls", PARSERS)
@pytest.mark.parametrize("value", [None, b"Action: heal", 5, ["<tool_call>"]])
def test_non_text_is_an_error_not_an_exception(parser_cls, value):
    assert_error(parser_cls(REGISTRY).parse(value), "expected text")


def test_a_failing_parser_still_returns_a_result():
    class Broken(JSONActionParser):
        def _parse(self, text):
            raise RuntimeError("bug")

    assert_error(Broken(REGISTRY).parse("{}"), "could not read a tool call (RuntimeError)")
    assert issubclass(Broken, ActionParser)


HOSTILE = [
    "{" * 50_000,
    "}" * 50_000,
    '{"a":' * 10_000,
    '{"a":[' * 10_000,
    '{"a":' * 900 + "1" + "}" * 900,
    '{"tool": "attack", "arguments": ' * 3_000,
    "[" * 50_000,
    '"' * 50_000,
    "\\" * 50_000,
    "9" * 50_000,
    '{"tool": "wait", "arguments": {"seconds": ' + "9" * 10_000 + "}}",
    '{"tool": "attack", "arguments": {"enemy": "' + "x" * 50_000,
    "<tool_call>" * 5_000,
    "<tool_call>{" * 5_000,
    "</tool_call>" * 5_000,
    "Action:" * 10_000,
    "Action: heal\nAction Input: {" * 3_000,
    "Action: x Action Input: " * 3_000,
    "action input:" * 5_000,
    " " * 50_000,
    "\n" * 50_000,
    "\n \t" * 20_000,
    "```" * 20_000,
    "\ud800\u202e\U0001f642\x00" * 10_000,
]


@pytest.mark.parametrize("parser_cls", PARSERS)
@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_replies_are_parsed_quickly(parser_cls, text):
    start = time.perf_counter()
    result = parser_cls(REGISTRY).parse(text)
    elapsed = time.perf_counter() - start
    check_result(result)
    assert elapsed < 1.0


def check_result(result: ParseResult) -> None:
    """What every parse must give: a valid call or an error, never both, never neither."""
    assert isinstance(result, ParseResult)
    if result.ok:
        call = result.tool_call
        assert call.name in REGISTRY and isinstance(call.raw, str)
        assert REGISTRY.get(call.name).definition.validate_arguments(call.arguments) == call.arguments
    else:
        assert result.tool_call is None
        assert isinstance(result.error, str) and result.error


@pytest.mark.parametrize("parser_cls", PARSERS)
@FAST
@given(text=st.text())
def test_arbitrary_text_never_raises(parser_cls, text):
    check_result(parser_cls(REGISTRY).parse(text))


FRAGMENTS = [
    "{",
    "}",
    "[",
    "]",
    '"',
    "\\",
    ":",
    ",",
    "\n",
    " ",
    "```json",
    "```",
    '{"tool": "attack", "arguments": ',
    '{"name": "heal"',
    '"arguments": {',
    '"enemy": "slime"',
    "}}",
    '{"tool": "heal"}',
    '"function": {',
    "<tool_call>",
    "</tool_call>",
    "Thought:",
    "Action:",
    "ACTION INPUT:",
    "Action Input:",
    "Observation:",
    "attack",
    "heal",
    "calculator",
    "lookup",
    "wait",
    "null",
    "true",
    "NaN",
    "Infinity",
    "-1e999",
    "1e400",
    "9" * 5000,
    "1" * 400,
    "\x00",
    "\ud800",
    "é",
    "\U0001f642",
    "\u202e",
    "\\u0000",
    '\\"',
]
adversarial_text = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(max_size=10),
        st.builds(
            lambda s, n: s * n,
            st.sampled_from(["{", "[", '{"a":', "<tool_call>", "Action:", '"']),
            st.integers(0, 1200),
        ),
    ),
    max_size=50,
).map("".join)


@pytest.mark.parametrize("parser_cls", PARSERS)
@FAST
@given(text=adversarial_text)
def test_adversarial_text_never_raises(parser_cls, text):
    check_result(parser_cls(REGISTRY).parse(text))


# ---- round trips: render a valid call, bury it in prose, read it back ----------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
VALUES = {
    "string": st.text(),
    "integer": st.integers(),
    "number": st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    "boolean": st.booleans(),
    "array": st.lists(json_scalars, max_size=4),
    "object": st.dictionaries(st.text(max_size=8), json_scalars, max_size=4),
}


@st.composite
def calls(draw):
    definition = draw(st.sampled_from(REGISTRY.list_definitions()))

    def value(p):
        return st.sampled_from(p.enum) if p.enum else VALUES[p.type]

    arguments = draw(
        st.fixed_dictionaries(
            {p.name: value(p) for p in definition.parameters if p.required},
            optional={p.name: value(p) for p in definition.parameters if not p.required},
        )
    )
    return definition.name, arguments


def expected(name, arguments):
    return REGISTRY.get(name).definition.validate_arguments(arguments)


@FAST
@given(
    call=calls(),
    before=st.text(),
    after=st.text(),
    name_key=st.sampled_from(["tool", "name", "action"]),
    arguments_key=st.sampled_from(["arguments", "args", "parameters", "action_input"]),
    fenced=st.booleans(),
    ascii=st.booleans(),
)
def test_json_round_trip(call, before, after, name_key, arguments_key, fenced, ascii):
    name, arguments = call
    rendered = json.dumps({name_key: name, arguments_key: arguments}, ensure_ascii=ascii)
    if fenced:
        rendered = f"```json\n{rendered}\n```"
    assert_call(parse(JSONActionParser, before + rendered + after), name, expected(name, arguments))


@FAST
@given(
    call=calls(),
    before=st.text(),
    thought=st.text(),
    after=st.text(),
    indent=st.sampled_from([None, 2]),
    ascii=st.booleans(),
)
def test_react_round_trip(call, before, thought, after, indent, ascii):
    assume("action" not in after.lower())  # a later Action line wins, by design
    name, arguments = call
    text = (
        f"{before}\nThought: {thought}\nAction: {name}\n"
        f"Action Input: {json.dumps(arguments, indent=indent, ensure_ascii=ascii)}\nObservation: {after}"
    )
    assert_call(parse(ReActActionParser, text), name, expected(name, arguments))


plain_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters='{"`'), min_size=1
)


@FAST
@given(expression=plain_text, thought=st.text())
def test_react_plain_text_round_trip(expression, thought):
    expression = expression.strip()
    assume(expression and "action" not in expression.lower())
    text = f"Thought: {thought}\nAction: calculator\nAction Input: {expression}\nObservation: 42"
    assert_call(parse(ReActActionParser, text), "calculator", {"expression": expression})


@FAST
@given(
    call=calls(),
    before=st.text(),
    after=st.text(),
    arguments_as_string=st.booleans(),
    closed=st.booleans(),
    ascii=st.booleans(),
)
def test_function_calling_round_trip(call, before, after, arguments_as_string, closed, ascii):
    name, arguments = call
    value = json.dumps(arguments, ensure_ascii=ascii) if arguments_as_string else arguments
    block = "<tool_call>\n" + json.dumps({"name": name, "arguments": value}, ensure_ascii=ascii)
    text = before + block + ("\n</tool_call>" + after if closed else "")
    assert_call(parse(FunctionCallingParser, text), name, expected(name, arguments))
