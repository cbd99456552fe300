"""Where each role runs: placement groups built from the config.

One bundle per role instance: rollout engines, the actor-learner ranks, the
reference ranks (when there is a KL term), the critic ranks (with GAE) and the agent
loop. With `ray.colocate_models` reference and critic rank i instead share learner
rank i's bundle, each actor asking for a fraction of it (a third of a GPU each, say). On a cluster with GPUs the model roles get GPU bundles; in
local CPU mode every bundle is one logical CPU (the roles take turns on the real
cores: rollout, then reference, then update; on a cluster with fewer logical CPUs than
bundles each bundle asks for an equal share). Role classes are plain; this module
is the only place that wraps them with `ray.remote` and pins them to a bundle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rayrl.config import ConfigStore


class PlacementError(RuntimeError):
    """The cluster cannot hold the requested layout."""


@dataclass(frozen=True)
class RoleSpec:
    """How many instances of a role, and what each of its actors asks for.

    A role with `host` set has no bundles of its own: its actors live in the first
    bundles of the host role (colocation), each asking for a share of the bundle.
    """

    name: str
    count: int
    cpus: float
    gpus: float
    host: str | None = None


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
    models = ["learner"]
    if config.training.kl_coef > 0:
        models.append("reference")
    if config.training.adv_estimator == "gae":
        models.append("critic")
    counts = {
        "learner": config.training.num_learners,
        "reference": config.training.num_references,
        "critic": config.critic.num_ranks,
    }
    roles = [RoleSpec("rollout", config.inference.num_engines, 1.0, gpu)]
    if config.ray.colocate_models:
        share = 1.0 / len(models)
        for name in models:
            host = None if name == "learner" else "learner"
            roles.append(RoleSpec(name, counts[name], share, gpu * share, host))
    else:
        roles += [RoleSpec(name, counts[name], 1.0, gpu) for name in models]
    roles.append(RoleSpec("agent_loop", 1, 1.0, 0.0))
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
                bundles[i]["CPU"] = bundles[i].get("CPU", 0.0) + role.cpus
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
            f"{r.name} x{r.count}" + (f" in {r.host}'s bundle" if r.host else "") for r in self.roles
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

    def spawn(self, role: str, cls: type, *args, index: int = 0, actor_options: dict | None = None, **kwargs):
        """Start `cls(*args, **kwargs)` as an actor in instance `index`'s bundle of `role`."""
        spec = next(r for r in self.roles if r.name == role)
        bundle = self.bundle_index[role][index]
        options = {
            "num_cpus": spec.cpus,
            "num_gpus": spec.gpus,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.pg, placement_group_bundle_index=bundle
            ),
            "max_restarts": 0,
        }
        options.update(actor_options or {})
        return ray.remote(cls).options(**options).remote(*args, **kwargs)

    def remove(self) -> None:
        """Free the bundles (actors in them are killed by Ray)."""
        remove_placement_group(self.pg)
