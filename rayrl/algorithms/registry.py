"""Which advantage estimators exist and what each needs: the one place that says.

Torch-free, so the config can validate against it in milliseconds; the estimators'
functions live in `rayrl.algorithms.advantages`, keyed by the same names. The
placement reads `needs_critic` to decide whether a critic role exists, the config
reads `needs_groups` to demand `training.group_size >= 2`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EstimatorTraits:
    """What an estimator needs from the rest of the run."""

    needs_critic: bool = False
    """Values from a critic role (GAE)."""

    needs_groups: bool = False
    """Several samples per prompt (its baseline comes from the group)."""


ESTIMATORS: dict[str, EstimatorTraits] = {
    "gae": EstimatorTraits(needs_critic=True),
    "grpo": EstimatorTraits(needs_groups=True),
    "dr_grpo": EstimatorTraits(needs_groups=True),
    "rloo": EstimatorTraits(needs_groups=True),
    "reinforce_pp": EstimatorTraits(),
    "reinforce_pp_baseline": EstimatorTraits(needs_groups=True),
}
