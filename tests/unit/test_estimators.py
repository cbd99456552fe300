"""Every estimator and loss against a float64 reference written independently here
(plain Python loops over lists, numpy only for means), with masks and edge cases:
a group of one, all-equal rewards, an empty response."""

import math
import random

import numpy as np
import pytest
import torch

from rayrl.algorithms import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    aggregate_loss,
    apply_kl_to_rewards,
    compute_advantages,
    compute_cispo_loss,
    compute_gspo_loss,
    compute_policy_loss,
    compute_value_loss,
    entropy_from_logits,
    informative_groups,
    normalize_rewards,
    pad_tokens,
    rollout_correction,
    unpad_tokens,
)

f64 = torch.float64


def ragged_batch(seed=0):
    """Rows of different lengths (one empty), groups incl. one of a single episode and one all-equal."""
    rng = random.Random(seed)
    lengths = [3, 5, 1, 4, 0, 2, 6, 3]
    groups = [0, 0, 0, 1, 1, 1, 2, 3]  # group 2 and 3 are singletons
    rewards = [[rng.uniform(-1, 1) for _ in range(n)] for n in lengths]
    # group 1: all-equal episode scores
    for row in (3, 4, 5):
        rewards[row] = [0.0] * lengths[row]
        if lengths[row]:
            rewards[row][-1] = 0.7
    # row 4 is empty: its score is 0, not 0.7; make the group unequal only through that
    values = [[rng.uniform(-1, 1) for _ in range(n)] for n in lengths]
    return lengths, groups, rewards, values


def to_padded(rows):
    flat = torch.tensor([x for row in rows for x in row], dtype=f64)
    return pad_tokens(flat, torch.tensor([len(r) for r in rows]))


def inputs(seed=0, gamma=1.0, lam=1.0):
    lengths, groups, rewards, values = ragged_batch(seed)
    r, mask = to_padded(rewards)
    v, _ = to_padded(values)
    return AdvantageInputs(r, mask, torch.tensor(groups), v, gamma, lam), (lengths, groups, rewards, values)


def whiten_ref(rows):
    flat = [x for row in rows for x in row]
    mean = sum(flat) / len(flat)
    var = sum((x - mean) ** 2 for x in flat) / len(flat)
    return [[(x - mean) / math.sqrt(var + 1e-8) for x in row] for row in rows]


def check(padded, mask, expected_rows):
    got = unpad_tokens(padded, mask).tolist()
    want = [x for row in expected_rows for x in row]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert float(padded[~mask].abs().sum()) == 0.0


def group_scores(groups, rewards):
    scores = [sum(r) for r in rewards]
    members = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return scores, members


def test_pad_and_unpad_round_trip_with_an_empty_row():
    flat = torch.arange(7, dtype=f64)
    padded, mask = pad_tokens(flat, torch.tensor([3, 0, 4]))
    assert padded.shape == (3, 4) and mask.sum() == 7 and not mask[1].any()
    assert unpad_tokens(padded, mask).tolist() == flat.tolist()


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_group_estimators(name):
    x, (lengths, groups, rewards, _) = inputs()
    scores, members = group_scores(groups, rewards)
    per_row = [0.0] * len(scores)
    for idx in members.values():
        s = [scores[i] for i in idx]
        n = len(s)
        if n < 2:
            continue  # no baseline for a group of one
        mean = sum(s) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in s) / (n - 1))
        for i in idx:
            if name == "grpo":
                per_row[i] = (scores[i] - mean) / (std + 1e-6) if std > 0 else 0.0
            elif name == "dr_grpo":
                per_row[i] = scores[i] - mean
            else:
                per_row[i] = scores[i] - (sum(s) - scores[i]) / (n - 1)
    adv, returns = compute_advantages(name, x)
    check(adv, x.mask, [[per_row[i]] * n for i, n in enumerate(lengths)])
    assert torch.equal(adv, returns)


