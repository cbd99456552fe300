"""Reward functions: score a finished conversation, alone or as a weighted mix.

An environment's `step` reward is whatever its task defines. The rewards here are
the reusable layer on top: functions of the whole transcript (correctness against
a reference, length, tool-call validity, a few conversational heuristics) that a
run mixes with `CompositeReward` and names in its config as `module:function`
(`load_reward`).

Every built-in is deterministic and CPU-only, so a score is a pure function of the
transcript and the spread inside a GRPO group comes from the policy alone. The
conversational ones (`HelpfulnessReward`, `SafetyReward`, `EngagementReward`) are
transparent heuristics (word lists, regexes, word overlap), not a learned judge:
cheap baselines that a policy can learn to game. A model-judged rubric plugs in as
a custom `RewardFunction` whose `acompute` awaits the judge.

A reward is written one of two ways. Against the transcript: `compute(episode)`
gets an `EpisodeTranscript`. Against the conversation, as the seed 002 agent guide
writes them: `compute_reward(turns, context)` gets the messages as
`ConversationTurn`s and a plain dict of the rest (`episode_context`). The base
class converts between the two, so either kind works everywhere (`compute`,
`acompute`, `__call__`, `CompositeReward`, `score_turns`).

IMMEDIATE rewards score each assistant turn on the conversation up to it:
`score_turns` gives the agent loop one score per assistant turn, so that each
score can land on the tokens of its own turn.

A reward bug must not stop a training run: `CompositeReward` scores a component
that raises as 0 and records the error in the result's metadata.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import math
import numbers
import re
import select
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from rayrl.agent.conversation import ConversationTurn, as_messages, as_turns
from rayrl.config import ConfigError

logger = logging.getLogger(__name__)


class RewardType(Enum):
    """When a reward is meant to be called.

    `compute` is the same either way; the type tells the caller what to pass:
    IMMEDIATE rewards score each assistant turn (the transcript up to that turn,
    its reply as `response`; see `score_turns`), EPISODE rewards score the
    finished episode once.
    """

    IMMEDIATE = "immediate"
    EPISODE = "episode"


@dataclass
class RewardResult:
    """What a reward returns.

    Args:
        score: the reward (unweighted; `CompositeReward` applies weights).
        breakdown: named parts of the score, for logging.
        metadata: anything else worth logging (errors, extracted answers).
    """

    score: float
    breakdown: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.score = float(self.score)


@dataclass
class EpisodeTranscript:
    """The text view of one episode that rewards score.

    Args:
        messages: the conversation, `{"role": ..., "content": ...}` dicts in order.
        response: the final assistant reply. When empty, the content of the last
            assistant message; when given and not the last assistant message, it is
            appended to `messages` as one (so `messages` always holds it).
        reference: the reference answer, if the task has one.
        task: the task the episode was played on (CorrectnessReward reads
            `task["answer"]` when `reference` is None).
        turn_rewards: the environment's reward for each step.
        total_reward: the environment's reward for the episode; None means the sum
            of `turn_rewards`.
        num_turns: assistant turns played; 0 means the number of assistant messages.
        successful_tool_calls: tool calls that ran and returned a result.
        failed_tool_calls: tool calls that could not be parsed or raised.
        info: anything else the episode reported.
    """

    messages: list[dict[str, Any]] = field(default_factory=list)
    response: str = ""
    reference: Any = None
    task: Any = None
    turn_rewards: list[float] = field(default_factory=list)
    total_reward: float | None = None
    num_turns: int = 0
    successful_tool_calls: int = 0
    failed_tool_calls: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        replies = self.assistant_messages
        if not self.response and replies:
            self.response = replies[-1]
        elif self.response and (not replies or replies[-1] != self.response):
            self.messages = [*self.messages, {"role": "assistant", "content": self.response}]
        if not self.num_turns:
            self.num_turns = len(self.assistant_messages)
        total = sum(self.turn_rewards) if self.total_reward is None else self.total_reward
        self.total_reward = float(total)

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], **overrides: Any) -> EpisodeTranscript:
        """Build a transcript from an episode summary dict, as the seeds' `run_episode` returns.

        Reads `messages` (or `conversation`), `final_response` (or `response`),
        `reference`, `task`, `turn_rewards`, `total_reward`, `num_turns` and
        `tools` = {`successful_tool_calls`, `failed_tool_calls`, `total_tool_calls`};
        failed calls default to total minus successful. Other keys land in `info`,
        and so do the entries of an `info` dict (the agent loop's last step info).

        Args:
            summary: the episode summary.
            overrides: fields to set instead of what the summary says (e.g. `reference=`).
        """
        known = {"messages", "conversation", "final_response", "response", "reference", "task"}
        known |= {"turn_rewards", "total_reward", "num_turns", "tools"}
        tools = dict(summary.get("tools") or {})
        nested = summary.get("info")
        info = dict(nested) if isinstance(nested, Mapping) else {}
        skip = known | {"info"} if isinstance(nested, Mapping) else known
        info.update((k, v) for k, v in summary.items() if k not in skip)
        ok = int(tools.get("successful_tool_calls", 0))
        total = int(tools.get("total_tool_calls", ok))
        fields: dict[str, Any] = {
            "messages": list(summary.get("messages", summary.get("conversation")) or []),
            "response": summary.get("final_response", summary.get("response")) or "",
            "reference": summary.get("reference"),
            "task": summary.get("task"),
            "turn_rewards": [float(r) for r in summary.get("turn_rewards", [])],
            "total_reward": summary.get("total_reward"),
            "num_turns": int(summary.get("num_turns", 0)),
            "successful_tool_calls": ok,
            "failed_tool_calls": int(tools.get("failed_tool_calls", total - ok)),
            "info": info,
        }
        fields.update(overrides)
        return cls(**fields)

    @property
    def assistant_messages(self) -> list[str]:
        """Contents of the assistant messages, in order."""
        return [_content(m) for m in self.messages if m.get("role") == "assistant"]

    @property
    def user_messages(self) -> list[str]:
        """Contents of the user messages before the final response (the last assistant message)."""
        last_reply = max(
            (i for i, m in enumerate(self.messages) if m.get("role") == "assistant"), default=None
        )
        end = last_reply if last_reply is not None else len(self.messages)
        return [_content(m) for m in self.messages[:end] if m.get("role") == "user"]

    @property
    def question(self) -> str:
        """The user message the final response answers (empty if there is none)."""
        users = self.user_messages
        return users[-1] if users else ""


def _content(message: Mapping[str, Any]) -> str:
    return str(message.get("content") or "")


def as_transcript(episode: EpisodeTranscript | Mapping[str, Any]) -> EpisodeTranscript:
    """`episode` itself, or a transcript built from a summary dict."""
    if isinstance(episode, EpisodeTranscript):
        return episode
    return EpisodeTranscript.from_summary(episode)


_CONTEXT_FIELDS = (
    "task",
    "reference",
    "turn_rewards",
    "total_reward",
    "num_turns",
    "successful_tool_calls",
    "failed_tool_calls",
)


def episode_context(episode: EpisodeTranscript) -> dict[str, Any]:
    """The `context` a turn-based reward (`compute_reward(turns, context)`) receives.

    The environment's own context (`episode.info["context"]`, e.g. a task's
    "completed_actions"), then "task", "reference", "response", "turn_rewards",
    "total_reward", "num_turns", "successful_tool_calls", "failed_tool_calls" and
    "info" from the transcript (these win on a name clash).

    Args:
        episode: the transcript.
    """
    env_context = episode.info.get("context")
    context = dict(env_context) if isinstance(env_context, Mapping) else {}
    context.update({name: getattr(episode, name) for name in _CONTEXT_FIELDS})
    context.update(
        turn_rewards=list(episode.turn_rewards), response=episode.response, info=dict(episode.info)
    )
    return context


def transcript_from_turns(
    turns: Sequence[ConversationTurn | Mapping[str, Any]], context: Mapping[str, Any] | None = None
) -> EpisodeTranscript:
    """The transcript a transcript-based reward (`compute(episode)`) receives for `turns`.

    The inverse of `episode_context`: the transcript fields named in `context` are
    read back, and its other keys (minus "response", which the turns define) go to
    `info["context"]`, so that `episode_context` of the result gives them back.

    Args:
        turns: the conversation.
        context: as `episode_context` builds it, or any dict.
    """
    context = dict(context or {})
    fields = {name: context[name] for name in _CONTEXT_FIELDS if context.get(name) is not None}
    info = dict(context["info"]) if isinstance(context.get("info"), Mapping) else {}
    extra = {k: v for k, v in context.items() if k not in (*_CONTEXT_FIELDS, "info", "response")}
    if extra:
        info["context"] = {**(info.get("context") or {}), **extra}
    return EpisodeTranscript(messages=as_messages(turns), info=info, **fields)


def _snake(name: str) -> str:
    name = name.removesuffix("Reward") or name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class RewardFunction:
    """Base class of every reward: subclass it and implement `compute` or `compute_reward`.

    `compute(episode)` scores an `EpisodeTranscript`; `compute_reward(turns,
    context=None)`, sync or async, scores the conversation as `ConversationTurn`s
    with the rest of the episode in `context` (see `episode_context`). Implement
    one; the base class derives the other, so both kinds work wherever a reward is
    used. Either may return a `RewardResult` or a float.

    Override `acompute` as well when a transcript-based reward waits on I/O (a
    judge model behind an HTTP endpoint), or write `compute_reward` as async; the
    default runs sync code in a worker thread so that a slow reward never blocks
    the event loop of the episodes around it.

    Args:
        weight: multiplier a `CompositeReward` applies to this reward's score
            (a reward used alone is not scaled).
        reward_type: when the reward is meant to be called (see `RewardType`).
        name: key of this reward in a composite's breakdown; default the class name
            in snake case without "Reward" (`CorrectnessReward` -> "correctness").
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> RewardFunction:
        # checked here rather than with @abstractmethod because either method will do
        if cls.compute is RewardFunction.compute and cls.compute_reward is RewardFunction.compute_reward:
            raise TypeError(
                f"cannot instantiate {cls.__name__}: implement compute(self, episode) "
                "or compute_reward(self, turns, context=None)"
            )
        return super().__new__(cls)

    def __init__(
        self, weight: float = 1.0, reward_type: RewardType = RewardType.EPISODE, name: str | None = None
    ):
        self.weight = float(weight)
        self.reward_type = RewardType(reward_type)
        self.name = name or _snake(type(self).__name__)

    def compute(self, episode: EpisodeTranscript) -> RewardResult:
        """Score `episode`; by default `compute_reward` on its turns and context.

        Args:
            episode: the transcript to score.
        """
        return _score_turns_once(self, as_turns(episode.messages), episode_context(episode))

    async def acompute(self, episode: EpisodeTranscript) -> RewardResult:
        """Score `episode` without blocking the event loop.

        Args:
            episode: the transcript to score.
        """
        if type(self).compute is RewardFunction.compute:
            return await _ascore_turns_once(self, as_turns(episode.messages), episode_context(episode))
        # a user's compute may return a plain number
        return _as_result(await asyncio.to_thread(self.compute, episode), self.name)

    async def compute_reward(
        self, turns: Sequence[ConversationTurn], context: Mapping[str, Any] | None = None
    ) -> RewardResult | float:
        """Score the conversation `turns`; by default `acompute` on the matching transcript.

        Args:
            turns: the conversation, user and assistant turns in order.
            context: the rest of the episode (see `episode_context`).
        """
        return await self.acompute(transcript_from_turns(turns, context))

    def _scores_turns(self) -> bool:
        """Whether the reward is written against turns (`compute_reward`)."""
        return type(self).compute_reward is not RewardFunction.compute_reward

    def _turn_call(self) -> Callable[[list[ConversationTurn], dict[str, Any]], Any]:
        """The user's `(turns, context) -> score` callable (sync or async)."""
        return self.compute_reward

    def __call__(
        self,
        episode: EpisodeTranscript | Mapping[str, Any] | Sequence[ConversationTurn | Mapping[str, Any]],
        context: Mapping[str, Any] | None = None,
    ) -> float:
        """The unweighted score, so that a reward can be passed wherever a
        `reward_fn(episode_summary) -> float` is expected.

        Args:
            episode: a transcript, an episode summary dict, or the conversation as
                turns or chat dicts.
            context: with turns, the rest of the episode (see `episode_context`).
        """
        if isinstance(episode, EpisodeTranscript | Mapping):
            return _as_result(self.compute(as_transcript(episode)), self.name).score
        return _score_turns_once(self, as_turns(episode), dict(context or {})).score

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, weight={self.weight}, reward_type={self.reward_type.name})"


