"""Tools an agent can call, and the registry that runs them.

A tool is described once, by a `ToolDefinition`. That one description renders the
OpenAI tool schema a chat template takes as `tools=`, tells the parsers which
arguments a call may carry, and checks those arguments before the tool runs.

Whatever a policy writes is untrusted input, and during RL it writes a lot of it.
`ToolRegistry.execute_tool` therefore never raises: an unknown tool, bad arguments,
a tool that raises and a tool that hangs all come back as `(False, message)`, and
the message is written to be shown to the model as its next observation. A bad
action then costs the episode one turn instead of costing the rollout a worker.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import copy
import math
import operator
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

JSONType = Literal["string", "integer", "number", "boolean", "array", "object"]

DEFAULT_TIMEOUT_S = 10.0
"""Limit for one tool call when neither the tool nor the registry sets one."""

# What OpenAI accepts as a function name; chat templates and parsers rely on it too.
_TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"
# Arguments reach `Tool.execute` as keywords, so they must be identifiers.
_ARGUMENT_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

_PYTHON_TYPES: dict[str, type] = {"string": str, "boolean": bool, "array": list, "object": dict}
_ARTICLES = {"integer": "an integer", "array": "an array", "object": "an object"}


class ToolArgumentError(ValueError):
    """The arguments of a tool call do not match the tool's definition.

    The message names the tool and the argument and is meant to be shown to the
    model as it is.

    Args:
        tool: name of the tool that was called.
        argument: the offending argument, or None when the arguments as a whole are wrong.
        message: what is wrong, in a sentence for the model.
    """

    def __init__(self, tool: str, argument: str | None, message: str):
        super().__init__(message)
        self.tool = tool
        self.argument = argument


class _TypeMismatch(ValueError):
    def __init__(self, expected: str):
        super().__init__(f"expected {expected}")
        self.expected = expected


def _json_kind(value: Any) -> str:
    """The JSON name of a Python value's type, as the model would know it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, py in (("integer", int), ("number", float), ("string", str), ("array", list), ("object", dict)):
        if isinstance(value, py):
            return kind
    return type(value).__name__


