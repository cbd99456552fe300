"""Run a gymnasium-style text environment as a rayrl environment.

Many text games and agent benchmarks already speak gymnasium's API:
`reset(seed=None, options=None) -> (obs, info)` and
`step(action) -> (obs, reward, terminated, truncated, info)`. This adapter wraps
such an object unchanged (gymnasium itself need not be installed) and maps it to
rayrl's four-tuple: `done = terminated or truncated`, the observation through
`str()`, the reward through `float()`. The wrapped environment decides when an
episode ends; rayrl's runner still stops after `config.max_turns` turns.

The wrapped environment comes from the constructor, or, for training (the runner
builds environments from the config alone), from `params.env = "module:factory"`,
called with `params.env_kwargs`.

Tasks: a task is passed to the wrapped `reset` as `options`, except that a `seed`
key of a dict task becomes the `seed` argument (the other keys stay options).
`sample_task` draws `{"seed": n}` so that a GRPO group plays one seeded game.
A wrapped `step` that raises is not caught here: the runner ends that episode
and records the error, which keeps bugs in the wrapped environment visible.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs._params import validate_params
from rayrl.envs.base import BaseEnvironment, StepResult


class GymTextParams(BaseModel):
    """`environment.params` of the gymnasium adapter."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    env: str | None = Field(None, pattern=r"^[\w.]+:[\w.]+$")
    """`module:factory` returning the wrapped environment (unless one is passed in)."""
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the factory."""
    seed_tasks: bool = True
    """`sample_task` draws a seed per task; False: tasks are None."""
    system_prompt: str = ""
    """System prompt."""


def load_factory(path: str) -> Any:
    """The wrapped environment built by the `module:factory` at `path`."""
    module, _, attr = path.partition(":")
    try:
        factory = importlib.import_module(module)
        for part in attr.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"environment.params.env={path!r}: cannot import ({err})") from None
    if not callable(factory):
        raise ConfigError(f"environment.params.env={path!r} is not callable")
    return factory


class GymTextEnvironment(BaseEnvironment):
    """Adapter from a gymnasium-style text environment to `BaseEnvironment`.

    Args:
        config: environment section; its `params` are `GymTextParams`.
        env: the wrapped environment; when None it is built from `params.env`.
    """

    def __init__(self, config: EnvironmentConfig | None = None, env: Any = None):
        super().__init__(config)
        self.params = validate_params(GymTextParams, self.config.params)
        if env is None:
            if self.params.env is None:
                raise ConfigError("environment.params.env: required (module:factory) when no env is passed")
            env = load_factory(self.params.env)(**self.params.env_kwargs)
        if not (callable(getattr(env, "reset", None)) and callable(getattr(env, "step", None))):
            where = f"environment.params.env={self.params.env!r}" if self.params.env else "env"
            raise ConfigError(f"{where}: {type(env).__name__} has no reset()/step()")
        self.env = env
        self._started = False

    def get_prompt_prefix(self) -> str:
        return self.config.system_prompt or self.params.system_prompt

    def sample_task(self, rng: random.Random) -> dict[str, int] | None:
        return {"seed": rng.randrange(2**31)} if self.params.seed_tasks else None

    def reset(self, task: Any = None) -> str:
        seed, options = None, task
        if isinstance(task, Mapping) and "seed" in task:
            seed = task["seed"]
            options = {k: v for k, v in task.items() if k != "seed"} or None
        obs, _info = self.env.reset(seed=seed, options=options)
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        self._started = True
        return str(obs)

    def step(self, action: str) -> StepResult:
        if not self._started or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        obs, reward, terminated, truncated, info = self.env.step(action)
        reward = float(reward)
        self.step_count += 1
        self.episode_reward += reward
        self._done = bool(terminated or truncated)
        info = dict(info) if isinstance(info, Mapping) else {"info": info}
        info.setdefault("terminated", bool(terminated))
        info.setdefault("truncated", bool(truncated))
        return str(obs), reward, self._done, info
