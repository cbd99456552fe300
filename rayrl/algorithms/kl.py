"""KL estimators between the policy and the reference, and the KL controller.

With r = ref_logprob - logprob (per sampled token, sampled from the policy):
k1 = -r, k2 = r^2 / 2, k3 = exp(r) - 1 - r (Schulman's unbiased, always >= 0 estimator).
"""

from __future__ import annotations

from typing import Literal

import torch


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: Literal["k1", "k2", "k3"] = "k3"
) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate.

    Args:
        logprobs: policy log-probabilities of the sampled tokens.
        ref_logprobs: reference log-probabilities of the same tokens.
        estimator: "k1", "k2" or "k3".
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        # Clamp keeps exp() finite when the policy drifts far on a rare token.
        log_ratio = log_ratio.clamp(-20.0, 20.0)
        return torch.exp(log_ratio) - 1.0 - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; use k1, k2 or k3")


def apply_kl_to_rewards(
    token_rewards: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    coef: float,
    estimator: Literal["k1", "k2", "k3"] = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL as a reward penalty (InstructGPT style): r_t - coef * KL_t on every masked token.

    Returns:
        (penalised token rewards, per-token KL estimate (0 where `mask` is not set)).
    """
    kl = kl_penalty(logprobs, ref_logprobs, estimator) * mask.to(token_rewards.dtype)
    return token_rewards - coef * kl, kl


class KLController:
    """KL coefficient: fixed, or adaptive towards a target KL (Ziegler et al. 2019).

    Args:
        init_kl_coef: starting coefficient.
        target_kl: if set, the coefficient adapts so the measured KL approaches it.
        horizon: adaptation horizon in samples.
    """

    def __init__(self, init_kl_coef: float, target_kl: float | None = None, horizon: int = 10000):
        self.value = float(init_kl_coef)
        self.target_kl = target_kl
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """Adapt the coefficient after a batch of `n_steps` samples; returns the new value."""
        if self.target_kl is None:
            return self.value
        error = max(-0.2, min(0.2, current_kl / self.target_kl - 1.0))
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
