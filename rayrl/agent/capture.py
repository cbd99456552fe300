"""Exact tokens of an episode played by an agent through an OpenAI-compatible endpoint.

An OpenAI-client agent sends the whole conversation with every request. To train on
it, each request's prompt must be the previous request's prompt plus the engine's exact
reply plus new messages (tool results, user turns). `TokenCapture` checks that: when the
new request repeats the previous conversation and the reply it was given unchanged, the
prompt is built from the kept ids and only the new messages are tokenised. When the agent
rewrote history (edited, dropped or summarised earlier messages, changed the tools), the
request starts a new segment (`on_rewrite="split"`, each segment is trained on its own)
or the episode is refused (`on_rewrite="refuse"`). Model text is never re-tokenised.

Tools: a request's `tools` (OpenAI schemas) are described in the system message in the
Hermes `<tool_call>` format when the chat template takes no `tools`, and a reply's
`<tool_call>` blocks come back as OpenAI `tool_calls`. An assistant message sent back with
`tool_calls` is rendered as the text the model wrote.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from rayrl.agent.chat_tokens import ChatTokens
from rayrl.agent.parsers import function_calling_instructions, read_tool_calls


class HistoryRewritten(ValueError):
    """A request does not extend the episode's previous tokens (`on_rewrite="refuse"`)."""


@dataclass
class Segment:
    """Token ids the engine saw and produced, with what is trained (`mask`)."""

    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    turns: int = 0

    def add(self, ids: list[int], trained: bool, logprobs=None, version: int = -1) -> None:
        self.ids += ids
        self.mask += [int(trained)] * len(ids)
        self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)
        self.versions += [version if trained else -1] * len(ids)


def message_text(content: Any) -> str:
    """The text of an OpenAI message content: a string, None, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise ValueError(f"message content must be a string or a list of parts, got {type(content).__name__}")


def _call_text(call: dict) -> str:
    fn = call.get("function") or {}
    arguments = fn.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    return "<tool_call>\n" + json.dumps({"name": fn.get("name"), "arguments": arguments}) + "\n</tool_call>"


class TokenCapture:
    """The segments of one episode (see the module docstring).

    Args:
        chat: the model's chat template.
        on_rewrite: what a request that rewrote history does: start a new segment, or
            refuse the episode.
    """

    def __init__(self, chat: ChatTokens, on_rewrite: Literal["split", "refuse"] = "split"):
        self.chat = chat
        self.on_rewrite = on_rewrite
        self.native_tools = "tools" in (getattr(chat.tokenizer, "chat_template", None) or "")
        self.segments: list[Segment] = []
        self.requests = 0
        self.rewrites = 0
        self._context: list[dict] | None = None  # the messages the last reply followed
        self._reply: dict | None = None  # that reply, as the template renders it
        self._ended_with_eos = False
        self._tools: Any = None

    # ---- messages as the template renders them ---------------------------------
    def normalize(self, messages: list[dict], tools: list[dict] | None) -> list[dict]:
        """Plain `{"role", "content"}` messages; tool calls as the text the model writes;
        the tools described in the system message (when the template takes no tools)."""
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        out = []
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise ValueError("every message needs a string 'role'")
            role, text = m["role"], message_text(m.get("content"))
            if role == "assistant" and m.get("tool_calls") and not self.native_tools:
                calls = "\n".join(_call_text(c) for c in m["tool_calls"])
                text = f"{text}\n{calls}" if text else calls
            out.append({"role": role, "content": text})
        if tools and not self.native_tools:
            instructions = function_calling_instructions(tools)
            if out[0]["role"] == "system":
                out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + instructions}
            else:
                out.insert(0, {"role": "system", "content": instructions})
        return out

    def _template_kwargs(self) -> dict[str, Any]:
        return {"tools": self._tools} if self.native_tools and self._tools else {}

    # ---- requests ------------------------------------------------------------------
    def prompt(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """The prompt ids of a request: the current segment extended, or a new segment.

        Raises:
            HistoryRewritten: the request rewrote history and `on_rewrite="refuse"`.
            ValueError: malformed messages.
        """
        msgs = self.normalize(messages, tools)
        self.requests += 1
        if self.segments:
            n = len(self._context)
            same_tools = tools == self._tools
            if same_tools and self._reply is None and msgs == self._context:  # asked again, unanswered
                return list(self.segments[-1].ids)
            extends = self._reply is not None and len(msgs) > n + 1 and msgs[:n] == self._context
            if same_tools and extends and msgs[n] == self._reply:
                extra = self.chat.continuation_ids(
                    self._context, msgs[n + 1 :], self._ended_with_eos, **self._template_kwargs()
                )
                segment = self.segments[-1]
                segment.add(extra, trained=False)
                self._context, self._reply = msgs, None
                return list(segment.ids)
            self.rewrites += 1
            if self.on_rewrite == "refuse":
                raise HistoryRewritten(
                    f"request {self.requests} does not extend the conversation the previous reply "
                    "followed (history rewritten); episode refused (agent.on_rewrite=refuse)"
                )
        self._tools = tools
        segment = Segment()
        segment.add(self.chat.prompt_ids(msgs, **self._template_kwargs()), trained=False)
        self.segments.append(segment)
        self._context, self._reply = msgs, None
        return list(segment.ids)

    def record(
        self,
        token_ids: list[int],
        logprobs: list[float],
        weight_version: int,
        finish_reason: str,
        tool_names: list[str] | None = None,
    ) -> dict[str, Any]:
        """Add the engine's reply to the current segment; returns the OpenAI assistant
        message for it (`tool_calls` read from `<tool_call>` blocks naming `tool_names`)."""
        segment = self.segments[-1]
        segment.add(list(token_ids), trained=True, logprobs=logprobs, version=weight_version)
        segment.turns += 1
        text = self.chat.tokenizer.decode(token_ids, skip_special_tokens=True)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if tool_names:
            calls, rest = read_tool_calls(text, set(tool_names))
            if calls:
                message = {
                    "role": "assistant",
                    "content": rest or None,
                    "tool_calls": [
                        {
                            "id": "call_" + uuid.uuid4().hex[:24],
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments)},
                        }
                        for name, arguments in calls
                    ],
                }
        self._reply = self.normalize([message], None)[0]
        self._ended_with_eos = finish_reason == "stop"
        return message


__all__ = ["HistoryRewritten", "Segment", "TokenCapture", "message_text"]
