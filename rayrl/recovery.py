"""What a run does when one of its actors dies.

Each role recovers the cheapest way that keeps training exact:

- a rollout engine that dies while serving the step is replaced in its bundle, rejoins
  the weight-sync group, is loaded with the current weight version (the canary checks
  it), and the episodes it was serving run again (`rayrl.pipeline` calls
  `recover_engines`);
- a reference rank, the agent loop or the scorer hold nothing that changes during a
  run: the dead actor is replaced in place and the step runs again from the same task
  sample (with `training.deterministic`, the same episodes);
- a learner or critic rank leaves its data-parallel group stuck mid-collective and
  its training state lost: the group is restarted whole, and the learner and critic
  go back to the newest checkpoint (weights, optimizer, RNG, step, KL controller),
  which is loaded into the engines before they serve again.

Every restart but an engine's counts against `training.max_failures`; engines have
their own budget, `inference.max_engine_restarts`. Past them, or without a checkpoint
to go back to, the run stops with a message naming the actor and its exit cause.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import ray

from rayrl.actors.scoring import Scorer
from rayrl.placement import Role

if TYPE_CHECKING:
    from rayrl.trainer import RayPPOTrainer

logger = logging.getLogger(__name__)

_ACTOR_ID = re.compile(r"actor_id[=:\s]+([0-9a-f]{32})")
SCORER = "scorer"


def dead_actor_ids(err: BaseException) -> list[str]:
    """Ray actor ids a death error names: its own, then those in its text (a task that
    failed because an actor it read from died names both the task's actor and the dead one)."""
    own = getattr(err, "actor_id", None)
    return ([own] if own else []) + _ACTOR_ID.findall(str(err))


def _is_dead(actor) -> bool:
    """Whether `actor` is gone (a live one, even a busy one, answers within a few seconds or
    is at least not reported dead)."""
    try:
        ray.get(actor.__ray_ready__.remote(), timeout=5)
    except ray.exceptions.RayActorError:
        return True
    except ray.exceptions.GetTimeoutError:
        return False
    return False


def describe(err: BaseException) -> str:
    """One line: the error type and the first lines of its text (the exit cause)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {' '.join(lines[:3])[:400]}"


class Recovery:
    """Restarts a trainer's dead actors (see the module docstring) and counts them."""

    def __init__(self, trainer: RayPPOTrainer):
        self.trainer = trainer
        self.engine_restarts = 0  # rollout engines replaced
        self.role_restarts = 0  # reference ranks, agent loop or scorer replaced in place
        self.run_restarts = 0  # rollbacks of learner and critic to the newest checkpoint
        self._step_sampler: Any = None

    def begin_step(self) -> None:
        """Remember the task sampler's state, so a step that fails can run again as it was."""
        self._step_sampler = self.trainer.sampler_state()

    # ---- engines ------------------------------------------------------------------
    def recover_engines(self, dead: list[int]) -> None:
        """Replace dead engines in their bundles, rebuild the sync group and load the current
        weights into every engine before any of them serves again."""
        t = self.trainer
        limit = t.config.inference.max_engine_restarts
        if self.engine_restarts + len(dead) > limit:
            raise RuntimeError(
                f"rollout engine(s) {dead} died and {self.engine_restarts} restart(s) of "
                f"inference.max_engine_restarts={limit} are used up; stopping"
            )
        group = t.groups[Role.ROLLOUT]
        ray.get([group.restart(i).start.remote() for i in dead])  # a dead vLLM core's actor is killed
        t.join_weight_sync()
        # every engine gets the learner's current weights (with max_staleness > 0 the others
        # catch up too; each token records the version that generated it)
        t.sync_weights()
        self.engine_restarts += len(dead)

    # ---- any other role -----------------------------------------------------------
    def find(self, err: BaseException) -> tuple[Role | str | None, int]:
        """Which role's member died (`SCORER` for the scorer; None when the error names no
        actor of this run), and its index in the role."""
        ids = dead_actor_ids(err)
        for actor_id in ids:
            for role, group in self.trainer.groups.items():
                index = group.index_of(actor_id)
                if index is not None and _is_dead(group[index]):
                    return role, index
        scorer = self.trainer.scorer
        if scorer is not None and scorer._actor_id.hex() in ids and _is_dead(scorer):
            return SCORER, 0
        return None, 0

    def recover(self, err: BaseException, step: int) -> int:
        """After an actor died during step `step` (0-based): restart what is needed and
        return the step to go on from. Raises past `training.max_failures`, or when a
        rollback has no checkpoint, naming the actor and its exit cause."""
        t = self.trainer
        role, index = self.find(err)
        limit = t.config.training.max_failures
        name = f"{getattr(role, 'value', role)} {index}" if role is not None else "a training role"
        why = describe(err)
        in_place = role in (Role.REFERENCE, Role.AGENT_LOOP, SCORER)
        latest = None if in_place else t.checkpoints.latest()
        if self.role_restarts + self.run_restarts >= limit:
            raise RuntimeError(
                f"{name} died ({why}) and training.max_failures={limit} restarts are used up; stopping"
            ) from err
        if not in_place and latest is None:
            raise RuntimeError(
                f"{name} died ({why}) and there is no checkpoint to restart from "
                "(set checkpoint.save_interval); stopping"
            ) from err

        t.rollouts.reset()  # batches generated ahead are dropped
        if in_place:
            logger.warning("%s died (%s); restarting it and running step %d again", name, why, step + 1)
            if role == SCORER:
                t.scorer = t._placement.spawn(Role.AGENT_LOOP, Scorer, actor_options={"num_cpus": 0})
            else:
                t.groups[role].restart(index)
                t.start_roles([role])
            self.role_restarts += 1
            t.set_sampler_state(self._step_sampler)
            return step

        logger.warning("%s died (%s); going back to %s", name, why, latest)
        self.run_restarts += 1
        if role in (Role.LEARNER, Role.CRITIC):
            t.groups[role].restart_all()  # its peers are stuck in a collective with the dead rank
            t.start_roles([role])
            t.restore(latest)  # learner and critic back to the checkpoint, engines loaded with it
        else:  # an engine outside a rollout (e.g. mid-sync), or an actor no role owns
            t.stop_roles()
            t.setup(resume=latest)
        if t._callback_state:
            t.callbacks.load_state_dict(t._callback_state)
        return t.start_step