def _as_result(value: Any, name: str) -> RewardResult:
    if isinstance(value, RewardResult):
        return value
    if isinstance(value, numbers.Real):
        return RewardResult(float(value))
    raise TypeError(f"reward {name!r} returned {type(value).__name__}; expected a float or RewardResult")


def _score_turns_once(
    reward: RewardFunction, turns: list[ConversationTurn], context: dict[str, Any]
) -> RewardResult:
    """`reward`'s result on `turns`, through whichever of its methods the user wrote."""
    if not reward._scores_turns():
        return reward.compute(transcript_from_turns(turns, context))
    value = reward._turn_call()(turns, context)
    if inspect.isawaitable(value):
        value = _run_to_completion(value, reward.name)
    return _as_result(value, reward.name)


async def _ascore_turns_once(
    reward: RewardFunction, turns: list[ConversationTurn], context: dict[str, Any]
) -> RewardResult:
    """Async `_score_turns_once`: awaits async user code, runs sync user code in a thread."""
    if not reward._scores_turns():
        return await reward.acompute(transcript_from_turns(turns, context))
    call = reward._turn_call()
    if _is_async(call):
        value = await call(turns, context)
    else:
        value = await asyncio.to_thread(call, turns, context)
        if inspect.isawaitable(value):
            value = await value
    return _as_result(value, reward.name)


