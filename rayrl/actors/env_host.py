"""Environment role: each episode's environment lives in its own Ray actor.

An environment is user code: it may hang, leak, segfault or call `os._exit`. With
`environment.isolation: actor` (the default) every episode in flight gets an
`EnvironmentHost` actor of its own from an `EnvironmentPool`. A step that passes
`environment.step_timeout_s` or a process that dies ends only that episode; the
pool kills the host (a hung thread cannot be stopped any other way) and starts a
fresh one for the next episode. Hosts are reused across episodes, so their start
cost (about a third of a second each on two cores) is paid once per run.

`isolation: inline` runs the environment inside the agent-loop process instead
(sync environments in worker threads): cheaper, but a hung step leaks a thread and
a crash takes every episode with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.exceptions import RayActorError

from rayrl.config import EnvironmentConfig
from rayrl.envs import BaseEnvironment, make_environment
from rayrl.envs.source import EnvironmentSource
from rayrl.logs import configure_logging

HOST_START_TIMEOUT_S = 300.0


class EnvironmentFailure(RuntimeError):
    """An environment failed (raised, timed out, or its process died); ends one episode."""


def new_environment(
    env_config: EnvironmentConfig, source: EnvironmentSource | None = None
) -> BaseEnvironment:
    """A fresh environment from `source`, or of the kind `env_config.name` names."""
    return source() if source is not None else make_environment(env_config)


class EnvironmentHost:
    """Plain class wrapped as an async Ray actor: holds one episode's environment at a time."""

    def __init__(self, env_config: EnvironmentConfig, source: EnvironmentSource | None = None):
        configure_logging()
        self.env_config = env_config
        self.source = source
        self.env: BaseEnvironment | None = None

    async def reset(self, task: Any) -> str:
        """Start a fresh environment on `task`; returns the first observation."""
        self.env = new_environment(self.env_config, self.source)
        return await self.env.areset(task)

    async def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        """One step of the current environment."""
        if self.env is None:
            raise RuntimeError("step before reset")
        observation, reward, done, info = await self.env.astep(action)
        return str(observation), float(reward), bool(done), dict(info or {})


class _Handle:
    """What an episode talks to: `reset` and `step` with the timeout applied."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.healthy = True

    async def _call(self, what: str, coro) -> Any:
        try:
            return await asyncio.wait_for(coro, self.timeout_s)
        except asyncio.TimeoutError:
            self.healthy = False
            raise EnvironmentFailure(f"{what} timed out after {self.timeout_s:g}s") from None
        except RayActorError as err:
            self.healthy = False
            raise EnvironmentFailure(
                f"{what} failed: environment process died ({_first_line(err)})"
            ) from None
        except Exception as err:  # noqa: BLE001 - the environment's own exception, unwrapped
            cause = getattr(err, "cause", None) or err
            raise EnvironmentFailure(f"{what} failed: {type(cause).__name__}: {_first_line(cause)}") from None


class _InlineHandle(_Handle):
    def __init__(self, env: BaseEnvironment, timeout_s: float):
        super().__init__(timeout_s)
        self.env = env

    async def reset(self, task: Any) -> str:
        return await self._call("reset", self.env.areset(task))

    async def step(self, action: str):
        return await self._call("step", self.env.astep(action))


class _ActorHandle(_Handle):
    def __init__(self, actor, timeout_s: float):
        super().__init__(timeout_s)
        self.actor = actor

    async def reset(self, task: Any) -> str:
        # A host started on demand may still be booting: its start-up is not the
        # environment's time, so it gets its own (generous) limit.
        try:
            await asyncio.wait_for(self.actor.__ray_ready__.remote(), HOST_START_TIMEOUT_S)
        except (asyncio.TimeoutError, RayActorError) as err:
            self.healthy = False
            raise EnvironmentFailure(f"environment actor did not start: {type(err).__name__}") from None
        return await self._call("reset", self.actor.reset.remote(task))

    async def step(self, action: str):
        return await self._call("step", self.actor.step.remote(action))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""


class EnvironmentPool:
    """Hands out one environment per episode (see the module docstring).

    Args:
        env_config: the `environment` section.
        source: where fresh environments come from (default: the one `env_config.name` names).
        size: most hosts alive at once (episodes beyond it wait for a free host).
        scheduling: Ray scheduling strategy of the hosts (e.g. a placement-group bundle).
    """

    def __init__(
        self,
        env_config: EnvironmentConfig,
        source: EnvironmentSource | None = None,
        size: int = 1,
        scheduling: Any = None,
    ):
        self.env_config = env_config
        self.scheduling = scheduling
        self.source = source
        self.isolated = env_config.isolation == "actor"
        self.size = max(1, size)
        self._idle: list = []
        self._alive = 0
        self._free: asyncio.Condition | None = None  # made on first use, inside the actor's loop
        self.restarts = 0

    @property
    def alive(self) -> int:
        """Hosts alive now (idle or serving an episode)."""
        return self._alive

    def _new_actor(self):
        options = {"num_cpus": self.env_config.cpus_per_actor, "max_restarts": 0}
        if self.scheduling is not None:
            options["scheduling_strategy"] = self.scheduling
        self._alive += 1
        return ray.remote(EnvironmentHost).options(**options).remote(self.env_config, self.source)

    def start(self) -> None:
        """Start all hosts now (their process start-up overlaps with other setup)."""
        if self.isolated:
            while self._alive < self.size:
                self._idle.append(self._new_actor())

    async def wait_ready(self) -> None:
        """Wait until the hosts started by `start` answer."""
        if self._idle:
            await asyncio.gather(*(a.__ray_ready__.remote() for a in self._idle))

    async def acquire(self) -> _Handle:
        """A handle on a fresh environment for one episode."""
        timeout = self.env_config.step_timeout_s
        if not self.isolated:
            return _InlineHandle(new_environment(self.env_config, self.source), timeout)
        if self._free is None:
            self._free = asyncio.Condition()
        async with self._free:
            while not self._idle and self._alive >= self.size:
                await self._free.wait()
            actor = self._idle.pop() if self._idle else self._new_actor()
        return _ActorHandle(actor, timeout)

    async def release(self, handle: _Handle) -> None:
        """Return a host after its episode; a host that hung or died is replaced."""
        if not isinstance(handle, _ActorHandle):
            return
        if handle.healthy:
            self._idle.append(handle.actor)
        else:
            ray.kill(handle.actor, no_restart=True)
            self._alive -= 1
            self.restarts += 1
        async with self._free:
            self._free.notify()

    def shutdown(self) -> None:
        """Kill every idle host."""
        for actor in self._idle:
            ray.kill(actor, no_restart=True)
        self._alive -= len(self._idle)
        self._idle = []
