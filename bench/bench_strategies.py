"""Learner strategies on the default model: one PPO update's time per strategy. Prints a table.

    .venv/bin/python bench/bench_strategies.py [--updates 3] [--seqs 16] [--prompt 64] [--gen 64] [--only torch]

Every row trains the same synthetic batch (`--seqs` sequences of `--prompt` masked
and `--gen` trainable tokens, micro-batches of 4, one mini-batch, bf16 autocast)
with real ActorLearner actors: plain torch, DeepSpeed ZeRO-0/2/3, one or two
data-parallel ranks over gloo, and LoRA (rank 16). The first update of each row
warms up and is not counted; the table gives the median of the rest. On a 2-core
machine two ranks share the cores (one thread each), so the two-rank rows measure
the cost of the data-parallel machinery, not a speed-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

STRATEGIES = [
    ("torch", 1, {"strategy": "torch"}),
    ("torch", 2, {"strategy": "torch"}),
    ("deepspeed ZeRO-0", 2, {"strategy": "deepspeed", "zero_stage": 0}),
    ("deepspeed ZeRO-2", 1, {"strategy": "deepspeed", "zero_stage": 2}),
    ("deepspeed ZeRO-2", 2, {"strategy": "deepspeed", "zero_stage": 2}),
    ("deepspeed ZeRO-3", 2, {"strategy": "deepspeed", "zero_stage": 3}),
    ("torch + LoRA r16", 1, {"strategy": "torch", "lora_rank": 16}),
]


def synthetic_batch(n: int, prompt: int, gen: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    mask = [0] * prompt + [1] * gen
    return pa.table(
        {
            "input_ids": pa.array(
                [rng.integers(10, 40000, prompt + gen).tolist() for _ in range(n)], type=pa.list_(pa.int32())
            ),
            "loss_mask": pa.array([mask] * n, type=pa.list_(pa.int8())),
            "rollout_logprobs": pa.array([[-1.0 * m for m in mask]] * n, type=pa.list_(pa.float32())),
            "advantages": pa.array(
                [[float(rng.normal()) * m for m in mask] for _ in range(n)], type=pa.list_(pa.float32())
            ),
        }
    )


def time_strategy(ray, model_path: str, world: int, learner: dict, args) -> list[float]:
    from rayrl.actors.learner import ActorLearner
    from rayrl.config import LearnerConfig, TrainingConfig

    training = TrainingConfig(batch_size=args.seqs, kl_coef=0.0, learning_rate=1e-6)
    role = LearnerConfig(
        micro_batch_size=4,
        num_threads=max(1, (os.cpu_count() or 1) // world),
        num_ranks=world,
        **learner,
    )
    cls = ray.remote(ActorLearner).options(num_cpus=0)
    ranks = [cls.remote(model_path, training, role, "auto", r, world) for r in range(world)]
    try:
        host, port = ray.get(ranks[0].group_address.remote())
        ray.get([r.join_group.remote(host, port) for r in ranks])
        batch = ray.put(synthetic_batch(args.seqs, args.prompt, args.gen))
        times = []
        for _ in range(args.updates + 1):
            t0 = time.perf_counter()
            ray.get([r.update.remote(batch) for r in ranks])
            times.append(time.perf_counter() - t0)
        return times[1:]
    finally:
        for r in ranks:
            ray.kill(r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--seqs", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--only", help="rows whose strategy name starts with this (e.g. torch)")
    args = parser.parse_args()

    import ray

    from rayrl.model_store import resolve_model
    from rayrl.trainer import ACTOR_ENV

    model_path = resolve_model(args.model)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env={"env_vars": ACTOR_ENV})
    rows = []
    try:
        for name, world, training in STRATEGIES:
            if args.only and not name.startswith(args.only):
                continue
            times = time_strategy(ray, model_path, world, training, args)
            rows.append((name, world, statistics.median(times)))
    finally:
        ray.shutdown()
    tokens = args.seqs * args.gen
    base = rows[0][2]
    print(
        f"\nPPO update, {args.seqs} seqs x ({args.prompt} prompt + {args.gen} trained) tokens, median of {args.updates}"
    )
    print(f"{'strategy':<22}{'ranks':>6}{'update (s)':>12}{'trained tok/s':>15}{'vs torch x1':>13}")
    for name, world, seconds in rows:
        print(f"{name:<22}{world:>6}{seconds:>12.2f}{tokens / seconds:>15.0f}{base / seconds:>12.2f}x")


if __name__ == "__main__":
    main()