def test_all_equal_group_gets_zero_from_grpo_and_rloo():
    mask = torch.ones(3, 2, dtype=torch.bool)
    r = torch.tensor([[0.0, 1.0]] * 3, dtype=f64)
    x = AdvantageInputs(r, mask, torch.tensor([5, 5, 5]))
    for name in ("grpo", "dr_grpo", "rloo"):
        assert compute_advantages(name, x)[0].abs().sum() == 0.0


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp(gamma):
    x, (lengths, _, rewards, _) = inputs(seed=1, gamma=gamma)
    returns = []
    for row in rewards:
        g, out = 0.0, []
        for r in reversed(row):
            g = r + gamma * g
            out.append(g)
        returns.append(out[::-1])
    adv, ret = compute_advantages("reinforce_pp", x)
    check(ret, x.mask, returns)
    check(adv, x.mask, whiten_ref(returns))


def test_reinforce_pp_baseline():
    x, (lengths, groups, rewards, _) = inputs(seed=2)
    scores, members = group_scores(groups, rewards)
    centred = list(scores)
    for idx in members.values():
        if len(idx) > 1:
            mean = sum(scores[i] for i in idx) / len(idx)
            for i in idx:
                centred[i] = scores[i] - mean
    adv, _ = compute_advantages("reinforce_pp_baseline", x)
    check(adv, x.mask, whiten_ref([[centred[i]] * n for i, n in enumerate(lengths)]))


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 1.0), (0.99, 0.95), (0.5, 0.0)])
def test_gae(gamma, lam):
    x, (lengths, _, rewards, values) = inputs(seed=3, gamma=gamma, lam=lam)
    advs, rets = [], []
    for r, v in zip(rewards, values, strict=True):
        n = len(r)
        a = [0.0] * n
        nxt_adv = 0.0
        for t in reversed(range(n)):
            nxt_v = v[t + 1] if t + 1 < n else 0.0
            delta = r[t] + gamma * nxt_v - v[t]
            nxt_adv = delta + gamma * lam * nxt_adv
            a[t] = nxt_adv
        advs.append(a)
        rets.append([a[t] + v[t] for t in range(n)])
    adv, ret = compute_advantages("gae", x)
    check(ret, x.mask, rets)
    check(adv, x.mask, whiten_ref(advs))
    # lam = 1, gamma = 1: the return is the plain reward-to-go (values cancel)
    if gamma == lam == 1.0:
        check(ret, x.mask, [[sum(r[t:]) for t in range(len(r))] for r in rewards])


def test_gae_needs_values_and_unknown_names_fail():
    x, _ = inputs()
    with pytest.raises(ValueError, match="critic values"):
        compute_advantages("gae", AdvantageInputs(x.token_rewards, x.mask, x.group_ids))
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        compute_advantages("ppo2", x)
    assert ADVANTAGE_ESTIMATORS["gae"].needs_critic
    assert not any(e.needs_critic for n, e in ADVANTAGE_ESTIMATORS.items() if n != "gae")


def test_dual_clip_policy_loss():
    rng = np.random.default_rng(0)
    lp = torch.tensor(rng.normal(0, 1.5, 64), dtype=f64)
    old = torch.tensor(rng.normal(0, 1.5, 64), dtype=f64)
    adv = torch.tensor(rng.normal(0, 1, 64), dtype=f64)
    lo, hi, c = 0.2, 0.28, 3.0
    loss, clipped = compute_policy_loss(lp, old, adv, lo, hi, clip_ratio_c=c)
    for i in range(64):
        ratio = math.exp(float(lp[i] - old[i]))
        a = float(adv[i])
        surrogate = max(-a * ratio, -a * min(max(ratio, 1 - lo), 1 + hi))
        want = min(surrogate, -a * c) if a < 0 else surrogate
        assert float(loss[i]) == pytest.approx(want, rel=1e-12)
    assert 0 < float(clipped.sum()) < 64
    with pytest.raises(ValueError):
        compute_policy_loss(lp, old, adv, clip_ratio_c=1.0)


