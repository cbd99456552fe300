"""Where each role runs: placement groups built from the config, and the role groups
whose actors live in them.

`Role` names the roles; `roles_for(config)` is the one place that decides which exist
(the estimator registry says whether a critic is needed, the KL coefficient whether a
reference is). One bundle per role instance: rollout engines, the actor-learner ranks,
the reference ranks, the critic ranks and the agent loop (whose bundle also holds the
scorer and the environment hosts). With `ray.colocate_models` reference and critic rank i instead share learner
rank i's bundle, each actor asking for a fraction of it (a third of a GPU each, say). On a cluster with GPUs the model roles get GPU bundles; in
local CPU mode every bundle is one logical CPU (the roles take turns on the real
cores: rollout, then reference, then update; on a cluster with fewer logical CPUs than
bundles each bundle asks for an equal share). Role classes are plain; this module
is the only place that wraps them with `ray.remote` and pins them to a bundle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rayrl.algorithms.registry import ESTIMATORS
from rayrl.config import ConfigStore

logger = logging.getLogger(__name__)


class Role(str, Enum):
    """The roles of a run."""

    ROLLOUT = "rollout"
    LEARNER = "learner"
    REFERENCE = "reference"
    CRITIC = "critic"
    AGENT_LOOP = "agent_loop"


MODEL_ROLES = (Role.LEARNER, Role.REFERENCE, Role.CRITIC)


def roles_for(config: ConfigStore) -> dict[Role, int]:
    """Which roles this config runs, and how many actors each (in start order)."""
    roles = {Role.ROLLOUT: config.inference.num_engines, Role.LEARNER: config.learner.num_ranks}
    if config.training.kl_coef > 0:
        roles[Role.REFERENCE] = config.reference.num_ranks
    if ESTIMATORS[config.training.adv_estimator].needs_critic:
        roles[Role.CRITIC] = config.critic.num_ranks
    roles[Role.AGENT_LOOP] = 1
    return roles


class PlacementError(RuntimeError):
    """The cluster cannot hold the requested layout."""


@dataclass(frozen=True)
class RoleSpec:
    """How many instances of a role, and what each of its actors asks for.

    A role with `host` set has no bundles of its own: its actors live in the first
    bundles of the host role (colocation), each asking for a share of the bundle.
    """

    name: Role
    count: int
    cpus: float
    gpus: float
    host: Role | None = None
    extra_cpus: float = 0.0
    """CPUs reserved in the bundle for actors the role starts itself (environment hosts)."""


def plan_roles(config: ConfigStore, use_gpu: bool, cpu_budget: float | None = None) -> list[RoleSpec]:
    """Roles and their resources for this config (separate or colocated models).

    Without GPUs the roles take turns on the cores (rollout, then reference, then
    update), so when the cluster has fewer logical CPUs than the layout has bundles
    (`cpu_budget`, e.g. a 2-core head started by `ray start --head`), every bundle asks
    for an equal share of them instead of a whole CPU.
    """
    roles = _plan(config, use_gpu)
    bundles = num_bundles(roles)
    if not use_gpu and cpu_budget is not None and bundles > cpu_budget:
        scale = math.floor(100 * cpu_budget / bundles) / 100  # Ray resolves CPU to 1e-4
        roles = [replace(r, cpus=r.cpus * scale) for r in roles]
    return roles


def _plan(config: ConfigStore, use_gpu: bool) -> list[RoleSpec]:
    gpu = 1.0 if use_gpu else 0.0
    counts = roles_for(config)
    models = [r for r in MODEL_ROLES if r in counts]
    env = config.environment
    # environment hosts live in the agent loop's bundle and reserve what they ask for
    env_cpus = (
        env.cpus_per_actor * (env.num_actors or config.training.batch_size)
        if env.isolation == "actor"
        else 0.0
    )
    roles = [RoleSpec(Role.ROLLOUT, counts[Role.ROLLOUT], 1.0, gpu)]
    if config.ray.colocate_models:
        share = 1.0 / len(models)
        for role in models:
            host = None if role is Role.LEARNER else Role.LEARNER
            roles.append(RoleSpec(role, counts[role], share, gpu * share, host))
    else:
        roles += [RoleSpec(role, counts[role], 1.0, gpu) for role in models]
    roles.append(RoleSpec(Role.AGENT_LOOP, 1, 1.0, 0.0, extra_cpus=env_cpus))
    return roles


def num_bundles(roles: list[RoleSpec]) -> int:
    """Bundles the layout reserves (colocated roles add none)."""
    return sum(r.count for r in roles if r.host is None)


def cluster_has_gpus() -> bool:
    """Whether the connected cluster lists any GPU."""
    return ray.cluster_resources().get("GPU", 0) > 0


def decide_gpu(config: ConfigStore) -> bool:
    """Resolve `ray.use_gpu` ("auto" follows the cluster)."""
    mode = config.ray.use_gpu
    return cluster_has_gpus() if mode == "auto" else mode == "yes"


class RolePlacement:
    """One placement group holding a bundle per role instance.

    Args:
        roles: from `plan_roles`.
        timeout_s: how long to wait for the group before failing.
        strategy: Ray placement strategy ("PACK" keeps a small job on one node).
    """

    def __init__(self, roles: list[RoleSpec], timeout_s: float, strategy: str = "PACK"):
        self.roles = roles
        self.bundle_index: dict[str, list[int]] = {}
        bundles: list[dict[str, float]] = []
        for role in roles:
            if role.host is not None:
                continue
            self.bundle_index[role.name] = []
            for _ in range(role.count):
                self.bundle_index[role.name].append(len(bundles))
                bundles.append({})
        for role in roles:  # a bundle holds what every actor placed in it asks for
            if role.host is not None:
                self.bundle_index[role.name] = self.bundle_index[role.host][: role.count]
            for i in self.bundle_index[role.name]:
                bundles[i]["CPU"] = bundles[i].get("CPU", 0.0) + role.cpus + role.extra_cpus
                if role.gpus:
                    bundles[i]["GPU"] = bundles[i].get("GPU", 0.0) + role.gpus
        self.bundles = bundles
        have = ray.cluster_resources()
        for resource in ("CPU", "GPU"):  # a layout larger than the cluster fails now, not at the timeout
            need = sum(b.get(resource, 0.0) for b in bundles)
            if need > have.get(resource, 0.0) + 1e-9:
                raise PlacementError(self._explain(None))
        self.pg: PlacementGroup = placement_group(bundles, strategy=strategy, name="rayrl")
        ready, _ = ray.wait([self.pg.ready()], timeout=timeout_s)
        if not ready:
            remove_placement_group(self.pg)
            raise PlacementError(self._explain(timeout_s))

    def _explain(self, timeout_s: float | None) -> str:
        have = ray.cluster_resources()
        need_cpu = sum(b["CPU"] for b in self.bundles)
        need_gpu = sum(b.get("GPU", 0) for b in self.bundles)
        layout = ", ".join(
            f"{r.name.value} x{r.count}" + (f" in {r.host.value}'s bundle" if r.host else "")
            for r in self.roles
        )
        parts = [f"needs {len(self.bundles)} bundles ({layout}): {need_cpu:g} CPU"]
        if need_gpu:
            parts.append(f"{need_gpu:g} GPU")
        when = "cannot be placed" if timeout_s is None else f"not ready after {timeout_s:g}s"
        return (
            f"placement group {when}: the layout "
            + ", ".join(parts)
            + f"; cluster has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU"
        )

    def spec(self, role: Role) -> RoleSpec:
        """What `role` asks for."""
        return next(r for r in self.roles if r.name == role)

    def strategy(self, role: Role, index: int = 0) -> PlacementGroupSchedulingStrategy:
        """Scheduling into instance `index`'s bundle of `role` (for actors a role starts
        itself, e.g. the agent loop's environment hosts)."""
        return PlacementGroupSchedulingStrategy(
            placement_group=self.pg, placement_group_bundle_index=self.bundle_index[role][index]
        )

    def spawn(
        self, role: Role, cls: type, *args, index: int = 0, actor_options: dict | None = None, **kwargs
    ):
        """Start `cls(*args, **kwargs)` as an actor in instance `index`'s bundle of `role`."""
        spec = self.spec(role)
        options = {
            "num_cpus": spec.cpus,
            "num_gpus": spec.gpus,
            "scheduling_strategy": self.strategy(role, index),
            "max_restarts": 0,
        }
        options.update(actor_options or {})
        return ray.remote(cls).options(**options).remote(*args, **kwargs)

    def remove(self) -> None:
        """Free the bundles (actors in them are killed by Ray)."""
        remove_placement_group(self.pg)


