"""Batch shaping before advantages: reward normalisation and group filtering."""

from __future__ import annotations

import torch


def normalize_rewards(rewards: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(r - mean) / std over the batch (population std); a constant batch becomes all 0."""
    centred = rewards - rewards.mean()
    std = centred.square().mean().sqrt()
    return centred / (std + eps) if float(std) > 0 else torch.zeros_like(rewards)


def informative_groups(rewards: torch.Tensor, group_ids: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """Bool mask of episodes whose group's rewards are not all equal (DAPO's dynamic sampling).

    A group whose samples all scored the same gives every group-relative estimator a
    zero advantage: its tokens only dilute the loss. A group of one is dropped too.
    """
    keep = torch.zeros(rewards.shape[0], dtype=torch.bool)
    for gid in torch.unique(group_ids):
        idx = group_ids == gid
        r = rewards[idx]
        keep[idx] = r.numel() > 1 and bool((r.max() - r.min()) > tol)
    return keep