def test_clipped_value_loss():
    rng = np.random.default_rng(1)
    v, old, ret = (torch.tensor(rng.normal(0, 1, 32), dtype=f64) for _ in range(3))
    eps = 0.2
    loss, frac = compute_value_loss(v, old, ret, eps)
    for i in range(32):
        vc = float(old[i]) + min(max(float(v[i] - old[i]), -eps), eps)
        want = 0.5 * max((float(v[i]) - float(ret[i])) ** 2, (vc - float(ret[i])) ** 2)
        assert float(loss[i]) == pytest.approx(want, rel=1e-12)
        clamped = abs(float(v[i] - old[i])) > eps
        assert float(frac[i]) == float(
            clamped and (vc - float(ret[i])) ** 2 > (float(v[i]) - float(ret[i])) ** 2
        )
    assert 0 < float(frac.sum()) < 32
    # inside the clip range nothing counts as clipped, whatever the rounding of old + (V - old)
    v32, old32, ret32 = (torch.tensor(rng.normal(0, s, 4096), dtype=torch.float32) for s in (0.1, 0.1, 1))
    keep = (v32 - old32).abs() <= eps
    _, inside = compute_value_loss(v32[keep], old32[keep], ret32[keep], eps)
    assert keep.sum() > 3000 and float(inside.sum()) == 0.0
    plain, _ = compute_value_loss(v, old, ret, None)
    assert plain.tolist() == pytest.approx((0.5 * (v - ret) ** 2).tolist())


def test_kl_as_reward_penalty():
    r = torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=f64)
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]], dtype=f64)
    ref = torch.tensor([[-1.5, -1.0], [-0.5, -1.0]], dtype=f64)
    mask = torch.tensor([[True, True], [True, False]])
    out, kl = apply_kl_to_rewards(r, lp, ref, mask, coef=0.1, estimator="k1")
    assert kl.tolist() == [[0.5, -1.0], [0.0, 0.0]]
    assert out.flatten().tolist() == pytest.approx([-0.05, 1.1, 2.0, 0.0])


def test_entropy_from_logits():
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]], dtype=f64, requires_grad=True)
    ent = entropy_from_logits(logits)
    assert ent[0].item() == pytest.approx(math.log(2), rel=1e-6)
    assert ent[1].item() < 1e-6
    ent.sum().backward()  # differentiable, so an entropy bonus trains
    assert logits.grad is not None


def test_group_filter_and_reward_normalisation():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.5, 2.0], dtype=f64)
    groups = torch.tensor([0, 0, 1, 1, 1, 2])
    assert informative_groups(rewards, groups).tolist() == [True, True, False, False, False, False]
    normed = normalize_rewards(rewards)
    mean = sum(rewards.tolist()) / 6
    std = math.sqrt(sum((x - mean) ** 2 for x in rewards.tolist()) / 6)
    assert normed.tolist() == pytest.approx([(x - mean) / std for x in rewards.tolist()])
    assert normalize_rewards(torch.ones(4, dtype=f64)).tolist() == [0.0] * 4


@pytest.mark.parametrize("mode", ["none", "truncate", "mask"])
def test_rollout_correction_against_a_reference(mode):
    """Weights for the engine/learner gap: TIS truncates w = pi/mu at the cap, MIS drops the
    tokens beyond it, "none" weighs every token 1; tokens beyond the cap are flagged."""
    rng = random.Random(3)
    learner = [rng.uniform(-4.0, 0.0) for _ in range(64)]
    engine = [x + rng.uniform(-1.5, 1.5) for x in learner]
    cap = 1.5
    weights, beyond = rollout_correction(
        torch.tensor(learner, dtype=f64), torch.tensor(engine, dtype=f64), mode, cap
    )
    flagged = 0
    for i, (a, b) in enumerate(zip(learner, engine, strict=True)):
        ratio = math.exp(a - b)
        expected = {"none": 1.0, "truncate": min(ratio, cap), "mask": 0.0 if ratio > cap else ratio}[mode]
        assert float(weights[i]) == pytest.approx(expected, rel=1e-12)
        assert float(beyond[i]) == float(ratio > cap)
        flagged += ratio > cap
    assert 0 < flagged < len(learner)  # the draw has tokens on both sides of the cap
    assert not weights.requires_grad
    with pytest.raises(ValueError, match="cap"):
        rollout_correction(torch.zeros(2), torch.zeros(2), "truncate", 1.0)


