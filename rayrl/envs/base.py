"""The environment interface episodes run against.

An environment is a plain, gymnasium-like object: `reset(task)` returns the first
observation (the user's message), `step(action_text)` returns
`(observation, reward, done, info)`. One instance serves one episode at a time;
rayrl builds a fresh instance per episode from its config, so environments may
keep per-episode state freely. `sample_task(rng)` draws the task that a group of
episodes shares (GRPO compares samples of one task).

Subclasses may define `async def areset/astep` instead when a step waits on I/O;
the default async versions run the sync methods in a worker thread so that one
slow environment never stalls the episodes running beside it.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from typing import Any

from rayrl.config import EnvironmentConfig

StepResult = tuple[str, float, bool, dict[str, Any]]


class BaseEnvironment(ABC):
    """Base class for rayrl environments.

    Args:
        config: the `environment` section of the run's config.
    """

    def __init__(self, config: EnvironmentConfig | None = None):
        self.config = config or EnvironmentConfig()
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False

    # ---- tasks -----------------------------------------------------------
    def sample_task(self, rng: random.Random) -> Any:
        """Draw the task of a new group of episodes (default: no task)."""
        return None

    def sample_eval_task(self, rng: random.Random) -> Any:
        """Draw a held-out task for evaluation (default: same as training)."""
        return self.sample_task(rng)

    # ---- episode -----------------------------------------------------------
    def reset(self, task: Any = None) -> str:
        """Start an episode on `task`; return the first observation. Default: keep the task
        as `self.task` and show it as text (override to build state from it)."""
        self.task = task
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        return "" if task is None else str(task)

    def reset_for(self, task: Any = None) -> str:
        """`reset(task)`, or `reset()` when there is no task (environments written
        without tasks take no task argument)."""
        return self.reset() if task is None else self.reset(task)

    @abstractmethod
    def step(self, action: str) -> StepResult:
        """Apply the model's `action`; return (observation, reward, done, info).

        Action environments (`rayrl.agent.actions`) may take `step(action, params)`
        instead and return an `ActionResult`, which unpacks the same way."""

    def get_valid_actions(self) -> list[str]:
        """Names of the actions accepted now, for action-based environments; default none
        (any text is an action)."""
        return []

    def turn_limit(self) -> int:
        """Most assistant turns an episode may take (the agent loop stops there even if the
        environment never says done); default `config.max_turns`."""
        return int(getattr(self, "max_turns", None) or self.config.max_turns)

    def get_prompt_prefix(self) -> str:
        """System prompt shown before the first observation."""
        return self.config.system_prompt or ""

    def get_demonstration(self) -> list[dict[str, str]]:
        """Chat messages shown between the system prompt and the first observation: a worked
        example of an episode (few-shot prompting). Part of every episode's prompt, never
        trained on. Default: none."""
        return []

    @property
    def done(self) -> bool:
        """Whether the current episode has ended."""
        return self._done

    async def areset(self, task: Any = None) -> str:
        """Async `reset` (runs the sync one in a thread)."""
        return await asyncio.to_thread(self.reset_for, task)

    async def astep(self, action: str) -> StepResult:
        """Async `step` (runs the sync one in a thread)."""
        return await asyncio.to_thread(self.step, action)