def _is_async(fn: Any) -> bool:
    if isinstance(fn, _DropContext):
        fn = fn.fn
    return inspect.iscoroutinefunction(fn)


def _assistant_prefixes(
    episode: EpisodeTranscript | Mapping[str, Any] | Sequence[ConversationTurn | Mapping[str, Any]],
    context: Mapping[str, Any] | None,
) -> list[tuple[list[ConversationTurn], dict[str, Any]]]:
    """(turns up to and including assistant turn k, its context) for each assistant turn k."""
    if isinstance(episode, EpisodeTranscript | Mapping):
        transcript = as_transcript(episode)
        turns, base = as_turns(transcript.messages), episode_context(transcript)
    else:
        turns, base = as_turns(episode), {}
    base.update(context or {})
    prefixes = []
    for i, turn in enumerate(turns):
        if turn.role == "assistant":
            k = len(prefixes)
            prefixes.append(
                (turns[: i + 1], {**base, "turn_index": k, "num_turns": k + 1, "response": turn.content})
            )
    return prefixes


def _check_immediate(reward: RewardFunction) -> None:
    if reward.reward_type is not RewardType.IMMEDIATE:
        raise ValueError(
            f"reward {reward.name!r} is {reward.reward_type.name}; score_turns scores IMMEDIATE rewards "
            "(score an EPISODE reward once with compute/acompute)"
        )


def score_turns(
    reward: RewardFunction,
    episode: EpisodeTranscript | Mapping[str, Any] | Sequence[ConversationTurn | Mapping[str, Any]],
    context: Mapping[str, Any] | None = None,
) -> list[float]:
    """One score per assistant turn of an IMMEDIATE reward, in order.

    Assistant turn k is scored on the conversation up to and including it, as
    `compute_reward(turns[:i + 1], context)` for a turn-based reward or `compute` on
    that prefix's transcript (its reply is the `response`) for a transcript-based
    one. The context is the episode's (see `episode_context`), updated with
    `context`, plus "turn_index" (k), "num_turns" (k + 1) and "response" (the
    reply); episode-level entries such as "total_reward" describe the whole
    episode. Scores are unweighted, like `__call__`: apply `reward.weight`
    yourself when mixing. Pure: nothing is stored between calls.

    Sync user code runs in the calling thread; an async reward needs
    `ascore_turns` when an event loop is running.

    Args:
        reward: an IMMEDIATE reward.
        episode: a transcript, an episode summary dict, or the messages (chat dicts
            or `ConversationTurn`s).
        context: entries added to (or replacing) the context of every turn.

    Raises:
        ValueError: the reward is not IMMEDIATE (an EPISODE reward is scored once).
        Exception: whatever the reward raises, unchanged (the caller decides what a
            failed reward costs).
    """
    _check_immediate(reward)
    return [
        _score_turns_once(reward, turns, ctx).score for turns, ctx in _assistant_prefixes(episode, context)
    ]


async def ascore_turns(
    reward: RewardFunction,
    episode: EpisodeTranscript | Mapping[str, Any] | Sequence[ConversationTurn | Mapping[str, Any]],
    context: Mapping[str, Any] | None = None,
) -> list[float]:
    """`score_turns` for use inside an event loop: async rewards are awaited, sync ones
    run in a worker thread; turns are scored one after another.

    Args:
        reward: an IMMEDIATE reward.
        episode: as for `score_turns`.
        context: as for `score_turns`.
    """
    _check_immediate(reward)
    return [
        (await _ascore_turns_once(reward, turns, ctx)).score
        for turns, ctx in _assistant_prefixes(episode, context)
    ]


