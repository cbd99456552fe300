"""rayrl benchmark: on-policy (max_staleness 0) against generation ahead of the learner
(max_staleness 1 and 2) on the default job, one run after the other on this machine.
Prints step time, phase times, steps and seconds to a rolling-3 reward of 0.9 and the
reward of the last steps.

    .venv/bin/python bench/bench_async.py [--steps 20] [--ks 0 1 2] [--target 0.9] [--keep DIR]
    .venv/bin/python bench/bench_async.py --steps 60 --to-target     # time to 0.9, each run stopping there
    .venv/bin/python bench/bench_async.py --keep DIR --reuse ...     # k0 already run in DIR/k0 (the default job)
    .venv/bin/python bench/bench_async.py --ks 0 --to-target --set training.learning_rate=3e-5

Each run is `rayrl train jobs/math_feedback.yaml` with `training.max_staleness=k` (and
`training.rollout_correction=truncate` for k > 0) in a process of its own. What to read
in it: with k > 0 the rollout of the next batch runs while the reference and the learner
work, so where rollout and update have hardware of their own (GPUs) a step costs about
max(rollout, update) instead of their sum; on a CPU machine both share the same cores,
so the "overlap ceiling" column (the on-policy run's phases) is what the overlap could
save there, and the measured step time shows what it does save here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(
    k: int, steps: int, run_dir: str, stop_at: float | None = None, extra: list[str] | None = None
) -> list[dict]:
    overrides = [
        f"training.num_epochs={steps}",
        *([f"training.stop_at_reward={stop_at}"] if stop_at is not None else []),
        f"training.max_staleness={k}",
        f"training.rollout_correction={'truncate' if k else 'none'}",
        "training.eval_tasks=0",
        f"checkpoint.run_dir={run_dir}",
        f"checkpoint.run_name=k{k}",
        "checkpoint.save_final=false",
        "ray.include_dashboard=false",
        *(extra or []),
    ]
    subprocess.run(
        [sys.executable, "-m", "rayrl.cli", "train", "jobs/math_feedback.yaml", *overrides],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    lines = (Path(run_dir) / f"k{k}" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def summarize(k: int, rows: list[dict], target: float) -> dict:
    steady = rows[1:] or rows  # the first step warms the engines up
    med = lambda key: statistics.median(r[key] for r in steady)  # noqa: E731
    rolling = [
        statistics.mean(r["reward_mean"] for r in rows[max(0, i - 2) : i + 1]) for i in range(len(rows))
    ]
    reached = next((r["step"] for r, mean in zip(rows, rolling, strict=True) if mean >= target), None)
    to_target = sum(r["time_step"] for r in rows if reached and r["step"] <= reached)
    return {
        "k": k,
        "step_s": med("time_step"),
        "rollout_s": med("time_rollout"),
        "train_s": med("time_reference") + med("time_score") + med("time_update"),
        "sync_s": med("time_sync"),
        "overlap_ceiling_s": max(
            med("time_rollout"), med("time_reference") + med("time_score") + med("time_update")
        )
        + med("time_sync"),
        "staleness_mean": statistics.mean(r["staleness_mean"] for r in rows),
        "steps_to_target": reached,
        "seconds_to_target": round(to_target, 1) if reached else None,
        "reward_last5": statistics.mean(r["reward_mean"] for r in rows[-5:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument(
        "--to-target",
        action="store_true",
        help="stop each run once its rolling-3 reward reaches --target (--steps is then the most)",
    )
    parser.add_argument(
        "--keep", help="folder to keep the runs in (metrics.jsonl per k); default: a temporary one"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="read a run already in --keep (<keep>/k<k>/metrics.jsonl) instead of running it again, "
        "e.g. k0 as the default job run to its 40 steps",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="more overrides for every run, e.g. training.learning_rate=3e-5",
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.keep or scratch
        for k in args.ks:
            kept = Path(run_dir) / f"k{k}" / "metrics.jsonl"
            if args.reuse and kept.is_file():
                rows = [json.loads(line) for line in kept.read_text().splitlines()]
            else:
                rows = run(k, args.steps, run_dir, args.target if args.to_target else None, args.set)
            results.append(summarize(k, rows, args.target))
            print(f"k={k} reward per step: " + " ".join(f"{r['reward_mean']:.2f}" for r in rows), flush=True)
    keys = list(results[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in results:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