def test_gspo_loss_and_gradient_against_the_sequence_objective():
    """GSPO's per-token form, aggregated seq-mean-token-mean, has the value and gradient of
    the paper's sequence objective: max(-A s, -A clip(s)) per sequence, s = exp(mean log ratio),
    computed here per sequence, as the paper writes it."""
    rng = random.Random(4)
    lengths = [3, 1, 5, 2, 4, 6]
    lp = [[rng.uniform(-3.0, 0.0) for _ in range(n)] for n in lengths]
    old = [[x + rng.uniform(-0.02, 0.02) for x in row] for row in lp]
    adv = [rng.uniform(-1.0, 1.0) for _ in lengths]
    lo, hi = 3e-3, 4e-3
    # reference: one differentiable scalar per sequence
    ref_lp = [torch.tensor(row, dtype=f64, requires_grad=True) for row in lp]
    per_seq = []
    for row, row_old, a in zip(ref_lp, old, adv, strict=True):
        s = torch.exp((row - torch.tensor(row_old, dtype=f64)).mean())
        per_seq.append(torch.maximum(-a * s, -a * s.clamp(1 - lo, 1 + hi)))
    torch.stack(per_seq).mean().backward()
    # the loss as the learner computes it: flat tokens, one advantage per token
    flat = torch.tensor([x for row in lp for x in row], dtype=f64, requires_grad=True)
    seq_ids = torch.tensor([i for i, n in enumerate(lengths) for _ in range(n)])
    advantages = torch.tensor([adv[i] for i in seq_ids.tolist()], dtype=f64)
    loss, clipped = compute_gspo_loss(
        flat, torch.tensor([x for row in old for x in row], dtype=f64), advantages, seq_ids, lo, hi
    )
    dense = torch.zeros(len(lengths), max(lengths), dtype=f64)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    dense = dense.masked_scatter(mask, loss)
    total = aggregate_loss(dense, mask, "seq-mean-token-mean")
    total.backward()
    assert float(total.detach()) == pytest.approx(float(torch.stack(per_seq).mean().detach()), rel=1e-12)
    want_grad = [g for row in ref_lp for g in row.grad.tolist()]
    assert flat.grad.tolist() == pytest.approx(want_grad, rel=1e-10, abs=1e-15)
    # the draw clips some sequences and not others; a clipped sequence has no gradient
    flags = [bool(clipped[seq_ids == i].all()) for i in range(len(lengths))]
    assert any(flags) and not all(flags)
    for i, flag in enumerate(flags):
        assert (ref_lp[i].grad.abs().sum() == 0) == flag
    # every token of a sequence carries its sequence's ratio
    for i, row in enumerate(lp):
        s = math.exp(sum(a - b for a, b in zip(row, old[i], strict=True)) / len(row))
        want = max(-adv[i] * s, -adv[i] * min(max(s, 1 - lo), 1 + hi))
        assert loss[seq_ids == i].tolist() == pytest.approx([want] * len(row), rel=1e-12)


def test_cispo_loss_and_gradient_against_a_reference():
    """CISPO: -sg(clip(r)) * A * log pi per token, so a clipped token keeps a bounded gradient
    (PPO's clip would zero it)."""
    rng = random.Random(5)
    lp = [rng.uniform(-3.0, 0.0) for _ in range(48)]
    old = [x + rng.uniform(-0.6, 0.6) for x in lp]
    adv = [rng.uniform(-1.0, 1.0) for _ in lp]
    lo, hi = 0.2, 0.28
    flat = torch.tensor(lp, dtype=f64, requires_grad=True)
    loss, clipped = compute_cispo_loss(
        flat, torch.tensor(old, dtype=f64), torch.tensor(adv, dtype=f64), lo, hi
    )
    loss.sum().backward()
    n_clipped = 0
    for i, (a, b, g) in enumerate(zip(lp, old, adv, strict=True)):
        ratio = math.exp(a - b)
        w = min(max(ratio, 1 - lo), 1 + hi)
        assert float(loss[i].detach()) == pytest.approx(-w * g * a, rel=1e-12)
        assert float(flat.grad[i]) == pytest.approx(-w * g, rel=1e-12)  # the weight carries no gradient
        assert float(clipped[i]) == float(w != ratio)
        n_clipped += w != ratio
    assert 0 < n_clipped < len(lp)