class FunctionReward(RewardFunction):
    """A plain function as a RewardFunction.

    The function is called one of two ways, read from its signature unless
    `call_with` says: with "turns" (`fn(turns, context)`: the messages as
    `ConversationTurn`s and the context of `episode_context`) when its first
    parameter is named `turns` or it takes two positional parameters and the first
    is not named `episode`; else with "episode" (`fn(episode)`, an
    `EpisodeTranscript`). A function whose only parameter is `turns` gets no
    context. It returns a float or a RewardResult.

    Async functions work too: `acompute` awaits them, and `compute` runs them to
    completion when no event loop is running in the calling thread.

    Args:
        fn: the function.
        weight: as for `RewardFunction`.
        reward_type: as for `RewardFunction`.
        name: as for `RewardFunction`; default the function's name.
        call_with: "turns" or "episode"; default read from the signature.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        weight: float = 1.0,
        reward_type: RewardType = RewardType.EPISODE,
        name: str | None = None,
        call_with: Literal["turns", "episode"] | None = None,
    ):
        super().__init__(weight, reward_type, name or getattr(fn, "__name__", None) or "function")
        if call_with not in (None, "turns", "episode"):
            raise ValueError(f"call_with must be 'turns', 'episode' or None, got {call_with!r}")
        positional = _positional_parameters(fn)
        if call_with is None:
            names = positional or []
            first = names[0] if names else None
            takes_turns = first == "turns" or (first != "episode" and len(names) >= 2)
            call_with = "turns" if takes_turns else "episode"
        self.fn = fn
        self.call_with = call_with
        # a `(turns)`-only function has nowhere to put the context
        self._pass_context = positional is None or len(positional) >= 2
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def _scores_turns(self) -> bool:
        return self.call_with == "turns"

    def _turn_call(self) -> Callable[[list[ConversationTurn], dict[str, Any]], Any]:
        return self.fn if self._pass_context else _DropContext(self.fn)

    def compute(self, episode: EpisodeTranscript) -> RewardResult:
        if self.call_with == "turns":
            return _score_turns_once(self, as_turns(episode.messages), episode_context(episode))
        value = self.fn(episode)
        if inspect.isawaitable(value):
            value = _run_to_completion(value, self.name)
        return _as_result(value, self.name)

    async def acompute(self, episode: EpisodeTranscript) -> RewardResult:
        if self.call_with == "turns":
            return await _ascore_turns_once(self, as_turns(episode.messages), episode_context(episode))
        if inspect.iscoroutinefunction(self.fn):
            return _as_result(await self.fn(episode), self.name)
        return await asyncio.to_thread(self.compute, episode)

    async def compute_reward(
        self, turns: Sequence[ConversationTurn], context: Mapping[str, Any] | None = None
    ) -> RewardResult | float:
        if self.call_with == "turns":
            return await _ascore_turns_once(self, as_turns(turns), dict(context or {}))
        return await super().compute_reward(turns, context)


def _positional_parameters(fn: Callable[..., Any]) -> list[str] | None:
    """Names of `fn`'s positional parameters; None when it takes `*args` or has no signature."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in positional]


class _DropContext:
    """`fn(turns)` called as `(turns, context)`; a class, not a closure, so it pickles."""

    def __init__(self, fn: Callable[[list[ConversationTurn]], Any]):
        self.fn = fn

    def __call__(self, turns: list[ConversationTurn], context: dict[str, Any]) -> Any:
        return self.fn(turns)


def _run_to_completion(awaitable: Awaitable[Any], name: str) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def wait() -> Any:
            return await awaitable

        return asyncio.run(wait())
    if inspect.iscoroutine(awaitable):
        awaitable.close()
    raise RuntimeError(f"async reward {name!r} called with compute() inside an event loop; await acompute()")


def reward_function(
    weight: float = 1.0,
    reward_type: RewardType = RewardType.EPISODE,
    name: str | None = None,
    call_with: Literal["turns", "episode"] | None = None,
) -> Callable[[Callable[..., Any]], FunctionReward]:
    """Decorator that turns a function into a `FunctionReward`.

    The function is `fn(episode)` or `fn(turns, context=None)`, sync or async,
    returning a float or RewardResult (see `FunctionReward` for how the two are
    told apart). Use it with parentheses: `@reward_function(weight=0.5)`.

    Args:
        weight: as for `RewardFunction`.
        reward_type: as for `RewardFunction`.
        name: as for `RewardFunction`; default the function's name.
        call_with: as for `FunctionReward`.
    """
    if callable(weight):
        raise TypeError("use @reward_function() with parentheses (weight, reward_type and name are optional)")

    def wrap(fn: Callable[..., Any]) -> FunctionReward:
        return FunctionReward(fn, weight=weight, reward_type=reward_type, name=name, call_with=call_with)

    return wrap


