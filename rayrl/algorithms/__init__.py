"""Pure tensor functions for RL on language models, one module per family.

`ADVANTAGE_ESTIMATORS` is the one registry of advantage estimators: adding one is
adding a function and a line there.
"""

from rayrl.algorithms.advantages import ADVANTAGE_ESTIMATORS, compute_grpo_advantage
from rayrl.algorithms.kl import KLController, kl_penalty
from rayrl.algorithms.losses import aggregate_loss, compute_policy_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KLController",
    "aggregate_loss",
    "compute_grpo_advantage",
    "compute_policy_loss",
    "kl_penalty",
]
