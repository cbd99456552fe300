"""Where each step's batch comes from: on-policy, or generated ahead of the learner.

`training.max_staleness` k = 0: the step samples its tasks, the engines (holding the
learner's newest weights) generate the batch, and after the update the new weights are
synced into the engines. The classic loop, unchanged.

k >= 1: generation runs ahead. While the reference, the critic and the learner work on
batch s, the engines already generate batch s + 1. Weights move into the engines only
between batches, never during one, so every token of a batch comes from one weight
version (each token records it; the metrics report how stale the batch was when trained
on). A sync happens only when the next batch would otherwise be more than k versions
behind the learner when it is trained on; with k = 1 that is after every update, with
k = 2 every other one. The loss corrects for the gap with `training.rollout_correction`
(importance weights between the engine's log-probs and the learner's).

On a GPU cluster the overlap hides generation behind the update; on a 2-core CPU machine
both phases share the same cores, so it mostly shows that the loop stays correct.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from rayrl.actors.agent_loop import EngineLost

if TYPE_CHECKING:
    from rayrl.trainer import RayPPOTrainer


@dataclass
class _Started:
    refs: Any  # (batch, stats) object references of the agent loop's collect
    sampler_before: Any  # the task sampler's state before this batch's tasks were drawn


class RolloutPipeline:
    """Hands `RayPPOTrainer.train_step` its batches (see the module docstring)."""

    def __init__(self, trainer: RayPPOTrainer):
        self.trainer = trainer
        self.max_staleness = trainer.config.training.max_staleness
        self.started: deque[_Started] = deque()
        self.last_sync: dict[str, Any] | None = None

    def _start(self, step: int) -> None:
        t, cfg = self.trainer, self.trainer.config.training
        sampler_before = t.sampler_state()
        tasks = t.draw_tasks(cfg.batch_size // cfg.group_size)
        seed = cfg.seed * 1_000_003 + step if cfg.deterministic else None
        refs = t.runner.collect.options(num_returns=2).remote(tasks, cfg.group_size, None, seed)
        self.started.append(_Started(refs, sampler_before))

    def batch(self, step: int) -> tuple[Any, dict]:
        """Step `step`'s batch (an object reference) and its stats. Engines that die while
        generating it are replaced and their episodes re-run (`Recovery.recover_engines`)."""
        t = self.trainer
        if not self.started:
            self._start(step)
        started = self.started.popleft()
        refs = started.refs
        while True:
            try:
                batch = refs[0], ray.get(refs[1])
                break
            except EngineLost as lost:
                t.recovery.recover_engines(lost.engines)
                refs = t.runner.retry_lost.options(num_returns=2).remote(t.engines)
        if self.max_staleness > 0 and step + 1 < t.total_steps:
            # the next batch is trained on after this step's update, at version t.version + 1
            if t.version + 1 - t.engine_version > self.max_staleness:
                self.last_sync = t.sync_weights()  # between batches: nothing is generating
            self._start(step + 1)
        return batch

    def after_update(self) -> dict[str, Any] | None:
        """On-policy (k = 0): sync the new weights now. Ahead (k >= 1): the sync waits for a
        batch boundary (`batch`); returns the step's sync figures, or None."""
        if self.max_staleness == 0:
            return self.trainer.sync_weights()
        sync, self.last_sync = self.last_sync, None
        return sync

    def finish(self) -> None:
        """After the last step: wait out a batch generated ahead that will not be trained on,
        and bring the engines to the learner's weights (what evaluation and serving use)."""
        t = self.trainer
        if self.started:
            ray.wait([s.refs[1] for s in self.started], num_returns=len(self.started))
            self.reset()
        if t.engine_version != t.version:
            t.sync_weights()

    def sampler_state(self) -> Any:
        """The task sampler's state as of the next batch still to be trained on (what a
        checkpoint keeps, so a resumed run draws the batches generated ahead again)."""
        return self.started[0].sampler_before if self.started else self.trainer.sampler_state()

    def reset(self) -> None:
        """Forget batches generated ahead (after a recovery: they may come from dead actors
        or from weights the run went back from); the sampler goes back to where it was."""
        if self.started:
            self.trainer.set_sampler_state(self.started[0].sampler_before)
        self.started.clear()
        self.last_sync = None
