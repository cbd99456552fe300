"""The statistics of `rayrl eval` against independent computations."""

import itertools
import math
import random

import pytest

from rayrl.evaluation import mean_interval, pass_at_k, summarize, table, wilson_interval


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662; 0/10 -> 0 to 0.2775
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_pass_at_k_is_the_chance_that_some_of_k_draws_is_right():
    for n, c, k in [(5, 2, 1), (5, 2, 2), (6, 1, 3), (4, 0, 2), (4, 4, 1), (5, 3, 3)]:
        draws = list(itertools.combinations([True] * c + [False] * (n - c), k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(d) for d in draws) / len(draws), rel=1e-12)


def test_summary_of_episodes():
    rng = random.Random(0)
    groups = [g for g in range(20) for _ in range(4)]
    success = [rng.random() < 0.3 for _ in groups]
    rewards = [float(s) for s in success]
    out = summarize(rewards, success, groups, samples=4)
    assert out["tasks"] == 20 and out["episodes"] == 80
    assert out["success_rate"] == pytest.approx(sum(success) / 80)
    low, high = out["success_ci95"]
    assert low < out["success_rate"] < high
    per_task = [sum(success[4 * g : 4 * g + 4]) for g in range(20)]
    assert out["pass@4"] == pytest.approx(sum(c > 0 for c in per_task) / 20)
    assert out["pass@1"] == pytest.approx(out["success_rate"])
    mean, lo, hi = mean_interval([0.0, 1.0, 2.0, 3.0, 4.0])
    half = 1.959963984540054 * math.sqrt(2.5) / math.sqrt(5)
    assert mean == 2.0 and (lo, hi) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    mean, lo, hi = mean_interval([0.0] * 198 + [1.0, 1.5])  # rare rewards: no bound below 0
    assert lo == 0.0 < mean < hi < 1.5
    text = table({"base": out, "trained": out})
    assert text.splitlines()[0].startswith("| policy | episodes | reward_mean") and "| trained | 80 |" in text