def preview(value: Any, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters, for error messages about model output."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _conform(value: Any, expected: JSONType) -> Any:
    """`value` as JSON type `expected`; raises `_TypeMismatch` when it is not one."""
    if expected == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # JSON Schema counts 2.0 as an integer, and models do write it.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _TypeMismatch("an integer")
    if expected == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise _TypeMismatch("a finite number")
            return value
        raise _TypeMismatch("a number")
    if isinstance(value, _PYTHON_TYPES[expected]):
        return value
    raise _TypeMismatch(_ARTICLES.get(expected, f"a {expected}"))


class ToolParameter(BaseModel):
    """One argument of a tool, rendered as one property of its JSON schema."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = Field(pattern=_ARGUMENT_NAME)
    """Argument name; `Tool.execute` receives the value under this keyword."""

    type: JSONType
    """JSON type of the value ("integer" rejects booleans; "number" accepts integers)."""

    description: str
    """What the argument means, shown to the model."""

    required: bool = True
    """Whether every call must give this argument."""

    enum: list[Any] | None = None
    """The only values allowed, if set."""

    default: Any = None
    """Value filled in when an optional argument is left out (None: left out)."""

    @model_validator(mode="after")
    def _check_consistent(self) -> ToolParameter:
        if self.required and self.default is not None:
            raise ValueError(f"parameter {self.name!r}: a required parameter cannot have a default")
        if self.enum is not None and not self.enum:
            raise ValueError(f"parameter {self.name!r}: enum must list at least one value")
        for what, value in [("enum value", v) for v in self.enum or []] + [("default", self.default)]:
            if value is None:
                continue
            try:
                _conform(value, self.type)
            except _TypeMismatch as err:
                raise ValueError(
                    f"parameter {self.name!r}: {what} {value!r} is not {err.expected} ({self.type})"
                ) from None
        if self.default is not None and self.enum is not None and self.default not in self.enum:
            raise ValueError(f"parameter {self.name!r}: default {self.default!r} is not in enum {self.enum}")
        return self

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of this argument (one entry of "properties")."""
        schema: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.enum is not None:
            schema["enum"] = copy.deepcopy(self.enum)
        if self.default is not None:
            schema["default"] = copy.deepcopy(self.default)
        return schema


class ToolDefinition(BaseModel):
    """What the model is told about a tool, and what its calls are checked against."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = Field(pattern=_TOOL_NAME)
    """Tool name the model writes in a call: letters, digits, "_" and "-", at most 64."""

    description: str
    """What the tool does, shown to the model."""

    parameters: list[ToolParameter] = Field(default_factory=list)
    """The tool's arguments, in the order they are shown."""

    @model_validator(mode="after")
    def _check_unique(self) -> ToolDefinition:
        names = [p.name for p in self.parameters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tool {self.name!r}: duplicate parameter names {duplicates}")
        return self

    @property
    def definition(self) -> ToolDefinition:
        """This definition, so that `[t.definition.name for t in registry.list_definitions()]`
        (how the user's integration example lists tools) works as it does for a `Tool`."""
        return self

    def parameter(self, name: str) -> ToolParameter | None:
        """The parameter called `name`, or None."""
        return next((p for p in self.parameters if p.name == name), None)

    def to_openai_schema(self) -> dict[str, Any]:
        """The OpenAI tool schema, as chat templates take it in `tools=[...]`."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": {p.name: p.json_schema() for p in self.parameters},
                    "required": [p.name for p in self.parameters if p.required],
                },
            },
        }

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        """Check a call's arguments and return them with defaults filled in.

        A null value for an optional argument counts as leaving it out: models
        often write `"unit": null` for arguments they do not want to set.

        Args:
            arguments: the decoded arguments object; None means no arguments.

        Returns:
            A new dict with one entry per given argument plus the defaults of the
            optional ones left out. Integral floats given for an "integer" become ints.

        Raises:
            ToolArgumentError: for a non-object, an unknown argument, a missing
                required one, a value of the wrong JSON type or one not in the enum.
        """
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ToolArgumentError(
                self.name,
                None,
                f"the arguments of tool {self.name!r} must be a JSON object, got {_json_kind(arguments)}",
            )
        known = {p.name: p for p in self.parameters}
        for key in arguments:
            if key not in known:
                message = (
                    f"tool {self.name!r} has no argument {preview(key)}; its arguments are {', '.join(known)}"
                    if known
                    else f"tool {self.name!r} takes no arguments, got {preview(key)}"
                )
                raise ToolArgumentError(self.name, str(key), message)
        validated: dict[str, Any] = {}
        for param in self.parameters:
            value = arguments.get(param.name)
            if value is None:
                if param.required and param.name in arguments:
                    raise ToolArgumentError(
                        self.name,
                        param.name,
                        f"argument {param.name!r} of tool {self.name!r} must be "
                        f"{_ARTICLES.get(param.type, f'a {param.type}')}, got null",
                    )
                if param.required:
                    raise ToolArgumentError(
                        self.name,
                        param.name,
                        f"tool {self.name!r} needs the argument {param.name!r} "
                        f"({param.type}: {param.description})",
                    )
                if param.default is not None:
                    validated[param.name] = copy.deepcopy(param.default)
                continue
            try:
                value = _conform(value, param.type)
            except _TypeMismatch as err:
                raise ToolArgumentError(
                    self.name,
                    param.name,
                    f"argument {param.name!r} of tool {self.name!r} must be {err.expected}, "
                    f"got {_json_kind(value)} {preview(value)}",
                ) from None
            if param.enum is not None and value not in param.enum:
                allowed = ", ".join(repr(v) for v in param.enum)
                raise ToolArgumentError(
                    self.name,
                    param.name,
                    f"argument {param.name!r} of tool {self.name!r} must be one of {allowed}, "
                    f"got {preview(value)}",
                )
            validated[param.name] = value
        return validated


class Tool(ABC):
    """Base class of tools: a definition plus the code that runs a call.

    Subclasses pass their `ToolDefinition` to `super().__init__` and implement
    `execute`, which receives the validated arguments as keywords. `execute` may
    raise or return a non-str: the registry reports the exception to the model
    and converts the result with `str()`.

    Args:
        definition: name, description and parameters shown to the model.
        timeout_s: seconds one call may take; None uses the registry's default.
    """

    def __init__(self, definition: ToolDefinition, timeout_s: float | None = None):
        if not isinstance(definition, ToolDefinition):
            raise TypeError(f"definition must be a ToolDefinition, got {type(definition).__name__}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"tool {definition.name!r}: timeout_s must be > 0, got {timeout_s!r}")
        self.definition = definition
        self.timeout_s = timeout_s

    @property
    def name(self) -> str:
        """The tool's name, as in its definition."""
        return self.definition.name

    @abstractmethod
    def execute(self, **kwargs: Any) -> str:
        """Run one call on validated arguments and return what the model observes."""


class ToolRegistry:
    """The tools an agent may call, looked up by name, and the safe way to run them.

    Args:
        tools: tools to register at once (more can be added with `register`).
        default_timeout_s: seconds a call may take when its tool sets no `timeout_s`.
    """

    def __init__(self, tools: Iterable[Tool] = (), default_timeout_s: float = DEFAULT_TIMEOUT_S):
        if not default_timeout_s > 0:
            raise ValueError(f"default_timeout_s must be > 0, got {default_timeout_s!r}")
        self.default_timeout_s = default_timeout_s
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> Tool:
        """Add `tool`; its name must not be taken. Returns the tool."""
        if not isinstance(tool, Tool):
            raise TypeError(f"expected a Tool, got {type(tool).__name__}")
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool | None:
        """The tool called `name`, or None."""
        return self._tools.get(name) if isinstance(name, str) else None

    def names(self) -> list[str]:
        """Registered tool names, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def list_definitions(self) -> list[ToolDefinition]:
        """Definitions of all tools, in registration order."""
        return [tool.definition for tool in self._tools.values()]

    def openai_tools(self) -> list[dict[str, Any]]:
        """OpenAI schemas of all tools, for a chat template's `tools=`."""
        return [definition.to_openai_schema() for definition in self.list_definitions()]

    def timeout_for(self, tool: Tool) -> float:
        """Seconds a call of `tool` may take."""
        return tool.timeout_s if tool.timeout_s is not None else self.default_timeout_s

    def unknown_tool_message(self, name: Any) -> str:
        """What the model is told when it calls a tool that does not exist."""
        available = ", ".join(self._tools) if self._tools else "none"
        return f"unknown tool {preview(name)}; available tools: {available}"

    def execute_tool(self, name: str, /, **kwargs: Any) -> tuple[bool, str]:
        """Run one call and never raise.

        Args:
            name: tool to call (positional-only, so a tool may take an argument called "name").
            **kwargs: the call's arguments, validated against the tool's definition.

        Returns:
            `(True, output)` on success, else `(False, message)` where the message
            says what went wrong in words meant for the model.
        """
        prepared = self._prepare(name, kwargs)
        if isinstance(prepared, str):
            return False, prepared
        tool, arguments, timeout = prepared
        future = _start(tool, arguments)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return False, _timeout_message(tool, timeout)

    async def aexecute_tool(self, name: str, arguments: dict[str, Any] | None = None) -> tuple[bool, str]:
        """`execute_tool` for async callers: the event loop keeps running while the tool does.

        Args:
            name: tool to call.
            arguments: the call's arguments (None: no arguments).
        """
        prepared = self._prepare(name, arguments)
        if isinstance(prepared, str):
            return False, prepared
        tool, validated, timeout = prepared
        future = _start(tool, validated)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            return False, _timeout_message(tool, timeout)

    def _prepare(self, name: Any, arguments: Any) -> tuple[Tool, dict[str, Any], float] | str:
        tool = self.get(name)
        if tool is None:
            return self.unknown_tool_message(name)
        try:
            validated = tool.definition.validate_arguments(arguments)
        except ToolArgumentError as err:
            return str(err)
        return tool, validated, self.timeout_for(tool)


def _timeout_message(tool: Tool, timeout: float) -> str:
    return f"tool {tool.name!r} timed out after {timeout:g} s"


def _failure_message(tool: Tool, err: BaseException) -> str:
    try:
        detail = str(err)
    except Exception:  # an exception whose __str__ raises still fails the call cleanly
        detail = ""
    kind = type(err).__name__
    return f"tool {tool.name!r} failed: {kind}: {detail}" if detail else f"tool {tool.name!r} failed: {kind}"


def _start(tool: Tool, arguments: dict[str, Any]) -> concurrent.futures.Future[tuple[bool, str]]:
    """Run `tool.execute` in its own thread; the future resolves to `(ok, text)` and never fails.

    A Python thread cannot be killed: a tool that runs past its timeout keeps its
    thread until it returns, and only its result is dropped. The thread is a
    daemon started by hand rather than a `ThreadPoolExecutor` worker, because
    executor workers are joined at interpreter exit and a hung tool would then
    hang the process's shutdown too. Tools that may block for long should take
    their own timeouts (sockets, subprocesses) so that the thread does end.
    """
    future: concurrent.futures.Future[tuple[bool, str]] = concurrent.futures.Future()

    def work() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = tool.execute(**arguments)
            text = result if isinstance(result, str) else str(result)
        except BaseException as err:  # even SystemExit from a tool is that tool's failure
            future.set_result((False, _failure_message(tool, err)))
        else:
            future.set_result((True, text))

    threading.Thread(target=work, name=f"tool-{tool.name}", daemon=True).start()
    return future


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def _describe_node(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Attribute):
        return "attribute access"
    if isinstance(node, ast.Constant):
        return f"the constant {preview(node.value, 30)}"
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return f"the operator {type(node.op).__name__}"
    return type(node).__name__


class CalculatorTool(Tool):
    """Evaluates arithmetic: numbers, + - * / // % **, unary signs and parentheses.

    The expression is parsed with `ast` and only those nodes are evaluated, so
    model output never reaches `eval`. Every intermediate value is bounded:
    `2**10**10` is refused from the size of its result before anything is
    computed, and float overflow is an error rather than `inf`. Bad input raises
    `ValueError` (or `ZeroDivisionError`) with a message the registry hands to
    the model.

    Args:
        max_length: longest expression accepted, in characters.
        max_digits: most decimal digits any integer result may have.
        timeout_s: seconds one call may take (None: the registry's default).
    """

    def __init__(self, max_length: int = 500, max_digits: int = 1000, timeout_s: float | None = None):
        super().__init__(
            ToolDefinition(
                name="calculator",
                description="Evaluate an arithmetic expression and return the result.",
                parameters=[
                    ToolParameter(
                        name="expression",
                        type="string",
                        description="Numbers with + - * / // % ** and parentheses, e.g. (3 + 4) * 2",
                    )
                ],
            ),
            timeout_s=timeout_s,
        )
        self.max_length = max_length
        self.max_digits = max_digits
        self._int_limit = 10**max_digits

    def execute(self, expression: str, **kwargs: Any) -> str:
        return str(self.evaluate(expression))

    def evaluate(self, expression: str) -> int | float:
        """The value of `expression`; raises ValueError when it is not allowed arithmetic."""
        if len(expression) > self.max_length:
            raise ValueError(
                f"expression is too long ({len(expression)} characters, at most {self.max_length})"
            )
        try:
            tree = ast.parse(expression.strip(), mode="eval")
            return self._eval(tree.body)
        except SyntaxError as err:
            raise ValueError(f"not a valid arithmetic expression ({err.msg})") from None
        except (RecursionError, MemoryError):
            raise ValueError("expression is nested too deeply") from None

    def _eval(self, node: ast.AST) -> int | float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return self._bounded(node.value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return self._bounded(_UNARY[type(node.op)](self._eval(node.operand)))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow):
                self._check_power(left, right)
            try:
                return self._bounded(_BINARY[type(node.op)](left, right))
            except OverflowError:
                raise ValueError("result is too large") from None
        raise ValueError(
            f"unsupported syntax: {_describe_node(node)}; only numbers, + - * / // % ** "
            "and parentheses are allowed"
        )

    def _check_power(self, base: int | float, exponent: int | float) -> None:
        # Integer powers are exact and can take unbounded time and memory, so the
        # size of the result is estimated first. Float powers overflow by themselves.
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
            digits = exponent * math.log10(abs(base))
            if digits > self.max_digits:
                raise ValueError(
                    f"result is too large (about {digits:.3g} digits, at most {self.max_digits})"
                )

    def _bounded(self, value: Any) -> int | float:
        if isinstance(value, complex):
            raise ValueError("result is not a real number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("result is too large")
        if isinstance(value, int) and abs(value) >= self._int_limit:
            raise ValueError(f"result is too large (more than {self.max_digits} digits)")
        return value


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CalculatorTool",
    "JSONType",
    "Tool",
    "ToolArgumentError",
    "ToolDefinition",
    "ToolParameter",
    "ToolRegistry",
    "preview",
]
