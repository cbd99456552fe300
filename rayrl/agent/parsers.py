"""Parsers that turn a model's reply into one validated tool call.

A policy under RL writes anything: prose around the call, code fences, a call cut
off by `max_tokens`, braces nested a thousand deep, thousands of digits. `parse`
never raises. It returns either a `ToolCall` whose tool exists and whose arguments
passed `ToolDefinition.validate_arguments`, or an error written to be sent back
to the model as its next observation, so that a malformed action costs one turn
and teaches the format instead of ending the episode.

One class per format:
- `JSONActionParser`: a JSON object anywhere in the reply.
- `ReActActionParser`: Thought / Action / Action Input lines.
- `FunctionCallingParser`: Hermes/Qwen `<tool_call>{...}</tool_call>` blocks, the
  format chat templates that render `tools=` teach their models.

JSON is read with `json.JSONDecoder.raw_decode` from each candidate "{": the
decoder is itself a scanner that respects strings and escapes, finds where a
balanced object ends without a greedy regex, and runs in C. Only the first
`max_chars` characters of a reply are read, so the work per reply stays bounded.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from rayrl.agent.tools import ToolArgumentError, ToolDefinition, ToolRegistry

DEFAULT_MAX_CHARS = 20_000
"""Characters of a reply a parser reads; the rest is ignored."""

_NAME_KEYS = ("tool", "name", "action")
_ARGUMENT_KEYS = ("arguments", "args", "parameters", "action_input")
_DECODER = json.JSONDecoder()


@dataclass
class ToolCall:
    """A tool call read from a reply, checked against the registry.

    Args:
        name: name of a registered tool.
        arguments: validated arguments, defaults filled in.
        raw: the part of the reply the call was read from.
    """

    name: str
    arguments: dict[str, Any]
    raw: str


@dataclass
class ParseResult:
    """The outcome of parsing one reply: a call, or an error for the model.

    Args:
        tool_call: the call, when one was found and is valid.
        error: why there is no valid call, in words meant for the model.
    """

    tool_call: ToolCall | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether a valid call was found."""
        return self.tool_call is not None and self.error is None


def _decode_object(text: str, start: int) -> tuple[Any, int] | str:
    """The JSON value that starts at `text[start]` and where it ends, or why it is not one."""
    try:
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as err:
        return f"{err.msg} at character {err.pos - start + 1}"
    except ValueError as err:  # e.g. an integer literal longer than Python converts
        return str(err)
    except RecursionError:
        return "it is nested too deeply"


def _name_and_arguments(obj: dict[str, Any]) -> tuple[str | None, Any]:
    """The tool name and the arguments value of a call-shaped object."""
    function = obj.get("function")
    if isinstance(function, dict) and "name" in function:  # OpenAI's {"type": "function", "function": {...}}
        obj = function
    name = next((obj[k] for k in _NAME_KEYS if isinstance(obj.get(k), str)), None)
    arguments = next((obj[k] for k in _ARGUMENT_KEYS if k in obj), None)
    return name, arguments


def _is_call_shaped(obj: Any) -> bool:
    return isinstance(obj, dict) and _name_and_arguments(obj)[0] is not None