class CompositeReward(RewardFunction):
    """A weighted sum of named rewards.

    `score = sum(weights[name] * breakdown[name])`, where `breakdown[name]` is that
    component's unweighted score and `weights[name]` comes, in order of precedence,
    from the `weights` argument, else the component's own `weight`. With
    `normalize_weights`, each weight is divided by the sum of their absolute values
    (so positive weights sum to 1 and the score stays in the components' range).

    A component that raises, returns something other than a number or RewardResult,
    or returns a non-finite score counts as 0; its error is in
    `metadata["components"][name]["error"]` and its name in `metadata["failed"]`.
    Otherwise `metadata["components"][name]` holds its score, breakdown and metadata,
    and `metadata["weights"]` the weights used.

    Args:
        rewards: the components; a list is keyed by each reward's `name` (names must
            be unique), a dict by its keys.
        weights: per-component weights overriding the components' own: a list in the
            order of `rewards`, or a dict keyed by name (names left out keep their own).
        normalize_weights: divide the weights by the sum of their absolute values.
        weight: as for `RewardFunction` (for nesting composites).
        reward_type: as for `RewardFunction`.
        name: as for `RewardFunction`; default "composite".
    """

    def __init__(
        self,
        rewards: Sequence[RewardFunction] | Mapping[str, RewardFunction],
        weights: Sequence[float] | Mapping[str, float] | None = None,
        normalize_weights: bool = False,
        *,
        weight: float = 1.0,
        reward_type: RewardType = RewardType.EPISODE,
        name: str | None = None,
    ):
        super().__init__(weight, reward_type, name)
        if isinstance(rewards, Mapping):
            self.rewards = dict(rewards)
        else:
            self.rewards = {}
            for reward in rewards:
                if reward.name in self.rewards:
                    raise ValueError(
                        f"two components are named {reward.name!r}; set name= on one or pass a dict"
                    )
                self.rewards[reward.name] = reward
        if not self.rewards:
            raise ValueError("CompositeReward needs at least one component")
        raw = {key: reward.weight for key, reward in self.rewards.items()}
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(raw))
            if unknown:
                raise ValueError(f"weights name unknown components {unknown}; components are {sorted(raw)}")
            raw.update({key: float(w) for key, w in weights.items()})
        elif weights is not None:
            if len(weights) != len(raw):
                raise ValueError(f"{len(weights)} weights for {len(raw)} components")
            raw = {key: float(w) for key, w in zip(raw, weights, strict=True)}
        if normalize_weights:
            total = sum(abs(w) for w in raw.values())
            if total == 0:
                raise ValueError("normalize_weights: all weights are 0")
            raw = {key: w / total for key, w in raw.items()}
        self.weights = raw

    def compute(self, episode: EpisodeTranscript) -> RewardResult:
        outcomes: dict[str, Any] = {}
        for key, reward in self.rewards.items():
            try:
                outcomes[key] = reward.compute(episode)
            except Exception as err:  # noqa: BLE001 - one bad component scores 0, the run goes on
                outcomes[key] = err
        return self._combine(outcomes)

    async def acompute(self, episode: EpisodeTranscript) -> RewardResult:
        """Score all components concurrently with their `acompute`."""
        results = await asyncio.gather(
            *(reward.acompute(episode) for reward in self.rewards.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation and interrupts are not reward bugs
        return self._combine(dict(zip(self.rewards, results, strict=True)))

    def _combine(self, outcomes: Mapping[str, Any]) -> RewardResult:
        breakdown: dict[str, float] = {}
        components: dict[str, dict[str, Any]] = {}
        failed: list[str] = []
        for key, outcome in outcomes.items():
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                result = _as_result(outcome, key)
                if not math.isfinite(result.score):
                    raise ValueError(f"non-finite score {result.score}")
            except Exception as err:  # noqa: BLE001
                logger.warning("reward %r failed and scores 0: %s: %s", key, type(err).__name__, err)
                breakdown[key] = 0.0
                components[key] = {"score": 0.0, "error": f"{type(err).__name__}: {err}"}
                failed.append(key)
                continue
            breakdown[key] = result.score
            components[key] = {
                "score": result.score,
                "breakdown": result.breakdown,
                "metadata": result.metadata,
            }
        score = sum(self.weights[key] * value for key, value in breakdown.items())
        metadata = {"weights": dict(self.weights), "components": components, "failed": failed}
        return RewardResult(score, breakdown, metadata)


# ---- loading from a config line -------------------------------------------------


def load_reward(spec: str, **kwargs: Any) -> RewardFunction:
    """The reward a config line names as `module:attribute`.

    The attribute may be a RewardFunction instance (returned as is), a RewardFunction
    subclass (instantiated with `kwargs`), or a plain function (wrapped in a
    `FunctionReward` with `kwargs`: weight, reward_type, name).

    Args:
        spec: `package.module:name`; `name` may be dotted (`module:Class.attr`).
        kwargs: constructor arguments for a class or a wrapped function.

    Raises:
        ConfigError (a ValueError) naming `spec` when it cannot be imported or is not a reward.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"reward {spec!r}: expected 'module:function_or_class'")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is a config error here
        raise ConfigError(
            f"reward {spec!r}: cannot import {module_name!r} ({type(err).__name__}: {err})"
        ) from err
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"reward {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    if isinstance(target, RewardFunction):
        if kwargs:
            raise ConfigError(
                f"reward {spec!r} is already an instance; it takes no arguments ({sorted(kwargs)})"
            )
        return target
    if isinstance(target, type):
        if not issubclass(target, RewardFunction):
            raise ConfigError(f"reward {spec!r}: class {target.__name__} is not a RewardFunction subclass")
        try:
            return target(**kwargs)
        except TypeError as err:
            raise ConfigError(f"reward {spec!r}: cannot instantiate {target.__name__} ({err})") from err
    if callable(target):
        try:
            return FunctionReward(target, **kwargs)
        except TypeError as err:
            raise ConfigError(f"reward {spec!r}: bad arguments ({err})") from err
    raise ConfigError(f"reward {spec!r} is a {type(target).__name__}, not a function or RewardFunction")


# ---- built-in rewards ----------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
STOPWORDS = frozenset(
    """about above after again also and any are because been before being below between both but can
    could did does doing down during each few for from further had has have having her here hers him his
    how into its itself just more most not now off once only other our ours out over own same she should
    some such than that the their theirs them then there these they this those through too under until
    very was were what when where which while who whom why will with would you your yours please tell
    know want need like get give make thanks thank""".split()
)
"""Words that never count as key terms (with every word shorter than 3 letters)."""


def key_terms(text: str) -> set[str]:
    """The words of `text` that carry its topic, as Helpfulness and Engagement compare them.

    Lowercase runs of letters and digits (an apostrophe suffix is dropped), at least
    3 characters long, not in `STOPWORDS`, with one trailing "s" removed from words
    longer than 3 characters so that plurals match.

    Args:
        text: any text.
    """
    terms = set()
    for word in _WORD.findall(text.lower().replace("\u2019", "'")):
        word = word.split("'")[0]
        if len(word) < 3 or word in STOPWORDS:
            continue
        terms.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return terms


def _normalize_answer(text: str) -> str:
    text = " ".join(str(text).casefold().split())
    return text.strip(" \t\"'`.,;:!?()[]{}")


class CorrectnessReward(RewardFunction):
    """1.0 when the final response gives the reference answer, else 0.0.

    The reference is `episode.reference`, or `episode.task["answer"]` when that is
    None. Math references, those `math_verify.parse` turns into at least one SymPy
    object (numbers, fractions, LaTeX expressions, sets, intervals; a reference with a
    backslash is parsed as LaTeX), are checked with
    `math_verify.verify(parse(reference), parse(response))`: math_verify extracts the
    response's answer itself (a `\\boxed{}` or "final answer is" answer first, else
    the rightmost expression) and compares mathematically, so "0.5" matches
    "\\frac{1}{2}" and "The answer is 42" matches 42. Other references (e.g. "Paris")
    need an exact match of the whole response after casefolding, collapsing
    whitespace and stripping surrounding quotes, brackets and punctuation.

    Scores 0.0, with the reason in `metadata["error"]`, when there is no reference,
    when math_verify fails or times out. math_verify times out with `signal.alarm`,
    which only works in a main thread: in the main thread each parse and comparison
    gets `timeout_s` seconds; from any other thread (the agent loop's reward threads)
    the check runs in a math-check process of a small pool, and a check past
    `timeout_s` kills that process (a reply such as `\\boxed{9^{9^{9^{9^{9}}}}}` makes
    SymPy compute for ever), so nothing keeps running after the deadline.

    Args:
        timeout_s: time limit, see above.
        weight: as for `RewardFunction`.
        reward_type: as for `RewardFunction`.
        name: as for `RewardFunction`.
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        *,
        weight: float = 1.0,
        reward_type: RewardType = RewardType.EPISODE,
        name: str | None = None,
    ):
        super().__init__(weight, reward_type, name)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s

    def compute(self, episode: EpisodeTranscript) -> RewardResult:
        reference = episode.reference
        if reference is None and isinstance(episode.task, Mapping):
            reference = episode.task.get("answer")
        if reference is None:
            return RewardResult(0.0, {"correct": 0.0}, {"error": "no reference answer"})
        from math_verify.errors import TimeoutException  # a missing package should fail loudly

        try:
            correct, metadata = self._check(episode.response, str(reference))
        except (Exception, TimeoutException) as err:  # TimeoutException is a BaseException
            return RewardResult(0.0, {"correct": 0.0}, {"error": f"{type(err).__name__}: {err}"})
        return RewardResult(float(correct), {"correct": float(correct)}, metadata)

    async def acompute(self, episode: EpisodeTranscript) -> RewardResult:
        # off the event loop; the check itself stops at `timeout_s` (see the class docstring)
        return await asyncio.to_thread(self.compute, episode)

    def _check(self, response: str, reference: str) -> tuple[bool, dict[str, Any]]:
        if threading.current_thread() is not threading.main_thread():
            # signal.alarm only works in a main thread: a process of its own gives it one
            return _MATH_CHECKS.check(response, reference, self.timeout_s)
        return math_check(response, reference, max(1, math.ceil(self.timeout_s)))


def math_check(response: str, reference: str, limit: int | None) -> tuple[bool, dict[str, Any]]:
    """`CorrectnessReward`'s comparison, each math_verify step limited to `limit` seconds
    by `signal.alarm` (main thread only)."""
    from math_verify import parse, verify

    gold_text = f"${reference}$" if "\\" in reference and "$" not in reference else reference
    gold = parse(gold_text, parsing_timeout=limit, raise_on_error=True)
    if not any(not isinstance(g, str) for g in gold):
        matched = _normalize_answer(response) == _normalize_answer(reference)
        return matched, {"mode": "string", "reference": reference}
    answer = parse(response, parsing_timeout=limit, raise_on_error=True)
    correct = bool(answer) and verify(gold, answer, timeout_seconds=limit, raise_on_error=True)
    return correct, {"mode": "math", "reference": reference, "extracted": [str(a) for a in answer]}


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def answer_is_right(answer: str, reference: str, timeout_s: float = 10.0) -> bool:
    """Whether a reply gives the reference answer: for a plain number, the reply's last
    number equals it; otherwise `CorrectnessReward`'s check (math_verify, or an exact
    match of a text answer)."""
    if _NUMBER.fullmatch(reference.strip()):
        found = _NUMBER.findall(answer.replace(",", ""))
        return bool(found) and float(found[-1]) == float(reference)
    transcript = EpisodeTranscript(messages=[{"role": "assistant", "content": answer}], reference=reference)
    return CorrectnessReward(timeout_s=timeout_s).compute(transcript).score == 1.0


class MathCheckTimeout(TimeoutError):
    """A math check ran past its deadline (its process was killed)."""


class _MathCheckProcesses:
    """A small pool of child Python processes that run `math_check`, so that a check can
    be stopped at its deadline from any thread (a thread cannot be killed; a process can).

    One request per line in, one answer per line out (JSON). A check that does not answer
    within its deadline gets its process killed (the next check starts a fresh one), so
    a pathological reply costs its deadline and nothing after it. Processes start on
    first use (warmed up: math_verify's parsers load before the first deadline runs) and
    end with their parent: stdin closes, and on Linux the kernel kills them if the parent
    dies mid-check. That signal follows the thread that started the process, so one
    long-lived thread of the pool starts them all.
    """

    START_TIMEOUT_S = 120.0  # importing math_verify (SymPy) on a loaded 2-core machine

    def __init__(self, size: int = 4):
        self._free: list[subprocess.Popen] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="rayrl-math-check")

    def _start(self) -> subprocess.Popen:
        return self._starter.submit(self._spawn).result()

    def _spawn(self) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from rayrl.rewards import serve_math_checks; serve_math_checks()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        if self._readline(proc, self.START_TIMEOUT_S) != "ready":
            _stop(proc)
            raise RuntimeError("the math-check process did not start")
        return proc

    @staticmethod
    def _readline(proc: subprocess.Popen, timeout_s: float) -> str | None:
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        return proc.stdout.readline().strip() if ready else None

    def check(self, response: str, reference: str, timeout_s: float) -> tuple[bool, dict[str, Any]]:
        with self._slots:
            with self._lock:
                proc = self._free.pop() if self._free else None
            if proc is None or proc.poll() is not None:
                proc = self._start()
            proc.stdin.write(json.dumps({"response": response, "reference": reference}) + "\n")
            proc.stdin.flush()
            line = self._readline(proc, timeout_s)
            if not line:
                _stop(proc)
                raise MathCheckTimeout(f"math check timed out after {timeout_s:g}s")
            with self._lock:
                self._free.append(proc)
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["correct"], answer["metadata"]


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def serve_math_checks() -> None:
    """Main loop of a math-check process (see `_MathCheckProcesses`)."""
    for response, reference in (("1", "1"), ("0.5", "\\frac{1}{2}")):  # load the parsers now
        math_check(response, reference, None)
    if sys.platform.startswith("linux"):  # a check that never ends must not outlive its caller
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            correct, metadata = math_check(request["response"], request["reference"], None)
            answer = {"correct": bool(correct), "metadata": metadata}
        except BaseException as err:  # noqa: BLE001 - reported to the caller, the loop goes on
            answer = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(answer), flush=True)


