"""Pure tensor functions for RL on language models, one module per family.

advantages, losses, kl, filters, rwr (reward-weighted regression), and the masked helpers they share; `registry` says
which estimators exist and what each needs (torch-free: the config reads it). Adding an
estimator is a function in `advantages` and a line in `registry`. Names load on first
use, so importing the registry does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(
        [
            "ADVANTAGE_ESTIMATORS",
            "AdvantageInputs",
            "compute_advantages",
            "compute_gae",
            "compute_grpo_advantage",
            "compute_rloo_advantage",
            "discounted_returns",
        ],
        "advantages",
    ),
    **dict.fromkeys(["informative_groups", "normalize_rewards"], "filters"),
    **dict.fromkeys(["KLController", "apply_kl_to_rewards", "kl_penalty"], "kl"),
    **dict.fromkeys(
        [
            "aggregate_loss",
            "compute_cispo_loss",
            "compute_gspo_loss",
            "compute_policy_loss",
            "compute_value_loss",
            "entropy_from_logits",
            "rollout_correction",
        ],
        "losses",
    ),
    **dict.fromkeys(["compute_rwr_loss", "reward_weights"], "rwr"),
    **dict.fromkeys(["masked_mean", "masked_whiten", "pad_tokens", "unpad_tokens"], "masked"),
    **dict.fromkeys(["ESTIMATORS", "EstimatorTraits"], "registry"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rayrl.algorithms' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rayrl.algorithms.{_EXPORTS[name]}"), name)
