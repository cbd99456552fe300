"""Reward-weighted regression (Peters & Schaal 2007, in the advantage-weighted form of
Peng et al. 2019): supervised log-likelihood of collected actions, each action's tokens
weighted by how much better than the average action it did.

    w_a = min(exp((r_a - mean r) / temperature), max_weight),  then scaled to mean 1
    loss = -sum_tokens w_a(token) * log pi(token)  (aggregated like any policy loss)

The rewards are per action, not per episode: one episode's good steps and bad steps
get different weights. Offline fine-tuning on trajectories (`rayrl.offline`) trains with
it on the same learner actors as PPO (`training.policy_loss: rwr`, the weights in the
batch's `advantages` column).
"""

from __future__ import annotations

import numpy as np
import torch


def reward_weights(
    rewards: np.ndarray | list[float],
    temperature: float = 1.0,
    max_weight: float = 20.0,
    baseline: float | None = None,
) -> np.ndarray:
    """Weight of each action from its reward.

    Args:
        rewards: one reward per action.
        temperature: > 0; smaller sharpens the preference for high rewards.
        max_weight: cap of a weight before scaling (keeps one lucky action from dominating).
        baseline: reward that weighs exp(0) = 1; default the mean reward.

    Returns:
        float64 weights, scaled to mean 1 (so the loss stays on the scale of plain
        log-likelihood).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if max_weight <= 0:
        raise ValueError(f"max_weight must be > 0, got {max_weight}")
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        return r
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite")
    base = float(r.mean()) if baseline is None else float(baseline)
    w = np.minimum(np.exp(np.minimum((r - base) / temperature, 50.0)), max_weight)
    return w / w.mean()


def compute_rwr_loss(logprobs: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token weighted negative log-likelihood: -weights * logprobs.

    Args:
        logprobs: log-probabilities of the trajectory's tokens under the policy, (N,).
        weights: each token's weight (its action's), (N,); no gradient flows into it.

    Returns:
        (per-token loss, zeros: nothing is clipped), the shape of the other policy losses.
    """
    return -weights.detach() * logprobs, torch.zeros_like(logprobs)