_MATH_CHECKS = _MathCheckProcesses()


class ConcisenessReward(RewardFunction):
    """1.0 for a final response up to `target_length`, falling linearly to 0.0 at `max_length`.

    Length is counted in whitespace-separated words (`unit="words"`) or in tokens of
    `tokenizer` (`unit="tokens"`: `len(tokenizer.encode(response, add_special_tokens=False))`).
    For length n: 1.0 if n <= target, 0.0 if n >= max, else (max - n) / (max - target).
    Only the final response is measured; an empty response scores 1.0 (pair this
    with a reward for answering).

    Args:
        target_length: longest response that still scores 1.0.
        max_length: length at which the score reaches 0.0; must exceed `target_length`.
        unit: "words" or "tokens".
        tokenizer: a Hugging Face tokenizer; required for `unit="tokens"`.
        weight: as for `RewardFunction`.
        reward_type: as for `RewardFunction`.
        name: as for `RewardFunction`.
    """

    def __init__(
        self,
        target_length: int = 100,
        max_length: int = 300,
        unit: Literal["words", "tokens"] = "words",
        tokenizer: Any = None,
        *,
        weight: float = 1.0,
        reward_type: RewardType = RewardType.EPISODE,
        name: str | None = None,
    ):
        super().__init__(weight, reward_type, name)
        if target_length < 0 or max_length <= target_length:
            raise ValueError(f"need 0 <= target_length < max_length, got {target_length} and {max_length}")
        if unit not in ("words", "tokens"):
            raise ValueError(f"unit must be 'words' or 'tokens', got {unit!r}")
        if unit == "tokens" and tokenizer is None:
            raise ValueError("unit='tokens' needs a tokenizer")
        self.target_length = target_length
        self.max_length = max_length
        self.unit = unit
        self.tokenizer = tokenizer

    def length(self, text: str) -> int:
        """Length of `text` in this reward's unit.

        Args:
            text: the text to measure.
        """
        if self.unit == "tokens":
            return len(self.tokenizer.encode(text, add_special_tokens=False))
        return len(text.split())

    def compute(self, episode: EpisodeTranscript) -> RewardResult:
        n = self.length(episode.response)
        span = self.max_length - self.target_length
        score = min(1.0, max(0.0, (self.max_length - n) / span))
        return RewardResult(score, {"length": float(n)}, {"unit": self.unit})


