"""Agents: a model plus a prompt, answering conversations turn by turn.

An agent owns at most one local vLLM engine (`rayrl.agent.inference`), started by
`initialize()` and freed by `shutdown()`. Starting one takes tens of seconds and
blocks, so it runs in a worker thread and the event loop keeps serving. The
engine is not thread-safe; one lock per agent serializes its use, and it is a
`threading.Lock` rather than an `asyncio.Lock` because guides call
`asyncio.run` several times on one agent, and an asyncio lock binds to one loop.

The engine is never part of an agent's state: pickling or deep-copying an agent
drops it (the trainer ships agents to Ray actors, which run their own engines),
and the copy starts a fresh one on first use. After training,
`load_weights_from(path)` points the same agent at the trained weights.

The agent layer sits below the actors: nothing here imports Ray, the trainer,
torch or vLLM at module level.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rayrl.agent.conversation import ConversationTurn
from rayrl.agents.config import AgentConfig

if TYPE_CHECKING:
    from rayrl.agent.inference import VLLMInferenceEngine

Message = Mapping[str, Any] | ConversationTurn
"""A chat dict `{"role": ..., "content": ...}` or a `ConversationTurn`."""

_AgentT = TypeVar("_AgentT", bound="Agent")


def to_messages(items: Iterable[Message], what: str = "messages") -> list[dict[str, str]]:
    """Chat dicts or turns as plain chat-template messages.

    Args:
        items: the conversation.
        what: how the argument is named in error messages.

    Raises:
        TypeError: `items` is a string or holds something that is neither a dict nor a turn.
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(
            f"{what} must be a list of chat dicts or ConversationTurn, got {type(items).__name__}"
        )
    out = []
    for i, item in enumerate(items):
        if isinstance(item, ConversationTurn):
            out.append(item.to_message())
        elif isinstance(item, Mapping):
            if "role" not in item:
                raise TypeError(f"{what}[{i}] has no 'role' key")
            out.append({"role": str(item["role"]), "content": str(item.get("content") or "")})
        else:
            raise TypeError(f"{what}[{i}] must be a chat dict or ConversationTurn, got {type(item).__name__}")
    return out


def apply_memory_window(messages: Sequence[dict[str, str]], window: int | None) -> list[dict[str, str]]:
    """Keep a leading system message plus the last `window` other messages.

    Args:
        messages: chat messages, oldest first.
        window: messages to keep after the system message; None keeps all.
    """
    if window is None:
        return list(messages)
    if window < 1:
        raise ValueError(f"memory window must be >= 1 or None, got {window}")
    head = list(messages[:1]) if messages and messages[0]["role"] == "system" else []
    return head + list(messages[len(head) :])[-window:]


