"""`rayrl eval`: a policy on held-out episodes, with confidence intervals, against a base.

A run directory's final policy (or any model folder or name) plays held-out tasks of the
run's environment on the same actors training uses (engines and the agent loop, nothing
else). Per policy: mean reward with a 95% interval (normal approximation over tasks),
success rate with a 95% Wilson interval, and pass@k when k samples per task are asked for
(the unbiased estimator of Chen et al. 2021, averaged over tasks).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from rayrl.config import ConfigStore

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: list[float], z: float = Z95) -> tuple[float, float, float]:
    """Mean and its 95% interval (normal approximation, kept within the values' range: a
    mean of rewards that are never negative has no negative bound)."""
    if not values:
        return 0.0, 0.0, 0.0
    mean = statistics.fmean(values)
    half = z * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, max(min(values), mean - half), min(max(values), mean + half)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples out of n (c of them right) is right."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize(rewards: list[float], success: list[bool], groups: list[int], samples: int) -> dict[str, Any]:
    """The figures of one policy from per-episode rewards, success flags and task ids."""
    by_task: dict[int, list[bool]] = {}
    for g, ok in zip(groups, success, strict=True):
        by_task.setdefault(g, []).append(ok)
    task_rewards: dict[int, list[float]] = {}
    for g, r in zip(groups, rewards, strict=True):
        task_rewards.setdefault(g, []).append(r)
    mean, low, high = mean_interval([statistics.fmean(v) for v in task_rewards.values()])
    wins = sum(success)
    rate_low, rate_high = wilson_interval(wins, len(success))
    out = {
        "tasks": len(by_task),
        "episodes": len(success),
        "reward_mean": mean,
        "reward_ci95": [low, high],
        "success_rate": wins / len(success) if success else 0.0,
        "success_ci95": [rate_low, rate_high],
    }
    if samples > 1:
        out[f"pass@{samples}"] = statistics.fmean(
            pass_at_k(len(v), sum(v), samples) for v in by_task.values()
        )
        out["pass@1"] = statistics.fmean(pass_at_k(len(v), sum(v), 1) for v in by_task.values())
    return out


def evaluate_policy(
    config: ConfigStore,
    model: str,
    tasks: int,
    samples: int = 1,
    seed: int = 1234,
    temperature: float | None = None,
) -> dict:
    """Play `tasks` held-out tasks, `samples` episodes each (at `temperature`, default the
    run's), with the policy `model` on the run's engines and agent loop (no learner,
    reference or critic)."""
    import ray

    from rayrl.placement import Role
    from rayrl.trainer import RayPPOTrainer

    config = config.model_copy(deep=True)
    config.model.model_name = model
    config.checkpoint.run_dir = str(Path(config.checkpoint.run_dir) / "eval")
    config.checkpoint.run_name = f"eval-{time.strftime('%Y%m%d-%H%M%S')}-{time.perf_counter_ns() % 10**6}"
    config.checkpoint.resume = None
    config.tracking.wandb = config.tracking.mlflow = False  # an evaluation is not a training run
    trainer = RayPPOTrainer(config)
    try:
        trainer.setup(only=[Role.ROLLOUT, Role.AGENT_LOOP])
        drawn = trainer.held_out_tasks(tasks, seed)
        _, stats_ref = trainer.runner.collect.options(num_returns=2).remote(drawn, samples, temperature, seed)
        stats = ray.get(stats_ref)
    finally:
        trainer.cleanup()
    result = summarize(stats["rewards"], stats["success"], stats["groups"], samples)
    result.update(model=model, dropped=stats["dropped"], errors=len(stats["errors"]))
    return result


def policy_of(target: str) -> tuple[str, Path | None]:
    """The model a target names (a run directory's final policy, or the target itself) and
    the run directory, if it is one."""
    path = Path(target)
    if (path / "config.yaml").is_file():
        final = path / "final"
        if not (final / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} has no final policy ({final}); was it saved (checkpoint.save_final)?"
            )
        return str(final), path
    return target, None


def table(results: dict[str, dict[str, Any]]) -> str:
    """Policies side by side."""
    keys = ["episodes", "reward_mean", "reward_ci95", "success_rate", "success_ci95"]
    keys += sorted({k for r in results.values() for k in r if k.startswith("pass@")})

    def fmt(v: Any) -> str:
        if isinstance(v, list):
            return f"[{v[0]:.3f}, {v[1]:.3f}]"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    head = "| policy | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 1)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


__all__ = [
    "evaluate_policy",
    "mean_interval",
    "pass_at_k",
    "policy_of",
    "summarize",
    "table",
    "wilson_interval",
]
