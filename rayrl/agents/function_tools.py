"""Tools from plain Python functions.

Users describe a tool as `{"name", "description", "function"}` and expect the
function's signature to be the tool's interface. The `ToolDefinition` is derived
from it: type hints give the JSON types (str, int, float, bool, list, dict and
`Literal[...]` choices), parameters without a default are required, and a
Google-style "Args:" section gives each parameter's description. Untyped
parameters are strings, unless their default says otherwise, because that is
what a model writes for them; the registry then checks the model's arguments
against the schema before the function runs.

The function runs inside `ToolRegistry`, which already turns exceptions and
timeouts into failed calls, so nothing here catches anything at call time.
"""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydantic import ValidationError

from rayrl.agent.tools import Tool, ToolDefinition, ToolParameter, ToolRegistry

TOOL_KEYS = ("name", "description", "function", "timeout_s")
"""Keys a tool dict may have ("name" and "function" are required)."""

_SIMPLE: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARRAYS = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Iterable)
_OBJECTS = (dict, collections.abc.Mapping)
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters)\s*:\s*$")
_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class FunctionTool(Tool):
    """A tool that calls a Python function with the validated arguments.

    The result goes to the model as text: strings as they are, dicts and lists
    as JSON, None as "(no result)", anything else through `str()`. Async
    functions are run to completion in the registry's worker thread.

    Args:
        function: the callable to run.
        definition: what the model is told about it (see `tool_from_function`).
        timeout_s: seconds one call may take (None: the registry's default).
    """

    def __init__(
        self, function: Callable[..., Any], definition: ToolDefinition, timeout_s: float | None = None
    ):
        if not callable(function):
            raise TypeError(
                f"tool {definition.name!r}: function must be callable, got {type(function).__name__}"
            )
        super().__init__(definition, timeout_s=timeout_s)
        self.function = function
        # Registry calls pass keywords; positional-only parameters need their place.
        self._positional_only = [
            p.name
            for p in _signature(function).parameters.values()
            if p.kind is inspect.Parameter.POSITIONAL_ONLY
        ]

    def execute(self, **kwargs: Any) -> str:
        args = [kwargs.pop(name) for name in self._positional_only if name in kwargs]
        result = self.function(*args, **kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        return result_text(result)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def result_text(result: Any) -> str:
    """A tool's return value as the text the model observes."""
    if isinstance(result, str):
        return result
    if result is None:
        return "(no result)"
    if isinstance(result, (dict, list)):
        try:
            return json.dumps(result)
        except (TypeError, ValueError):
            pass
    return str(result)


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(function, eval_str=True)
    except (NameError, TypeError, SyntaxError):  # a forward reference that does not resolve
        return inspect.signature(function)


def docstring_parts(function: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The summary paragraph of a function's docstring and its "Args:" descriptions.

    Args:
        function: any callable; its docstring may be missing.

    Returns:
        `(summary, {parameter: description})`, empty when the docstring has none.
    """
    doc = inspect.getdoc(function) or ""
    lines = doc.splitlines()
    summary_lines: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line):
            break
        summary_lines.append(line.strip())
    descriptions: dict[str, str] = {}
    section_indent: int | None = None
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:
        match = _SECTION.match(line)
        if match:
            section_indent, entry_indent, current = len(match.group(1)), None, None
            continue
        if section_indent is None or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= section_indent:  # the next section (Returns:, Raises:, ...) ends the list
            section_indent = None
            continue
        entry = _ENTRY.match(line.strip())
        if entry and (entry_indent is None or indent <= entry_indent):
            entry_indent = indent
            current = entry.group(1)
            descriptions[current] = entry.group(2).strip()
        elif current is not None:
            descriptions[current] = f"{descriptions[current]} {line.strip()}".strip()
    return " ".join(summary_lines), descriptions


def _json_type(annotation: Any, where: str) -> tuple[str, list[Any] | None] | None:
    """The JSON type (and enum) of a type hint; None for no usable hint."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    if isinstance(annotation, str):  # an annotation that did not evaluate
        simple = {t.__name__: kind for t, kind in _SIMPLE.items()} | {"list": "array", "dict": "object"}
        if annotation in simple:
            return simple[annotation], None
        raise TypeError(
            f"{where}: cannot read the type hint {annotation!r}; use str, int, float, bool, list or dict"
        )
    origin = typing.get_origin(annotation)
    if origin is Literal:
        values = list(typing.get_args(annotation))
        kinds = {_SIMPLE.get(type(v)) for v in values}
        if len(kinds) != 1 or None in kinds:
            raise TypeError(f"{where}: Literal values must all be str, int, float or bool, got {values!r}")
        return kinds.pop(), values
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _json_type(members[0], where)
        if set(members) <= {int, float}:
            return "number", None
        raise TypeError(f"{where}: the union {annotation!r} has no single JSON type")
    if annotation in _SIMPLE:
        return _SIMPLE[annotation], None
    base = origin or annotation
    if base in _OBJECTS or (isinstance(base, type) and issubclass(base, dict)):
        return "object", None
    if base in _ARRAYS or (isinstance(base, type) and issubclass(base, (list, tuple))):
        return "array", None
    raise TypeError(
        f"{where}: the type {annotation!r} has no JSON equivalent; use str, int, float, bool, list, dict or Literal"
    )


def _default_type(default: Any) -> str:
    if isinstance(default, bool):
        return "boolean"
    for py, kind in ((int, "integer"), (float, "number"), (list, "array"), (dict, "object")):
        if isinstance(default, py):
            return kind
    return "string"


def definition_from_function(
    function: Callable[..., Any], name: str, description: str | None = None
) -> ToolDefinition:
    """The `ToolDefinition` a function's signature, type hints and docstring describe.

    Args:
        function: the tool's callable; `*args` and `**kwargs` are not shown to the model.
        name: tool name.
        description: what the tool does (default: the docstring's summary).

    Raises:
        ValueError: no description and no docstring, or a parameter the schema cannot hold.
        TypeError: a type hint with no JSON equivalent.
    """
    summary, documented = docstring_parts(function)
    description = description if description is not None else summary
    if not description:
        raise ValueError(f"tool {name!r}: give a 'description' (the function has no docstring)")
    parameters = []
    for p in _signature(function).parameters.values():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        where = f"tool {name!r}, parameter {p.name!r}"
        has_default = p.default is not inspect.Parameter.empty
        hinted = _json_type(p.annotation, where)
        kind, enum = (
            hinted if hinted is not None else (_default_type(p.default) if has_default else "string", None)
        )
        fields: dict[str, Any] = {
            "name": p.name,
            "type": kind,
            "description": documented.get(p.name) or p.name.replace("_", " "),
            "required": not has_default,
            "enum": enum,
        }
        if has_default and p.default is not None:
            try:  # shown to the model only when it is a value of the parameter's JSON type
                parameters.append(ToolParameter(**fields, default=json.loads(json.dumps(p.default))))
                continue
            except (TypeError, ValueError):
                pass  # the function still applies its own default when the argument is left out
        try:
            parameters.append(ToolParameter(**fields))
        except ValidationError as err:
            raise ValueError(f"{where}: {err.errors()[0]['msg']}") from None
    try:
        return ToolDefinition(name=name, description=description, parameters=parameters)
    except ValidationError as err:
        raise ValueError(f"tool {name!r}: {err.errors()[0]['msg']}") from None


def tool_from_function(
    function: Callable[..., Any],
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
) -> FunctionTool:
    """Wrap a function as a tool whose schema comes from its signature.

    Args:
        function: the callable to run.
        name: tool name (default: the function's `__name__`).
        description: what the tool does (default: the docstring's summary).
        timeout_s: seconds one call may take (None: the registry's default).
    """
    if not callable(function):
        raise TypeError(f"tool {name!r}: 'function' must be callable, got {type(function).__name__}")
    if name is None:
        name = getattr(function, "__name__", None)
        if not isinstance(name, str) or name == "<lambda>":
            raise ValueError(f"{function!r} has no usable __name__: give the tool a 'name'")
    return FunctionTool(function, definition_from_function(function, name, description), timeout_s)


def tool_from_spec(spec: Any, index: int = 0) -> Tool:
    """One tool from a `Tool`, a `{"name", "description", "function"}` dict or a function.

    Args:
        spec: the tool as the user gave it.
        index: its position in the tools list, for error messages.

    Raises:
        TypeError: `spec` is none of those, or its "function" is not callable.
        ValueError: a missing or unknown key, a bad name, or an unusable signature.
    """
    if isinstance(spec, Tool):
        return spec
    if isinstance(spec, Mapping):
        label = f"tools[{index}]" + (f" ({spec['name']!r})" if isinstance(spec.get("name"), str) else "")
        unknown = [k for k in spec if k not in TOOL_KEYS]
        if unknown:
            raise ValueError(f"{label}: unknown key {unknown[0]!r}; allowed keys: {', '.join(TOOL_KEYS)}")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{label}: key 'name' must be a non-empty string, got {name!r}")
        function = spec.get("function")
        if function is None:
            raise ValueError(f"{label}: key 'function' is missing")
        if not callable(function):
            raise TypeError(f"{label}: key 'function' must be callable, got {type(function).__name__}")
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            raise TypeError(f"{label}: key 'description' must be a string, got {type(description).__name__}")
        return tool_from_function(function, name, description, spec.get("timeout_s"))
    if callable(spec):
        return tool_from_function(spec)
    raise TypeError(
        f"tools[{index}] must be a Tool, a dict with 'name' and 'function', or a function; got {type(spec).__name__}"
    )


def build_tool_registry(tools: Iterable[Any], default_timeout_s: float | None = None) -> ToolRegistry:
    """A registry of the given tools (any form `tool_from_spec` takes).

    Args:
        tools: the tools, in the order the model is shown them.
        default_timeout_s: seconds a call may take when its tool sets none (None: registry default).

    Raises:
        ValueError: two tools share a name (the message names it), or a spec is invalid.
    """
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Iterable):
        raise TypeError(f"tools must be a list, got {type(tools).__name__}")
    registry = (
        ToolRegistry() if default_timeout_s is None else ToolRegistry(default_timeout_s=default_timeout_s)
    )
    seen: dict[str, int] = {}
    for i, spec in enumerate(tools):
        tool = tool_from_spec(spec, i)
        if tool.name in seen:
            raise ValueError(f"duplicate tool name {tool.name!r} (tools[{seen[tool.name]}] and tools[{i}])")
        seen[tool.name] = i
        registry.register(tool)
    return registry


__all__ = [
    "TOOL_KEYS",
    "FunctionTool",
    "build_tool_registry",
    "definition_from_function",
    "docstring_parts",
    "result_text",
    "tool_from_function",
    "tool_from_spec",
]