def check_model_folder(path: str | Path) -> Path:
    """`path` as an absolute folder that holds a Hugging Face `config.json` (for a
    full-state checkpoint folder, its `policy/`).

    Raises:
        FileNotFoundError: the folder or its config.json is missing (the message names the path).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
    if not (folder / "config.json").is_file() and (folder / "policy" / "config.json").is_file():
        folder = folder / "policy"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{str(folder)!r} holds no config.json: not a saved Hugging Face model")
    return folder.resolve()


class Agent(ABC):
    """Base class of agents: engine lifecycle and generation from chat messages.

    Subclasses implement `process_turn`. Generation is lazy: the first
    `generate_response` starts the engine when `initialize` was not awaited.

    Args:
        config: model, prompt and sampling settings (default: `AgentConfig()`). The
            agent keeps its own copy, so agents built from one config stay independent
            when one of them is pointed at trained weights.
    """

    def __init__(self, config: AgentConfig | None = None):
        if config is None:
            config = AgentConfig()
        if not isinstance(config, AgentConfig):
            raise TypeError(f"config must be an AgentConfig, got {type(config).__name__}")
        self.config = config.model_copy(deep=True)
        self._engine: VLLMInferenceEngine | None = None
        self._owns_engine = False
        self._engine_lock = threading.Lock()

    # ---- identity ---------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The model the agent generates with (after training: the trained folder)."""
        return self.config.model_name

    @property
    def system_prompt(self) -> str | None:
        """The system message put in front of conversations (subclasses may extend it)."""
        return self.config.system_prompt

    @property
    def engine(self) -> VLLMInferenceEngine | None:
        """The running engine, or None before `initialize` / after `shutdown`."""
        return self._engine

    @property
    def is_initialized(self) -> bool:
        """Whether a running engine is attached (a shared engine its owner shut down is not)."""
        return self._engine is not None and getattr(self._engine, "llm", None) is not None

    # ---- engine lifecycle -----------------------------------------------
    async def initialize(self: _AgentT) -> _AgentT:
        """Start the local engine for `model_name`; does nothing when one runs.

        Returns:
            The agent, so that `agent = await MultiTurnAgent(config).initialize()` works.
        """
        if not self.is_initialized and not self.config.endpoint:
            await asyncio.to_thread(self._start_engine)
        return self

    def _start_engine(self) -> None:
        with self._engine_lock:
            if self.is_initialized:  # another caller started it while this one waited
                return
            from rayrl.agent.inference import create_inference_engine

            c = self.config
            self._engine = create_inference_engine(
                c.model_name,
                dtype=c.dtype,
                max_model_len=c.max_model_len,
                kv_cache_gb=c.kv_cache_gb,
                temperature=c.temperature,
                seed=c.seed,
            )
            self._owns_engine = True

    def use_engine(self, engine: VLLMInferenceEngine) -> None:
        """Generate with an engine started elsewhere (shared between agents; not shut down by this one).

        Args:
            engine: a running engine of this agent's model.

        Raises:
            ValueError: the engine serves another model than `model_name`.
        """
        from rayrl.model_store import resolve_model

        wanted = os.path.realpath(resolve_model(self.config.model_name))
        if os.path.realpath(engine.model_path) != wanted:
            raise ValueError(
                f"the engine serves {engine.model_path!r} but the agent's model_name is "
                f"{self.config.model_name!r} ({wanted})"
            )
        self._release_engine()
        with self._engine_lock:
            self._engine, self._owns_engine = engine, False

    async def shutdown(self) -> None:
        """Free the engine (a shared one is only detached). The agent stays usable:
        the next generation starts a new engine."""
        await asyncio.to_thread(self._release_engine)

    close = shutdown

    def _release_engine(self) -> None:
        with self._engine_lock:
            engine, owned = self._engine, self._owns_engine
            self._engine, self._owns_engine = None, False
            if engine is not None and owned:
                engine.shutdown()

    async def __aenter__(self: _AgentT) -> _AgentT:
        return await self.initialize()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # ---- trained weights ----------------------------------------------------
    def load_weights_from(self, path: str | Path) -> None:
        """Point the agent at a saved model folder (e.g. the policy training wrote).

        A running engine is shut down (this blocks while it stops); the next
        `initialize` or generation loads the new weights.

        Args:
            path: a Hugging Face model folder.

        Raises:
            FileNotFoundError: the folder or its config.json is missing.
        """
        folder = check_model_folder(path)
        self._release_engine()
        self.config.model_name = str(folder)

    def with_model(self: _AgentT, path: str | Path) -> _AgentT:
        """A copy of this agent (without engine) that generates with the model at `path`.

        Args:
            path: a Hugging Face model folder.
        """
        folder = check_model_folder(path)
        clone = copy.deepcopy(self)
        clone.config.model_name = str(folder)
        return clone

    # ---- pickling: never the engine ---------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_engine"] = None
        state["_owns_engine"] = False
        state.pop("_engine_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._engine_lock = threading.Lock()

    # ---- generation -----------------------------------------------------------
    def prepare_messages(self, messages: Iterable[Message]) -> list[dict[str, str]]:
        """The messages as they are sent: system prompt in front, memory window applied.

        Args:
            messages: the conversation; a leading system message replaces the agent's own.

        Raises:
            ValueError: there is no message to answer.
        """
        out = to_messages(messages)
        if not any(m["role"] != "system" for m in out):
            raise ValueError("messages hold nothing to answer: give at least one non-system message")
        system = self.system_prompt
        if system and out[0]["role"] != "system":
            out.insert(0, {"role": "system", "content": system})
        return apply_memory_window(out, self.config.memory_window)

    async def generate_response(
        self,
        messages: Iterable[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> str:
        """The agent's next reply to a conversation (starts the engine if needed).

        Args:
            messages: chat dicts or turns, oldest first.
            max_new_tokens: overrides the config for this reply.
            temperature: overrides the config for this reply.

        Returns:
            The reply text, without surrounding whitespace.
        """
        prepared = self.prepare_messages(messages)
        if self.config.endpoint:
            return (await self._generate_remote(prepared, max_new_tokens, temperature)).strip()
        if not self.is_initialized:
            await self.initialize()
        text = await asyncio.to_thread(self._generate, prepared, max_new_tokens, temperature)
        return text.strip()

    async def _generate_remote(
        self, messages: list[dict[str, str]], max_new_tokens: int | None, temperature: float | None
    ) -> str:
        """The reply from `config.endpoint` (an OpenAI-compatible server such as `rayrl serve`)."""
        from openai import AsyncOpenAI

        c = self.config
        async with AsyncOpenAI(base_url=c.endpoint, api_key=c.endpoint_token or "none") as client:
            reply = await client.chat.completions.create(
                model=c.model_name,
                messages=messages,
                max_tokens=max_new_tokens or c.max_new_tokens,
                temperature=c.temperature if temperature is None else temperature,
                top_p=c.top_p,
                stop=list(c.stop) or None,
            )
        return reply.choices[0].message.content or ""

    def _generate(
        self, messages: list[dict[str, str]], max_new_tokens: int | None, temperature: float | None
    ) -> str:
        from vllm import SamplingParams

        with self._engine_lock:
            engine = self._engine
            if not self.is_initialized:
                raise RuntimeError("the agent's engine was shut down while a reply was pending")
            token_ids, room = self._fit_prompt(engine, messages)
            c = self.config
            params = SamplingParams(
                max_tokens=min(max_new_tokens or c.max_new_tokens, room),
                temperature=c.temperature if temperature is None else temperature,
                top_p=c.top_p,
                stop=list(c.stop) or None,
            )
            outputs = engine.llm.generate([{"prompt_token_ids": token_ids}], params, use_tqdm=False)
        return outputs[0].outputs[0].text

    @staticmethod
    def _fit_prompt(engine: VLLMInferenceEngine, messages: list[dict[str, str]]) -> tuple[list[int], int]:
        """Token ids of the rendered prompt and the room left for the reply.

        The prompt is tokenized here, not by vLLM, so that its length is exact.
        When it leaves no room, the oldest non-system messages go first: a
        reply to the recent conversation beats an engine error.
        """
        limit = engine.llm.llm_engine.model_config.max_model_len
        keep = list(messages)
        while True:
            ids = engine.tokenizer.encode(engine.render(keep), add_special_tokens=False)
            if len(ids) < limit:
                return ids, limit - len(ids)
            first = 1 if keep[0]["role"] == "system" else 0
            if len(keep) - first <= 1:
                raise ValueError(
                    f"the prompt takes {len(ids)} tokens even with only the last message; "
                    f"the engine's max_model_len is {limit}"
                )
            del keep[first]

    # ---- turns ------------------------------------------------------------
    @abstractmethod
    async def process_turn(
        self,
        history: Sequence[Message],
        user_input: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> ConversationTurn:
        """The agent's turn after `history` and the user's new message.

        Args:
            history: earlier turns (chat dicts or `ConversationTurn`), oldest first.
            user_input: the user's new message; None when `history` already ends with it.
            context: episode information from the environment, for subclasses.
        """


class MultiTurnAgent(Agent):
    """An agent for multi-turn conversations: each turn answers the whole history
    (within the memory window).

    Subclasses customize a turn by overriding `process_turn` and calling
    `await super().process_turn(...)`, or the messages it sends by overriding
    `build_messages`.

    Args:
        config: model, prompt and sampling settings.
    """

    def build_messages(
        self,
        history: Sequence[Message],
        user_input: str | None,
        context: dict[str, Any] | None = None,
    ) -> list[dict[str, str]]:
        """The conversation a turn answers: `history` plus the new user message.

        Args:
            history: earlier turns, oldest first.
            user_input: the new user message (None: not appended).
            context: episode information (unused here; for subclasses).
        """
        messages = to_messages(history, "history")
        if user_input is not None:
            if not isinstance(user_input, str):
                raise TypeError(f"user_input must be a str or None, got {type(user_input).__name__}")
            messages.append({"role": "user", "content": user_input})
        return messages

    async def process_turn(
        self,
        history: Sequence[Message],
        user_input: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> ConversationTurn:
        """The assistant's reply to `history` plus `user_input`.

        Args:
            history: earlier turns (chat dicts or `ConversationTurn`), oldest first.
            user_input: the user's new message; None when `history` already ends with it.
            context: episode information, passed to `build_messages`.

        Returns:
            An assistant turn; `metadata` holds `model` and `generation_s`.
        """
        return await self.respond(self.build_messages(history, user_input, context))

    async def respond(self, messages: Sequence[Message]) -> ConversationTurn:
        """One generated reply to `messages`, as an assistant turn.

        Args:
            messages: the whole conversation to answer.

        Returns:
            An assistant turn; `metadata` holds `model` and `generation_s`.
        """
        start = time.perf_counter()
        reply = await self.generate_response(messages)
        return ConversationTurn(
            role="assistant",
            content=reply,
            metadata={"model": self.model_name, "generation_s": round(time.perf_counter() - start, 3)},
        )


__all__ = [
    "Agent",
    "Message",
    "MultiTurnAgent",
    "apply_memory_window",
    "check_model_folder",
    "to_messages",
]
