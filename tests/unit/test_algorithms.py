"""Algorithm functions against numbers worked out by hand (float64)."""

import math

import pytest
import torch

from rayrl.algorithms import (
    ADVANTAGE_ESTIMATORS,
    KLController,
    aggregate_loss,
    compute_grpo_advantage,
    compute_policy_loss,
    kl_penalty,
)

f64 = torch.float64


def test_grpo_advantage_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 2.0], dtype=f64)
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2])
    adv = compute_grpo_advantage(rewards, groups, eps=0.0)
    # group 0: mean 0.5, unbiased std sqrt(1/3)
    s = math.sqrt(1 / 3)
    assert adv[:4].tolist() == pytest.approx([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s])
    # all-equal group and a group of one carry no signal
    assert adv[4:].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert ADVANTAGE_ESTIMATORS["grpo"].needs_groups and not ADVANTAGE_ESTIMATORS["grpo"].needs_critic


def test_grpo_mean_only_centring():
    adv = compute_grpo_advantage(
        torch.tensor([3.0, 1.0], dtype=f64), torch.tensor([7, 7]), normalize_std=False
    )
    assert adv.tolist() == [1.0, -1.0]


def test_policy_loss_clipping_by_hand():
    old = torch.zeros(4, dtype=f64)
    logp = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.7], dtype=f64))
    adv = torch.tensor([1.0, -1.0, -2.0, 1.0], dtype=f64)
    loss, clipped = compute_policy_loss(logp, old, adv, clip_low=0.2, clip_high=0.3)
    # ratio 1.5, A=+1: clipped to 1.3 -> loss -1.3 (clip binds)
    # ratio 0.5, A=-1: max(0.5, 0.8) = 0.8 (clip binds)
    # ratio 1.1, A=-2: max(2.2, 2.2) = 2.2 (inside range)
    # ratio 0.7, A=+1: max(-0.7, -0.8) = -0.7 (pessimistic: unclipped)
    assert loss.tolist() == pytest.approx([-1.3, 0.8, 2.2, -0.7])
    assert clipped.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_kl_estimators_by_hand():
    logp = torch.tensor([-1.0, -2.0], dtype=f64)
    ref = torch.tensor([-1.5, -1.0], dtype=f64)
    r = ref - logp  # [-0.5, 1.0]
    assert kl_penalty(logp, ref, "k1").tolist() == pytest.approx([0.5, -1.0])
    assert kl_penalty(logp, ref, "k2").tolist() == pytest.approx([0.125, 0.5])
    k3 = [math.exp(x) - 1 - x for x in r.tolist()]
    assert kl_penalty(logp, ref, "k3").tolist() == pytest.approx(k3)
    assert kl_penalty(logp, logp, "k3").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k9")


def test_aggregation_modes_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], dtype=f64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate_loss(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    # global denominators make micro-batch sums equal the full-batch value
    part = aggregate_loss(loss[:1], mask[:1], "token-mean", num_tokens=4) + aggregate_loss(
        loss[1:], mask[1:], "token-mean", num_tokens=4
    )
    assert part.item() == pytest.approx(10 / 4)
    # an empty response contributes nothing and does not divide by zero
    empty = aggregate_loss(loss, torch.zeros_like(mask), "token-mean")
    assert empty.item() == 0.0


def test_kl_controller_fixed_and_adaptive():
    fixed = KLController(0.1)
    assert fixed.update(5.0, 100) == 0.1
    adaptive = KLController(0.1, target_kl=1.0, horizon=100)
    assert adaptive.update(2.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    assert adaptive.update(0.0, 10) < 0.1 * (1 + 0.2 * 10 / 100)