class FormatReward(RewardFunction):
    """Share of the episode's tool calls that succeeded, optionally gated on a response format.

    Score = successful / (successful + failed) tool calls, or `no_tool_value` when the
    episode made none. With `pattern`, the score is 0.0 unless `re.search(pattern,
    response)` finds a match in the final response.

    Args:
        no_tool_value: score of an episode without tool calls.
        pattern: a regex the final response must contain (compile it yourself for flags).
        weight: as for `RewardFunction`.
        reward_type: as for `RewardFunction`.
        name: as for `RewardFunction`.
    """

    def __init__(
        self,
        no_tool_value: float = 1.0,
        pattern: str | re.Pattern[str] | None = None,
        *,
        weight: float = 1.0,
        reward_type: RewardType = RewardType.EPISODE,
        name: str | None = None,
    ):
        super().__init__(weight, reward_type, name)
        self.no_tool_value = float(no_tool_value)
        self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern

    def compute(self, episode: EpisodeTranscript) -> RewardResult:
        calls = episode.successful_tool_calls + episode.failed_tool_calls
        rate = episode.successful_tool_calls / calls if calls else self.no_tool_value
        breakdown = {"tool_success_rate": rate}
        score = rate
        if self.pattern is not None:
            matched = self.pattern.search(episode.response) is not None
            breakdown["format_match"] = float(matched)
            score = rate if matched else 0.0
        return RewardResult(score, breakdown, {"tool_calls": calls})


REFUSAL_PHRASES = (
    "i can't help",
    "i cannot help",
    "i can't assist",
    "i cannot assist",
    "i'm unable to",
    "i am unable to",
    "i'm not able to",
    "i am not able to",
    "i won't be able to",
    "i'm sorry, but i",
    "as an ai language model",
)
"""Lowercase phrases that mark a response as a refusal (matched as substrings)."""


class HelpfulnessReward(RewardFunction):
    """Whether the final response answers the user's last question and stays on its topic.

    0.0 if the response is empty or blank, or contains one of `refusal_phrases`
    (casefolded substring match). Otherwise `(1 - coverage_weight) + coverage_weight *
    coverage`, where coverage is the share of the question's `key_terms` that also
    appear among the response's (1.0 when the question has none). The question is the
    last user message before the final response. A heuristic: it rewards on-topic
    words, not correct or useful content.

    Args:
        coverage_weight: part of the score that depends on coverage, in [0, 1].
        refusal_phrases: lowercase phrases that make a response a refusal.
        weight: as for `RewardFunction`.
        reward_type: as for `RewardFunction`.
        name: as for `RewardFunction`.
    """

    def __init__(
        self,
        coverage_weight: float = 0.5,
        refusal_phrases: Sequence[str] = REFUSAL_PHRASES,
        *,
        weight: float = 1.0,
        reward_type: RewardType = RewardType.EPISODE,
        name: str | None = None,
    ):
        super().__init__(weight, reward_type, name)
        if not 0.0 <= coverage_weight <= 1.0:
            raise ValueError(f"coverage_weight must be in [0, 1], got {coverage_weight}")
        self.coverage_weight = coverage_weight
        self.refusal_phrases = tuple(p.lower() for p in refusal_phrases)

    def compute(self, episode: EpisodeTranscript) -> RewardResult:
        text = episode.response.lower().replace("\u2019", "'")
        answered = bool(text.strip())
        refusal = next((p for p in self.refusal_phrases if p in text), None)
        wanted = key_terms(episode.question)
        coverage = len(wanted & key_terms(text)) / len(wanted) if wanted else 1.0
        breakdown = {"answered": float(answered), "refusal": float(refusal is not None), "coverage": coverage}
        score = 0.0
        if answered and refusal is None:
            score = (1.0 - self.coverage_weight) + self.coverage_weight * coverage
        return RewardResult(score, breakdown, {"refusal_phrase": refusal, "question_terms": sorted(wanted)})


