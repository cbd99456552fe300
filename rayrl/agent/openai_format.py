"""OpenAI chat-completions bodies: requests read, responses and errors written.

Shared by the training-time endpoint (`rayrl.actors.agent_drivers.AgentEndpoint`) and
the serving deployment (`rayrl.serve`): both take the same requests and answer in the
same shapes, so an agent written against the `openai` client works with either.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any


class RequestError(ValueError):
    """A request the server refuses, with its HTTP status and OpenAI error type."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind

    def body(self) -> dict[str, Any]:
        return error_body(self.status, str(self), self.kind)


def error_body(status: int, message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": status}}


@dataclass
class ChatRequest:
    """The fields of a chat-completions request that a server acts on."""

    messages: list[dict]
    tools: list[dict] | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    stream: bool
    include_usage: bool
    logprobs: bool
    model: str | None
    stop: list[str]

    @property
    def tool_names(self) -> list[str]:
        return [t.get("function", {}).get("name") for t in self.tools or []]


def _number(body: dict, key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(400, f"{key} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def read_chat_request(body: Any) -> ChatRequest:
    """Check a decoded request body; malformed fields raise `RequestError(400)`."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list")
    if body.get("n", 1) != 1:
        raise RequestError(400, "n must be 1")
    tools = body.get("tools") or None
    if tools is not None:
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance((t.get("function") or {}).get("name"), str) for t in tools
        ):
            raise RequestError(400, "tools must be a list of OpenAI tool schemas, each with function.name")
    if body.get("tool_choice") == "none":
        tools = None
    asked = body.get("max_completion_tokens", body.get("max_tokens"))
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 1):
        raise RequestError(400, f"max_tokens must be a positive integer, got {asked!r}")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(400, f"seed must be an integer, got {seed!r}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, f"stream must be true or false, got {stream!r}")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(x, str) and x for x in stop):
        raise RequestError(400, "stop must be a string or a list of up to 4 non-empty strings")
    options = body.get("stream_options") or {}
    model = body.get("model")
    return ChatRequest(
        messages=messages,
        tools=tools,
        max_tokens=asked,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 1e-6, 1.0),
        seed=seed,
        stream=stream,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        logprobs=bool(body.get("logprobs")),
        model=model if isinstance(model, str) else None,
        stop=stop,
    )


def finish_reason(message: dict, engine_finish: str | None) -> str:
    if "tool_calls" in message:
        return "tool_calls"
    return "length" if engine_finish == "length" else "stop"


def token_logprobs(token_ids: list[int], logprobs: list[float]) -> dict[str, Any]:
    """Per-token log-probs, the ids written as vLLM does (`token_id:<id>`)."""
    return {
        "content": [
            {"token": f"token_id:{t}", "logprob": lp, "bytes": None, "top_logprobs": []}
            for t, lp in zip(token_ids, logprobs, strict=True)
        ]
    }


def chat_completion(
    message: dict, finish: str, model: str, n_prompt: int, n_out: int, logprobs: dict | None = None
) -> dict[str, Any]:
    """A whole `chat.completion` body with one choice."""
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}],
        "usage": usage(n_prompt, n_out),
    }


def usage(n_prompt: int, n_out: int) -> dict[str, int]:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}


def chunk(cid: str, model: str, delta: dict | None, finish: str | None = None, **extra: Any) -> dict:
    """One `chat.completion.chunk` of a stream (`delta=None`: a usage-only chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }


def tool_call_deltas(calls: list[dict]) -> list[dict]:
    """A message's `tool_calls` as the indexed entries of a stream delta."""
    return [{"index": i, **call} for i, call in enumerate(calls)]


__all__ = [
    "ChatRequest",
    "RequestError",
    "chat_completion",
    "chunk",
    "error_body",
    "finish_reason",
    "read_chat_request",
    "token_logprobs",
    "tool_call_deltas",
    "usage",
]
