"""Pure tensor functions for RL on language models, one module per family.

advantages (one registry, `ADVANTAGE_ESTIMATORS`), losses, kl, filters, and the
masked helpers they share. Adding an estimator is a function and a registry line.
"""

from rayrl.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    compute_advantages,
    compute_gae,
    compute_grpo_advantage,
    compute_rloo_advantage,
    discounted_returns,
)
from rayrl.algorithms.filters import informative_groups, normalize_rewards
from rayrl.algorithms.kl import KLController, apply_kl_to_rewards, kl_penalty
from rayrl.algorithms.losses import (
    aggregate_loss,
    compute_policy_loss,
    compute_value_loss,
    entropy_from_logits,
)
from rayrl.algorithms.masked import masked_mean, masked_whiten, pad_tokens, unpad_tokens

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AdvantageInputs",
    "KLController",
    "aggregate_loss",
    "apply_kl_to_rewards",
    "compute_advantages",
    "compute_gae",
    "compute_grpo_advantage",
    "compute_policy_loss",
    "compute_rloo_advantage",
    "compute_value_loss",
    "discounted_returns",
    "entropy_from_logits",
    "informative_groups",
    "kl_penalty",
    "masked_mean",
    "masked_whiten",
    "normalize_rewards",
    "pad_tokens",
    "unpad_tokens",
]