def _scalar_from_text(text: str, json_type: str) -> Any:
    """A plain-text argument as a value of `json_type` (validation reports a mismatch)."""
    if json_type == "string":
        if len(text) >= 2 and text[0] == text[-1] == '"':
            try:
                return json.loads(text)
            except ValueError:
                pass
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _arguments_object(definition: ToolDefinition, value: Any, plain_text: bool) -> Any:
    """Turn the arguments as written into the object `validate_arguments` checks.

    A string that holds a JSON object is decoded (OpenAI and some chat templates
    send arguments that way). With `plain_text`, any other string is the value of
    the tool's single required argument, and is ignored by a tool without arguments.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        decoded = _decode_object(text, 0)
        if isinstance(decoded, str):
            raise ToolArgumentError(
                definition.name,
                None,
                f"the arguments of tool {definition.name!r} are not valid JSON: {decoded}",
            )
        return decoded[0]
    if not plain_text:
        raise ToolArgumentError(
            definition.name, None, f"the arguments of tool {definition.name!r} must be a JSON object"
        )
    if not definition.parameters:
        return {}  # models write "none" or "n/a" for tools without arguments; nothing to map it to
    required = [p for p in definition.parameters if p.required]
    if len(required) != 1:
        names = ", ".join(p.name for p in definition.parameters)
        example = '{"' + definition.parameters[0].name + '": ...}'
        raise ToolArgumentError(
            definition.name,
            None,
            f"tool {definition.name!r} takes the arguments {names}; give them as a JSON object such as {example}",
        )
    param = required[0]
    return {param.name: _scalar_from_text(text, param.type)}


def describe_tools(registry: ToolRegistry) -> str:
    """The registered tools as text for a system prompt: name, purpose, one line per argument."""
    lines = []
    for definition in registry.list_definitions():
        lines.append(f"- {definition.name}: {definition.description}")
        for p in definition.parameters:
            notes = [p.type, "required" if p.required else "optional"]
            if p.enum is not None:
                notes.append("one of " + ", ".join(json.dumps(v) for v in p.enum))
            if p.default is not None:
                notes.append(f"default {json.dumps(p.default)}")
            lines.append(f"    {p.name} ({'; '.join(notes)}): {p.description}")
        if not definition.parameters:
            lines.append("    (no arguments)")
    return "\n".join(lines) if lines else "(no tools are available)"


class ActionParser(ABC):
    """Base class of parsers that read one tool call from a model's reply.

    Subclasses find a candidate call in their format; this class checks the name
    against the registry and the arguments against the tool's definition.

    Args:
        registry: the tools a call may name.
        max_chars: characters of a reply that are read; the rest is ignored.
    """

    expected_format = ""
    """One line telling the model what a call looks like, used in error messages."""

    def __init__(self, registry: ToolRegistry, max_chars: int = DEFAULT_MAX_CHARS):
        if not isinstance(registry, ToolRegistry):
            raise TypeError(f"registry must be a ToolRegistry, got {type(registry).__name__}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        self.registry = registry
        self.max_chars = max_chars

    def parse(self, text: str) -> ParseResult:
        """Read one tool call from `text`; never raises.

        Args:
            text: the model's reply.

        Returns:
            A result with a valid `tool_call`, or with an `error` to show the model.
        """
        if not isinstance(text, str):
            return ParseResult(error=f"expected text, got {type(text).__name__}")
        try:
            return self._parse(text[: self.max_chars])
        except Exception as err:  # the contract is a result for every input; say what broke
            return ParseResult(
                error=f"could not read a tool call ({type(err).__name__}). {self.expected_format}"
            )

    @abstractmethod
    def _parse(self, text: str) -> ParseResult:
        """Find the call in `text` (already cut to `max_chars`); may raise on surprises."""

    @abstractmethod
    def format_instructions(self) -> str:
        """How to call the tools, with the tools listed, to put in a system prompt."""

    def _not_found(self) -> ParseResult:
        return ParseResult(error=f"No tool call found. {self.expected_format}")

    def _check(self, name: Any, arguments: Any, raw: str, plain_text: bool = False) -> ParseResult:
        """A result for a candidate call: the tool must exist and the arguments must fit it."""
        if not isinstance(name, str) or not name.strip():
            return ParseResult(error=f"The tool name is missing or empty. {self.expected_format}")
        name = name.strip()
        tool = self.registry.get(name)
        if tool is None:
            return ParseResult(error=self.registry.unknown_tool_message(name))
        try:
            value = _arguments_object(tool.definition, arguments, plain_text)
            validated = tool.definition.validate_arguments(value)
        except ToolArgumentError as err:
            return ParseResult(error=str(err))
        return ParseResult(tool_call=ToolCall(name=name, arguments=validated, raw=raw))


class JSONActionParser(ActionParser):
    """Reads a JSON object such as `{"tool": "attack", "arguments": {"enemy": "slime"}}`.

    The object may sit anywhere: after prose, inside ```json fences. The name may
    be under "tool", "name" or "action"; the arguments under "arguments", "args",
    "parameters" or "action_input" (a plain string there is the value of the
    tool's single required argument). When the reply holds several call-shaped
    objects, the first valid one is taken; if none is valid, the error is the
    first one's. Objects that are not calls are looked into, so a call wrapped
    in another object is found too.

    Args:
        registry: the tools a call may name.
        max_chars: characters of a reply that are read; the rest is ignored.
    """

    expected_format = (
        'Reply with a JSON object such as {"tool": "<tool name>", "arguments": {"<argument>": <value>}}.'
    )

    def _parse(self, text: str) -> ParseResult:
        first_error: ParseResult | None = None
        pos = text.find("{")
        while pos != -1:
            decoded = _decode_object(text, pos)
            resume = pos + 1
            if not isinstance(decoded, str) and _is_call_shaped(decoded[0]):
                obj, end = decoded
                name, arguments = _name_and_arguments(obj)
                result = self._check(name, arguments, text[pos:end], plain_text=True)
                if result.ok:
                    return result
                first_error = first_error or result
                resume = end  # objects inside a call are its arguments, not calls
            pos = text.find("{", resume)
        return first_error or self._not_found()

    def format_instructions(self) -> str:
        return (
            "To act, call one of the tools below by replying with a single JSON object:\n"
            '{"tool": "<tool name>", "arguments": {"<argument>": <value>, ...}}\n'
            "Give every required argument, with the JSON type shown.\n"
            f"Tools:\n{describe_tools(self.registry)}"
        )


_ACTION = re.compile(r"\baction[ \t]*:", re.IGNORECASE)
_ACTION_INPUT = re.compile(r"\baction[ \t_-]*input[ \t]*:", re.IGNORECASE)
# Where a plain-text Action Input ends: the next ReAct label at the start of a line.
_NEXT_LABEL = re.compile(
    r"\n[ \t]*(?:thought|action|action[ \t_-]*input|observation|final[ \t_-]*answer)[ \t]*:", re.IGNORECASE
)
# Whitespace and an optional ```json fence before an input or a <tool_call> body.
_LEADING = re.compile(r"\s*(?:```[A-Za-z]*[ \t]*)?\s*")


