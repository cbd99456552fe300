"""Where each role runs: placement groups built from the config.

One bundle per role instance: rollout engines, the actor-learner, the reference
(when there is a KL term), the critic (with GAE) and the agent loop. On a cluster with GPUs the model roles get GPU bundles; in
local CPU mode every bundle is one logical CPU (the roles take turns on the real
cores: rollout, then reference, then update). Role classes are plain; this module
is the only place that wraps them with `ray.remote` and pins them to a bundle.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rayrl.config import ConfigStore


class PlacementError(RuntimeError):
    """The cluster cannot hold the requested layout."""


@dataclass(frozen=True)
class RoleSpec:
    """How many instances of a role, and what each bundle holds."""

    name: str
    count: int
    cpus: float
    gpus: float


def plan_roles(config: ConfigStore, use_gpu: bool) -> list[RoleSpec]:
    """Bundles each role needs for this config."""
    gpu = 1.0 if use_gpu else 0.0
    roles = [
        RoleSpec("rollout", config.inference.num_engines, 1.0, gpu),
        RoleSpec("learner", config.training.num_learners, 1.0, gpu),
    ]
    if config.training.kl_coef > 0:
        roles.append(RoleSpec("reference", 1, 1.0, gpu))
    if config.training.adv_estimator == "gae":
        roles.append(RoleSpec("critic", 1, 1.0, gpu))
    roles.append(RoleSpec("agent_loop", 1, 1.0, 0.0))
    return roles


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
        bundles = []
        for role in roles:
            self.bundle_index[role.name] = []
            for _ in range(role.count):
                self.bundle_index[role.name].append(len(bundles))
                bundle = {"CPU": role.cpus}
                if role.gpus:
                    bundle["GPU"] = role.gpus
                bundles.append(bundle)
        self.bundles = bundles
        self.pg: PlacementGroup = placement_group(bundles, strategy=strategy, name="rayrl")
        ready, _ = ray.wait([self.pg.ready()], timeout=timeout_s)
        if not ready:
            remove_placement_group(self.pg)
            raise PlacementError(self._explain(timeout_s))

    def _explain(self, timeout_s: float) -> str:
        have = ray.cluster_resources()
        need_cpu = sum(b["CPU"] for b in self.bundles)
        need_gpu = sum(b.get("GPU", 0) for b in self.bundles)
        layout = ", ".join(f"{r.name} x{r.count}" for r in self.roles)
        parts = [f"needs {len(self.bundles)} bundles ({layout}): {need_cpu:g} CPU"]
        if need_gpu:
            parts.append(f"{need_gpu:g} GPU")
        return (
            f"placement group not ready after {timeout_s:g}s: the layout "
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
