"""Advantage estimators, one registry.

Every estimator reads per-token rewards on the padded layout of
`rayrl.algorithms.masked` (the episode's score sits on its last generated token,
a KL penalty, when used as a reward, on every token) and returns per-token
(advantages, returns). Outcome estimators first sum each row's rewards to its score.

| name                  | baseline                               | normalisation            |
|-----------------------|----------------------------------------|--------------------------|
| gae                   | critic values, GAE(gamma, lambda)      | whitened over the batch  |
| grpo                  | group mean                             | / group std              |
| dr_grpo               | group mean                             | none (Dr. GRPO)          |
| rloo                  | mean of the other samples of the group | none                     |
| reinforce_pp          | none; discounted return per token      | whitened over the batch  |
| reinforce_pp_baseline | group mean of scores                   | whitened over the batch  |

A group of one has no baseline: grpo, dr_grpo and rloo give it advantage 0.
Groups whose rewards are all equal get 0 from the group estimators too; see
`rayrl.algorithms.filters` to drop them from the batch instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rayrl.algorithms.masked import masked_whiten
from rayrl.algorithms.registry import ESTIMATORS, EstimatorTraits


def _scores(token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (token_rewards * mask.to(token_rewards.dtype)).sum(-1)


def _broadcast(per_row: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return per_row.unsqueeze(-1) * mask.to(per_row.dtype)


def compute_grpo_advantage(
    rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6, normalize_std: bool = True
) -> torch.Tensor:
    """Group-relative advantage of per-episode rewards: (r - mean(group)) / (std(group) + eps).

    Args:
        rewards: shape (N,), one scalar reward per episode.
        group_ids: shape (N,), episodes sharing an id were sampled from the same prompt.
        eps: added to the (sample) standard deviation.
        normalize_std: divide by the group's standard deviation (False: Dr. GRPO).

    Returns:
        shape (N,); 0 for a group of one and for a group whose rewards are all equal.
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


def compute_rloo_advantage(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Leave-one-out baseline: r_i - mean of the other rewards of i's group (0 for a group of one)."""
    adv = torch.zeros_like(rewards)
    for gid in torch.unique(group_ids):
        idx = group_ids == gid
        r = rewards[idx]
        n = r.numel()
        if n >= 2:
            adv[idx] = r - (r.sum() - r) / (n - 1)
    return adv


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t+1} along each row's masked tokens (0 elsewhere)."""
    mask_f = mask.to(token_rewards.dtype)
    out = torch.zeros_like(token_rewards)
    running = torch.zeros(token_rewards.shape[0], dtype=token_rewards.dtype)
    for t in reversed(range(token_rewards.shape[1])):
        running = token_rewards[:, t] + gamma * running * mask_f[:, t]
        out[:, t] = running * mask_f[:, t]
    return out


def compute_gae(
    token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's masked tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t (V after the last token is 0);
    A_t = delta_t + gamma * lam * A_{t+1}; returns = A + V (the critic's targets).
    Advantages are not whitened here (see `gae`).
    """
    mask_f = mask.to(token_rewards.dtype)
    values = values * mask_f
    adv = torch.zeros_like(token_rewards)
    last = torch.zeros(token_rewards.shape[0], dtype=token_rewards.dtype)
    next_value = torch.zeros_like(last)
    for t in reversed(range(token_rewards.shape[1])):
        m = mask_f[:, t]
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * m
        adv[:, t] = last
        next_value = values[:, t] * m + next_value * (1 - m)
    return adv, (adv + values) * mask_f


@dataclass(frozen=True)
class AdvantageInputs:
    """What an estimator may read; padded (B, L) tensors except `group_ids` (B,)."""

    token_rewards: torch.Tensor
    mask: torch.Tensor
    group_ids: torch.Tensor
    values: torch.Tensor | None = None
    gamma: float = 1.0
    lam: float = 1.0


def gae(x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    if x.values is None:
        raise ValueError("adv_estimator 'gae' needs critic values")
    adv, returns = compute_gae(x.token_rewards, x.values, x.mask, x.gamma, x.lam)
    return masked_whiten(adv, x.mask), returns


def grpo(x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    adv = _broadcast(compute_grpo_advantage(_scores(x.token_rewards, x.mask), x.group_ids), x.mask)
    return adv, adv


def dr_grpo(x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    scores = _scores(x.token_rewards, x.mask)
    adv = _broadcast(compute_grpo_advantage(scores, x.group_ids, normalize_std=False), x.mask)
    return adv, adv


def rloo(x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    adv = _broadcast(compute_rloo_advantage(_scores(x.token_rewards, x.mask), x.group_ids), x.mask)
    return adv, adv


def reinforce_pp(x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    returns = discounted_returns(x.token_rewards, x.mask, x.gamma)
    return masked_whiten(returns, x.mask), returns


def reinforce_pp_baseline(x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    scores = _scores(x.token_rewards, x.mask)
    centred = compute_grpo_advantage(scores, x.group_ids, normalize_std=False)
    # A group of one keeps its raw score (there is nothing to subtract).
    singles = torch.tensor([int((x.group_ids == g).sum()) == 1 for g in x.group_ids])
    centred = torch.where(singles, scores, centred)
    adv = _broadcast(centred, x.mask)
    return masked_whiten(adv, x.mask), adv


@dataclass(frozen=True)
class Estimator:
    """A registered estimator's function and what it needs (from `registry.ESTIMATORS`)."""

    fn: Callable[[AdvantageInputs], tuple[torch.Tensor, torch.Tensor]]
    traits: EstimatorTraits

    @property
    def needs_critic(self) -> bool:
        return self.traits.needs_critic

    @property
    def needs_groups(self) -> bool:
        return self.traits.needs_groups


_FUNCTIONS = {
    "gae": gae,
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
    "reinforce_pp": reinforce_pp,
    "reinforce_pp_baseline": reinforce_pp_baseline,
}
if set(_FUNCTIONS) != set(ESTIMATORS):  # adding an estimator is a function and a registry line
    raise ImportError(f"estimator functions {sorted(_FUNCTIONS)} != registry {sorted(ESTIMATORS)}")
ADVANTAGE_ESTIMATORS: dict[str, Estimator] = {
    name: Estimator(_FUNCTIONS[name], t) for name, t in ESTIMATORS.items()
}


def compute_advantages(name: str, inputs: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (advantages, returns) by the estimator registered as `name`."""
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; choose from {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[name].fn(inputs)
