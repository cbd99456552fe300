"""Queue-driven agents (AReaL's shape): an agent talks to the rollout engines through an
observation queue and an action queue, and to its environment through `async` calls.

An agent implements one coroutine, `collect_trajectory(prompt, env, obs_queue,
act_queue)`. It puts `(qid, token_ids, gconfig)` on `obs_queue`, awaits the engines'
answer on `act_queue` (a `BundledGenerationOutputs`: `gconfig.n` samples of the same
prompt), hands the decoded answers to `env.step((qid, answers))`, and decides what comes
next. It returns the trajectories to train on: token ids with a loss mask, the engines'
log-probs and weight versions of the sampled tokens, and a reward.

The environment service is stateless per task: `step` scores all answers of a group in
one call, and the task of a `qid` is in `env.id2info[qid]["task"]` (its reference answer,
when the run's environment knows one, in `env.id2info[qid]["answer"]`).

Agents and environment services are registered by name (`register_agent`,
`register_env`) and named in the `agent` config section; the built-in ones are in
`rayrl.agents.math_multi_turn`. Nothing here imports Ray, torch
or vLLM: the agent loop actor drives the queues (`rayrl.actors.agent_loop`).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class GenerationConfig:
    """How the engines sample one request of an agent.

    Args:
        n: samples of the same prompt (a GRPO group).
        max_new_tokens: most tokens per sample (capped by the run's `inference.max_tokens`
            and the context left).
        greedy: sample at temperature 0 (evaluation); training samples at the run's
            temperature, which the learner's log-probs assume.
    """

    n: int = 1
    max_new_tokens: int | None = None
    greedy: bool = False


@dataclass
class GenerationOutput:
    """One sample: the engine's token ids, their log-probs, why it stopped, and the
    weight version that generated it."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    weight_version: int = 0


@dataclass
class BundledGenerationOutputs:
    """The engines' answer to one request: `gconfig.n` samples of `prompt_ids`."""

    qid: str
    prompt_ids: list[int]
    seqs: list[GenerationOutput]


@dataclass
class Trajectory:
    """One sequence to train on.

    Args:
        input_ids: prompt, generated and observation tokens, in order.
        loss_mask: 1 on generated tokens (trained), 0 elsewhere.
        logprobs: the engine's log-prob of each generated token, 0 elsewhere.
        reward: the sequence's reward.
        versions: weight version of each generated token, -1 elsewhere (default: the newest
            version that answered the agent's requests, on every trained token).
        num_turns: generation calls the sequence holds.
        info: numbers or flags reported per step (`success`/`correct` count as success).
    """

    input_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    reward: float
    versions: list[int] | None = None
    num_turns: int = 1
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        for name in ("loss_mask", "logprobs", "versions"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(f"Trajectory.{name} has {len(getattr(self, name))} entries, input_ids {n}")


@dataclass
class AgentPrompt:
    """What an agent starts from: the task's id, the task, the opening messages and their
    token ids (rendered with the model's chat template, generation prompt included)."""

    qid: str
    task: Any
    messages: list[dict[str, Any]]
    token_ids: list[int]


class EnvironmentService(ABC):
    """An environment shared by all episodes of a run; gym-like, asynchronous.

    `id2info[qid]` holds `{"task": ..., "answer": ...}` for every task in play.
    """

    def __init__(self) -> None:
        self.id2info: dict[str, dict[str, Any]] = {}

    async def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        return None, {}

    @abstractmethod
    async def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        """(observation, reward(s), terminated, truncated, info) for `action`."""


class Agent(ABC):
    """Base class of queue-driven agents (see the module docstring)."""

    @abstractmethod
    async def collect_trajectory(
        self,
        prompt: AgentPrompt,
        env: EnvironmentService,
        obs_queue: asyncio.Queue,
        act_queue: asyncio.Queue,
    ) -> list[Trajectory]:
        """Play the task of `prompt` and return the trajectories to train on."""


_AGENTS: dict[str, type[Agent]] = {}
_ENVS: dict[str, type[EnvironmentService]] = {}


def register_agent(name: str, cls: type[Agent]) -> type[Agent]:
    """Make `cls` available as `agent.name: <name>`; returns `cls`."""
    return _register(_AGENTS, "agent", name, cls, Agent)


def register_env(name: str, cls: type[EnvironmentService]) -> type[EnvironmentService]:
    """Make `cls` available as `agent.env: <name>`; returns `cls`."""
    return _register(_ENVS, "environment service", name, cls, EnvironmentService)


def _register(table: dict, what: str, name: str, cls: type, base: type) -> type:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a registered {what} needs a non-empty name, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{what} {name!r} must be a subclass of {base.__name__}, got {cls!r}")
    if table.get(name, cls) is not cls:
        raise ValueError(f"{what} name {name!r} is taken by {table[name].__qualname__}")
    table[name] = cls
    return cls


def agent_class(name: str) -> type[Agent]:
    """The agent registered as `name`, or the class a `module:Class` / `file.py:Class` names."""
    return _lookup(_AGENTS, "agent", name)


def env_class(name: str) -> type[EnvironmentService]:
    """The environment service registered as `name` (or named by `module:Class`)."""
    return _lookup(_ENVS, "environment service", name)


def _lookup(table: dict, what: str, name: str) -> type:
    if name in table:
        return table[name]
    if ":" in name:
        return load_object(name)
    raise ValueError(f"no {what} registered as {name!r}; registered: {sorted(table)}")


def load_object(spec: str) -> Any:
    """The object `module:attr` or `path/to/file.py:attr` names (a file is imported as a
    module of its own, so a job folder needs no package; a relative path is read from the
    working directory)."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ValueError(f"{spec!r} must look like 'package.module:name' or 'path/file.py:name'")
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise ValueError(f"{spec!r}: no file {path}")
        name = f"rayrl_user_{path.stem}_{abs(hash(str(path))):x}"
        module = sys.modules.get(name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # so that Ray can ship its code to the actors by value
            module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ValueError(f"{spec!r} cannot be imported: {err}") from None
    if not hasattr(module, attr):
        raise ValueError(f"{spec!r}: {target} has no {attr!r}")
    return getattr(module, attr)


__all__ = [
    "Agent",
    "AgentPrompt",
    "BundledGenerationOutputs",
    "EnvironmentService",
    "GenerationConfig",
    "GenerationOutput",
    "Trajectory",
    "agent_class",
    "env_class",
    "load_object",
    "register_agent",
    "register_env",
]