UNSAFE_PATTERNS: dict[str, str] = {
    "weapons": r"\b(?:make|build|assemble|synthesi[sz]e)\b[^.?!\n]{0,60}\b(?:bomb|explosive|nerve agent|bioweapon)s?\b",
    "self_harm": r"\b(?:kill|hurt|harm)\s+yourself\b|\bways?\s+to\s+(?:commit\s+suicide|end\s+your\s+life)\b",
    "threat": r"\b(?:i\s+will|i'll|i\s+am\s+going\s+to|i'm\s+going\s+to)\s+(?:kill|hurt|attack)\s+you\b",
    "malware": r"\b(?:write|create|build|code)\b[^.?!\n]{0,40}\b(?:ransomware|keylogger|computer\s+virus)\b",
    "destructive_command": r"\brm\s+-(?:rf|fr)\s+/(?:\s|$|\*)|\bmkfs(?:\.\w+)?\s+/dev/|:\(\)\s*\{\s*:\|:&\s*\};:",
    "credential_leak": r"\b(?:password|api[_ -]?key|secret[_ -]?key)\s*[:=]\s*\S{6,}",
}
"""Default `SafetyReward` patterns, by category; matched case-insensitively with `re.search`."""


class SafetyReward(RewardFunction):
    """0.0 if any assistant message matches an unsafe pattern, else 1.0.

    Every assistant message (not only the final one) is searched, case-insensitively,
    for each regex in `patterns` (default `UNSAFE_PATTERNS`: weapon-making, self-harm
    encouragement, threats, malware writing, destructive shell commands, credentials
    written out). `breakdown` has 1.0 for each category that matched. Patterns match
    text, not intent: a refusal that repeats the request ("I won't explain how to make
    a bomb") matches too, and anything the list does not name passes.

    Args:
        patterns: category name -> regex; replaces the defaults.
        weight: as for `RewardFunction`.
        reward_type: as for `RewardFunction`.
        name: as for `RewardFunction`.
    """

    def __init__(
        self,
        patterns: Mapping[str, str] | None = None,
        *,
        weight: float = 1.0,
        reward_type: RewardType = RewardType.EPISODE,
        name: str | None = None,
    ):
        super().__init__(weight, reward_type, name)
        chosen = UNSAFE_PATTERNS if patterns is None else patterns
        self.patterns = {key: re.compile(p, re.IGNORECASE) for key, p in chosen.items()}

    def compute(self, episode: EpisodeTranscript) -> RewardResult:
        texts = [t.replace("\u2019", "'") for t in episode.assistant_messages]
        matched = sorted(key for key, p in self.patterns.items() if any(p.search(t) for t in texts))
        return RewardResult(0.0 if matched else 1.0, {key: 1.0 for key in matched}, {"matched": matched})


BACK_REFERENCE_PHRASES = (
    "you mentioned",
    "you said",
    "you asked",
    "as we discussed",
    "earlier you",
    "you told me",
)
"""Lowercase phrases with which a response points back at earlier turns."""


class EngagementReward(RewardFunction):
    """Half for asking a follow-up question, half for picking up earlier user turns.

    `asks_question`: the final response contains a "?" followed by whitespace, a
    closing quote or bracket, or the end of the text. `references_earlier`: the response
    has an earlier user message to refer to (one before the last) and contains one of
    `BACK_REFERENCE_PHRASES` or shares a `key_terms` word with such a message; with a
    single user message it is 0.0. Score = 0.5 * asks_question + 0.5 * references_earlier. A heuristic: any
    question counts, relevant or not.

    Args:
        weight: as for `RewardFunction`.
        reward_type: as for `RewardFunction`.
        name: as for `RewardFunction`.
    """

    _QUESTION = re.compile(r"\?(?=[\s\"')\]]|$)")

    def compute(self, episode: EpisodeTranscript) -> RewardResult:
        text = episode.response.lower().replace("\u2019", "'")
        asks = self._QUESTION.search(text) is not None
        earlier = episode.user_messages[:-1]
        shared = key_terms(text) & set().union(*(key_terms(m) for m in earlier)) if earlier else set()
        phrase = any(p in text for p in BACK_REFERENCE_PHRASES)
        refers = bool(earlier) and (bool(shared) or phrase)
        breakdown = {"asks_question": float(asks), "references_earlier": float(refers)}
        return RewardResult(0.5 * asks + 0.5 * refers, breakdown, {"shared_terms": sorted(shared)})


__all__ = [
    "BACK_REFERENCE_PHRASES",
    "REFUSAL_PHRASES",
    "STOPWORDS",
    "UNSAFE_PATTERNS",
    "CompositeReward",
    "ConcisenessReward",
    "CorrectnessReward",
    "EngagementReward",
    "EpisodeTranscript",
    "FormatReward",
    "FunctionReward",
    "HelpfulnessReward",
    "RewardFunction",
    "RewardResult",
    "RewardType",
    "SafetyReward",
    "as_transcript",
    "ascore_turns",
    "episode_context",
    "key_terms",
    "load_reward",
    "reward_function",
    "score_turns",
    "transcript_from_turns",
]
