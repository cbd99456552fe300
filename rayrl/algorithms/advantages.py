"""Outcome-level advantage estimators.

Each estimator maps per-episode scalar rewards and group ids to one advantage per
episode; the learner broadcasts it over that episode's trainable tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def compute_grpo_advantage(
    rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6, normalize_std: bool = True
) -> torch.Tensor:
    """Group-relative advantage (GRPO): (r - mean(group)) / (std(group) + eps).

    Args:
        rewards: shape (N,), one scalar reward per episode.
        group_ids: shape (N,), episodes sharing an id were sampled from the same prompt.
        eps: added to the standard deviation; a group whose rewards are all equal gets 0.
        normalize_std: divide by the group's standard deviation (False gives Dr.GRPO's
            mean-only centring).

    Returns:
        shape (N,) advantages, same dtype as `rewards`. A group of one gets 0.
    """
    rewards = rewards.to(torch.float64) if rewards.dtype == torch.float64 else rewards.float()
    adv = torch.zeros_like(rewards)
    for gid in torch.unique(group_ids):
        idx = group_ids == gid
        r = rewards[idx]
        if r.numel() < 2:
            continue
        centred = r - r.mean()
        if normalize_std:
            std = r.std(unbiased=True)
            centred = centred / (std + eps) if std > 0 else torch.zeros_like(centred)
        adv[idx] = centred
    return adv


AdvantageFn = Callable[..., torch.Tensor]

ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {
    "grpo": compute_grpo_advantage,
}