def _skip_space_and_fence(text: str, start: int) -> int:
    """Index of the first character after whitespace and an optional ```json fence."""
    match = _LEADING.match(text, start)  # always matches; the pattern may be empty
    return match.end() if match else start


class ReActActionParser(ActionParser):
    """Reads ReAct replies: `Thought: ...`, `Action: <tool name>`, `Action Input: <input>`.

    Labels are case-insensitive and the last Action in the reply wins (models
    revise themselves). The input is a JSON object, or plain text that becomes
    the value of the tool's single required argument; a tool without arguments
    may leave the Action Input out. Plain text ends at the next label line
    (a hallucinated "Observation:" is cut off).

    Args:
        registry: the tools a call may name.
        max_chars: characters of a reply that are read; the rest is ignored.
    """

    expected_format = (
        "Reply with the lines 'Thought: <reasoning>', 'Action: <tool name>' and "
        "'Action Input: <JSON object of arguments>'."
    )

    def _parse(self, text: str) -> ParseResult:
        actions = list(_ACTION.finditer(text))
        if not actions:
            return self._not_found()
        result = self._not_found()
        covered = 0
        for i, action in enumerate(actions):
            if action.start() < covered:
                continue  # "Action:" inside an earlier JSON input, e.g. in a string argument
            limit = actions[i + 1].start() if i + 1 < len(actions) else len(text)
            result, covered = self._step(text, action, limit)
        return result

    def _step(self, text: str, action: re.Match[str], limit: int) -> tuple[ParseResult, int]:
        """The call written by one Action line, and where its input ends.

        Labels and plain-text input are only looked for before `limit`, the next
        Action, so that a reply full of Action lines is read in linear time.
        """
        line_end = text.find("\n", action.end(), limit)
        line_end = limit if line_end == -1 else line_end
        name = text[action.end() : line_end].strip().strip("`*'\"").strip()
        if not name:
            return ParseResult(error=f"The Action line names no tool. {self.expected_format}"), line_end
        label = _ACTION_INPUT.search(text, line_end, limit)
        if label is None:
            return self._check(name, None, text[action.start() : line_end]), line_end
        start = _skip_space_and_fence(text, label.end())
        if text.startswith("{", start):
            # Decoded past `limit` on purpose: an "Action:" inside a string argument
            # belongs to this input, and `_parse` skips it.
            decoded = _decode_object(text, start)
            if isinstance(decoded, str):
                return ParseResult(error=f"Action Input is not a valid JSON object: {decoded}."), limit
            arguments, end = decoded
            return self._check(name, arguments, text[action.start() : end]), end
        stop = _NEXT_LABEL.search(text, start, limit)
        end = stop.start() if stop else limit
        value = text[start:end].strip()
        if value.endswith("```"):
            value = value[:-3].rstrip()
        return self._check(name, value, text[action.start() : end], plain_text=True), end

    def format_instructions(self) -> str:
        return (
            "To act, call one of the tools below. Write exactly these lines:\n"
            "Thought: <your reasoning>\n"
            "Action: <tool name>\n"
            'Action Input: <the arguments as a JSON object, e.g. {"<argument>": <value>}>\n'
            "Then stop and wait for the Observation. A tool with one required argument "
            "also accepts its value as plain text; a tool without arguments needs no Action Input.\n"
            f"Tools:\n{describe_tools(self.registry)}"
        )