class RoleGroup:
    """The actors of one role, member i in the role's bundle i: started together, called
    together, and restarted one at a time into the same bundle.

    Members of a collective group (learner ranks, critic ranks) expose `group_address()`
    (rank 0: a rendezvous address) and `join_group(host, port)`; `join` forms the group.

    Args:
        placement: where the role's bundles are.
        role: which role.
        cls: the plain class of every member.
        args_of: member i's constructor arguments (a tuple), e.g. its rank.
        actor_options: extra Ray actor options (e.g. `max_concurrency`).
    """

    def __init__(
        self,
        placement: RolePlacement,
        role: Role,
        cls: type,
        args_of: Callable[[int], tuple],
        actor_options: dict | None = None,
    ):
        self.placement, self.role, self.cls = placement, role, cls
        self.args_of, self.actor_options = args_of, actor_options
        self.members = [self._spawn(i) for i in range(placement.spec(role).count)]

    def _spawn(self, i: int):
        return self.placement.spawn(
            self.role, self.cls, *self.args_of(i), index=i, actor_options=self.actor_options
        )

    def __getitem__(self, i: int):
        return self.members[i]

    def call(self, method: str, *args, **kwargs) -> list[ray.ObjectRef]:
        """`method(*args, **kwargs)` on every member; their object references in rank order."""
        return [getattr(m, method).remote(*args, **kwargs) for m in self.members]

    def join(self) -> list[ray.ObjectRef]:
        """Form the role's collective group: every member joins at rank 0's address."""
        host, port = ray.get(self.members[0].group_address.remote())
        return self.call("join_group", host, port)

    def index_of(self, actor_id: str | None) -> int | None:
        """Which member has Ray actor id `actor_id` (hex), if any."""
        for i, member in enumerate(self.members):
            if actor_id and member._actor_id.hex() == actor_id:
                return i
        return None

    def restart(self, i: int):
        """Replace member i by a fresh actor in the same bundle (the old one is killed if it
        still runs); the caller rejoins it to whatever group it belonged to."""
        _kill(self.members[i])
        self.members[i] = self._spawn(i)
        logger.warning("restarted %s %d", self.role.value, i)
        return self.members[i]

    def restart_all(self) -> None:
        """Replace every member (a collective group with a dead member cannot go on)."""
        for i in range(len(self.members)):
            self.restart(i)

    def kill(self) -> None:
        """Kill every member."""
        for member in self.members:
            _kill(member)


def _kill(actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def serve_deployment(cls: type, settings: Any, env_vars: dict[str, str]):
    """`cls` (a plain class with `async start()`) as a Ray Serve deployment: each replica
    builds it and awaits `start()` before taking requests, on a GPU where the cluster
    has one. `settings` gives `num_replicas`, `max_ongoing_requests` and `num_cpus`."""
    from ray import serve

    class Replica(cls):  # type: ignore[misc, valid-type]
        async def __init__(self, *args, **kwargs):  # type: ignore[misc]  # Serve awaits it
            super().__init__(*args, **kwargs)
            await self.start()

    Replica.__name__ = Replica.__qualname__ = cls.__name__
    use_gpu = cluster_has_gpus()
    return serve.deployment(
        Replica,
        name=cls.__name__,
        num_replicas=settings.num_replicas,
        max_ongoing_requests=settings.max_ongoing_requests,
        ray_actor_options={
            "num_cpus": 0 if use_gpu else settings.num_cpus,
            "num_gpus": 1 if use_gpu else 0,
            "runtime_env": {"env_vars": dict(env_vars)},
        },
    )
