"""An agent that calls tools between its replies.

`ToolAgent.process_turn` is a small loop: generate; if the reply holds a tool
call, run it and show the model the result; generate again; at most
`max_tool_rounds` tools per turn. A reply with no call is the turn's answer. A
call the parser could not accept (unknown tool, bad arguments) is shown to the
model as its error, like a failed tool, so that it can correct itself.

Tool results go back as user messages, not a "tool" role: not every chat
template renders a tool role, and the training loop (`MultiTurnManager`) feeds
observations back the same way. Training uses `tool_manager()`, which shares
this agent's registry and parser, so the agent is trained on the tools and
reply format it later runs with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rayrl.agent.conversation import ConversationTurn
from rayrl.agent.parsers import ActionParser, FunctionCallingParser, JSONActionParser, ReActActionParser
from rayrl.agent.tools import ToolRegistry
from rayrl.agents.agent import Message, MultiTurnAgent
from rayrl.agents.config import AgentConfig
from rayrl.agents.function_tools import build_tool_registry

if TYPE_CHECKING:
    from rayrl.agent.multi_turn import MultiTurnManager
    from rayrl.envs.base import BaseEnvironment

ParserName = Literal["json", "react", "function_calling"]

PARSERS: dict[str, type[ActionParser]] = {
    "json": JSONActionParser,
    "react": ReActActionParser,
    "function_calling": FunctionCallingParser,
}
"""Reply formats a `ToolAgent` can read, by name."""

# Every parser reports a reply without any call with this message (`ActionParser._not_found`);
# for an agent such a reply is its answer, not a mistake.
_NO_CALL = "No tool call found."


@dataclass
class ToolStep:
    """What one reply amounted to.

    Args:
        reply: the model's reply.
        call: the executed call as `{"name", "arguments", "success", "result"}`, or None.
        parse_error: why the reply held no valid call (None when it held one).
        observation: what the model is shown next; None when the reply is the turn's answer.
    """

    reply: str
    call: dict[str, Any] | None
    parse_error: str | None
    observation: str | None

    @property
    def is_answer(self) -> bool:
        """Whether the reply ends the turn (it held no call and no attempt at one)."""
        return self.observation is None


class ToolAgent(MultiTurnAgent):
    """A multi-turn agent that may call tools before it answers.

    Args:
        config: model, prompt and sampling settings.
        tools: `Tool` objects, `{"name", "description", "function"}` dicts (schema from
            the function's signature, type hints and docstring) or plain functions.
        parser: reply format the model is taught and read with: "json", "react",
            "function_calling", or an `ActionParser` subclass.
        max_tool_rounds: most tool calls in one turn.
        tool_timeout_s: seconds one call may take when its tool sets none (None: registry default).
    """

    def __init__(
        self,
        config: AgentConfig | None = None,
        tools: Iterable[Any] = (),
        *,
        parser: ParserName | type[ActionParser] = "json",
        max_tool_rounds: int = 3,
        tool_timeout_s: float | None = None,
    ):
        super().__init__(config)
        if not isinstance(max_tool_rounds, int) or max_tool_rounds < 1:
            raise ValueError(f"max_tool_rounds must be an integer >= 1, got {max_tool_rounds!r}")
        self.tool_registry: ToolRegistry = build_tool_registry(tools, tool_timeout_s)
        self.parser: ActionParser = _make_parser(parser, self.tool_registry)
        self.max_tool_rounds = max_tool_rounds

    @property
    def system_prompt(self) -> str | None:
        """The configured system prompt followed by the parser's tool instructions."""
        base = self.config.system_prompt
        instructions = self.parser.format_instructions()
        return f"{base}\n\n{instructions}" if base else instructions

    def tool_manager(
        self, environment: BaseEnvironment | None = None, max_turns: int = 10, **options: Any
    ) -> MultiTurnManager:
        """A `MultiTurnManager` with this agent's tools and parser, for training episodes.

        Args:
            environment: what the tools act on (None: tools only).
            max_turns: most replies per episode.
            **options: further `MultiTurnManager` keyword arguments.
        """
        from rayrl.agent.multi_turn import MultiTurnManager

        return MultiTurnManager(self.tool_registry, self.parser, environment, max_turns, **options)

    def format_observation(self, call: dict[str, Any]) -> str:
        """The message that shows the model a call's outcome (override to reword it).

        Args:
            call: `{"name", "arguments", "success", "result"}` of the executed call.
        """
        if call["success"]:
            return f"Result of {call['name']}: {call['result']}"
        return f"The call failed: {call['result']}"  # the registry's message names the tool and the cause

    async def handle_reply(self, reply: str) -> ToolStep:
        """Parse one reply and run the tool it calls.

        Args:
            reply: the model's reply.

        Returns:
            The step; its `observation` is None when the reply is an answer.
        """
        parsed = self.parser.parse(reply)
        if parsed.ok:
            tc = parsed.tool_call
            success, result = await self.tool_registry.aexecute_tool(tc.name, tc.arguments)
            call = {"name": tc.name, "arguments": tc.arguments, "success": success, "result": result}
            return ToolStep(reply, call, None, self.format_observation(call))
        error = parsed.error or _NO_CALL
        if error.startswith(_NO_CALL):
            return ToolStep(reply, None, error, None)
        return ToolStep(reply, None, error, f"Your tool call was not valid: {error}")

    async def process_turn(
        self,
        history: Sequence[Message],
        user_input: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> ConversationTurn:
        """Reply to `history` plus `user_input`, calling tools on the way.

        Args:
            history: earlier turns (chat dicts or `ConversationTurn`), oldest first.
            user_input: the user's new message; None when `history` already ends with it.
            context: episode information, passed to `build_messages`.

        Returns:
            The final assistant turn. `metadata` holds `tool_calls` (executed calls),
            `parse_errors` (one per reply without a valid call), `steps` (the
            intermediate replies and observations, as chat messages), `stop_reason`
            ("answer" or "max_tool_rounds"), `model` and `generation_s`.
        """
        messages = self.build_messages(history, user_input, context)
        turn = await self.respond(messages)
        steps: list[dict[str, str]] = []
        calls: list[dict[str, Any]] = []
        errors: list[str] = []
        stop_reason = "max_tool_rounds"
        generation_s = turn.metadata["generation_s"]
        for _ in range(self.max_tool_rounds):
            step = await self.handle_reply(turn.content)
            if step.call is not None:
                calls.append(step.call)
            if step.parse_error is not None:
                errors.append(step.parse_error)
            if step.is_answer:
                stop_reason = "answer"
                break
            steps += [
                {"role": "assistant", "content": step.reply},
                {"role": "user", "content": step.observation or ""},
            ]
            turn = await self.respond(messages + steps)
            generation_s += turn.metadata["generation_s"]
        turn.metadata.update(
            tool_calls=calls,
            parse_errors=errors,
            steps=steps,
            stop_reason=stop_reason,
            generation_s=round(generation_s, 3),
        )
        return turn


def _make_parser(parser: Any, registry: ToolRegistry) -> ActionParser:
    if isinstance(parser, str):
        if parser not in PARSERS:
            raise ValueError(f"parser={parser!r} is unknown; choose one of {sorted(PARSERS)}")
        return PARSERS[parser](registry)
    if isinstance(parser, type) and issubclass(parser, ActionParser):
        return parser(registry)
    raise TypeError(
        f"parser must be one of {sorted(PARSERS)} or an ActionParser subclass, got {type(parser).__name__}"
    )


__all__ = ["PARSERS", "ParserName", "ToolAgent", "ToolStep"]