_OPEN_TAG = "<tool_call>"
_CLOSE_TAG = "</tool_call>"


class FunctionCallingParser(ActionParser):
    """Reads Hermes/Qwen calls: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

    The arguments may also be a JSON string that holds an object. A block whose
    closing tag is missing is still read (a generation cut off by `max_tokens`,
    or stopped on the closing tag). With several blocks, the first valid one is
    taken; if none is valid, the error is the first one's.

    Args:
        registry: the tools a call may name.
        max_chars: characters of a reply that are read; the rest is ignored.
    """

    expected_format = (
        'Reply with <tool_call>{"name": "<tool name>", "arguments": {"<argument>": <value>}}</tool_call>.'
    )

    def _parse(self, text: str) -> ParseResult:
        first_error: ParseResult | None = None
        pos = text.find(_OPEN_TAG)
        while pos != -1:
            result, resume = self._block(text, pos)
            if result.ok:
                return result
            first_error = first_error or result
            pos = text.find(_OPEN_TAG, resume)
        return first_error or self._not_found()

    def _block(self, text: str, pos: int) -> tuple[ParseResult, int]:
        """The call in the block opened at `pos`, and where to look for the next block."""
        body = pos + len(_OPEN_TAG)
        start = _skip_space_and_fence(text, body)
        if not text.startswith("{", start):
            return ParseResult(
                error=f"The <tool_call> block holds no JSON object. {self.expected_format}"
            ), body
        # Decode over the rest of the reply rather than up to the closing tag, so that
        # a "</tool_call>" inside an argument string does not cut the object short.
        decoded = _decode_object(text, start)
        if isinstance(decoded, str):
            return ParseResult(error=f"The <tool_call> block is not valid JSON: {decoded}."), body
        obj, end = decoded
        if not isinstance(obj, dict) or _name_and_arguments(obj)[0] is None:
            return ParseResult(error=f'The <tool_call> object has no "name". {self.expected_format}'), end
        close = text.find(_CLOSE_TAG, end)
        raw_end = close + len(_CLOSE_TAG) if close != -1 and not text[end:close].strip(" \t\n`") else end
        name, arguments = _name_and_arguments(obj)
        return self._check(name, arguments, text[pos:raw_end]), end

    def format_instructions(self) -> str:
        return function_calling_instructions(self.registry.openai_tools())


def function_calling_instructions(schemas: list[dict[str, Any]]) -> str:
    """How to call the tools of these OpenAI schemas in `<tool_call>` blocks, for a system prompt."""
    listed = "\n".join(json.dumps(schema) for schema in schemas)
    return (
        "You may call the tools described by these JSON schemas:\n"
        f"<tools>\n{listed}\n</tools>\n"
        "To call one, reply with its name and a JSON object of arguments inside tags:\n"
        '<tool_call>\n{"name": "<tool name>", "arguments": {"<argument>": <value>}}\n</tool_call>'
    )


def read_tool_calls(text: str, names: set[str]) -> tuple[list[tuple[str, Any]], str]:
    """Every well-formed `<tool_call>` block of `text` that names one of `names`, as
    (name, arguments), and the text outside those blocks (stripped). Arguments are not
    checked against a schema: an OpenAI endpoint hands them to the caller as they are."""
    calls, kept, pos = [], [], 0
    start = text.find(_OPEN_TAG)
    while start != -1:
        body = _skip_space_and_fence(text, start + len(_OPEN_TAG))
        decoded = _decode_object(text, body) if text.startswith("{", body) else "no object"
        if isinstance(decoded, str) or not _is_call_shaped(decoded[0]):
            start = text.find(_OPEN_TAG, start + len(_OPEN_TAG))
            continue
        obj, end = decoded
        name, arguments = _name_and_arguments(obj)
        close = text.find(_CLOSE_TAG, end)
        end = close + len(_CLOSE_TAG) if close != -1 and not text[end:close].strip(" \t\n`") else end
        if name in names:
            calls.append((name, {} if arguments is None else arguments))
            kept.append(text[pos:start])
            pos = end
        start = text.find(_OPEN_TAG, end)
    kept.append(text[pos:])
    return calls, "".join(kept).strip()


__all__ = [
    "DEFAULT_MAX_CHARS",
    "ActionParser",
    "FunctionCallingParser",
    "JSONActionParser",
    "ParseResult",
    "ReActActionParser",
    "ToolCall",
    "describe_tools",
    "function_calling_instructions",
    "read_tool_calls",
]
