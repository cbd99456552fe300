"""rayrl benchmark on the default model: GRPO step time and phases, rollout tokens/s
against raw vLLM on the same prompts, and weight-sync GB/s. Prints a table.

    .venv/bin/python bench/bench_grpo.py [--steps 6] [--prompts 8] [--samples 4] [--max-tokens 48]

The default shape (8 prompts x 4 samples x 48 new tokens, one turn) is the one TRL's
GRPOTrainer took about 47 s per step for on this 2-core machine.
Phases run in separate processes one after the other, so they never share the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def raw_vllm(args) -> dict:
    """Offline vLLM on the same chat prompts: the engine's own ceiling."""
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    from vllm import LLM, SamplingParams

    from rayrl.hardware import resolve_dtype
    from rayrl.model_store import resolve_model

    path = resolve_model("SmolLM2-135M-Instruct")
    # the dtype rayrl's engines pick on this machine, so that the peer runs like for like
    llm = LLM(model=path, dtype=resolve_dtype("auto", "cpu"), max_model_len=1024, enforce_eager=True, seed=0)
    prompts = [_prompt_ids(path, t) for t in _tasks(args.prompts * args.samples)]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=1.0, logprobs=0)
    llm.generate([{"prompt_token_ids": p} for p in prompts[:8]], params)  # warm-up
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        n = sum(len(o.outputs[0].token_ids) for o in outs)
        rates.append(n / (time.perf_counter() - t0))
    return {"raw_vllm_tokens_per_s": statistics.median(rates)}


def _tasks(n: int) -> list[dict]:
    return [{"a": (i * 7) % 10, "b": (i * 3) % 10} for i in range(n)]


def _prompt_ids(path: str, task: dict) -> list[int]:
    """The prompt rayrl's math environment renders for `task` (same chat template)."""
    from transformers import AutoTokenizer

    from rayrl.config import EnvironmentConfig
    from rayrl.envs.math_feedback import MathFeedbackEnvironment

    tok = AutoTokenizer.from_pretrained(path)
    env = MathFeedbackEnvironment(EnvironmentConfig())
    messages = [
        {"role": "system", "content": env.get_prompt_prefix()},
        {"role": "user", "content": env.reset(task)},
    ]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tok.encode(text, add_special_tokens=False)


def rayrl_steps(args) -> dict:
    """GRPO steps through rayrl's real actors, then repeated weight syncs."""
    import ray

    from rayrl.config import ConfigStore
    from rayrl.trainer import RayPPOTrainer

    config = ConfigStore.from_dict(
        {
            "inference": {"max_tokens": args.max_tokens},
            "training": {
                "num_epochs": args.steps,
                "batch_size": args.prompts * args.samples,
                "group_size": args.samples,
                "eval_tasks": 0,
            },
            "environment": {"max_turns": 1},
            "checkpoint": {"run_dir": "/tmp/rayrl-bench", "save_final": False},
            "ray": {"include_dashboard": False},
        }
    )
    trainer = RayPPOTrainer(config)
    try:
        t0 = time.perf_counter()
        trainer.setup()
        setup_s = time.perf_counter() - t0
        history = trainer.fit()
        syncs = [trainer.sync_weights() for _ in range(5)]
        # Rollout throughput on exactly the prompts raw vLLM gets, one episode each.
        rates = []
        for _ in range(3):
            _, stats_ref = trainer.runner.collect.options(num_returns=2).remote(
                _tasks(args.prompts * args.samples), 1
            )
            stats = ray.get(stats_ref)
            rates.append(stats["response_tokens"] / stats["seconds"])
    finally:
        trainer.cleanup()
    steady = history[1:] or history  # the first step includes engine warm-up
    med = {
        k: statistics.median(r[k] for r in steady)
        for k in ("time_step", "time_rollout", "time_reference", "time_update", "time_sync", "tokens_per_s")
    }
    return {
        "setup_s": setup_s,
        **med,
        "same_prompts_tokens_per_s": statistics.median(rates),
        "sync_gb_per_s": statistics.median(s["bytes"] / s["seconds"] / 1e9 for s in syncs),
        "wire_gb_per_s": statistics.median(s["bytes"] / s["engine_receive_s"] / 1e9 for s in syncs),
        "engine_load_s": statistics.median(s["engine_load_s"] + s["engine_finalize_s"] for s in syncs),
        "sync_seconds": statistics.median(s["seconds"] for s in syncs),
        "sync_bytes": syncs[0]["bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--part", choices=["raw", "rayrl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        result = raw_vllm(args) if args.part == "raw" else rayrl_steps(args)
        print("RESULT " + json.dumps(result))
        return
    results = {}
    for part in ("raw", "rayrl"):
        cmd = [
            sys.executable,
            __file__,
            "--part",
            part,
            "--steps",
            str(args.steps),
            "--prompts",
            str(args.prompts),
            "--samples",
            str(args.samples),
            "--max-tokens",
            str(args.max_tokens),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
            raise SystemExit(f"bench part {part!r} failed")
        results.update(json.loads(line[len("RESULT ") :]))
    r = results
    shape = f"{args.prompts} prompts x {args.samples} samples x {args.max_tokens} new tokens, 1 turn"
    rows = [
        ("shape", shape),
        ("GRPO step, median (s)", f"{r['time_step']:.1f}"),
        ("  rollout (s)", f"{r['time_rollout']:.1f}"),
        ("  reference (s)", f"{r['time_reference']:.1f}"),
        ("  update (s)", f"{r['time_update']:.1f}"),
        ("  weight sync (s)", f"{r['time_sync']:.2f}"),
        ("vs TRL GRPOTrainer 47 s/step", f"{47.0 / r['time_step']:.1f}x faster"),
        ("rollout tokens/s, rayrl (same prompts)", f"{r['same_prompts_tokens_per_s']:.0f}"),
        ("rollout tokens/s, raw vLLM", f"{r['raw_vllm_tokens_per_s']:.0f}"),
        ("rayrl / raw vLLM", f"{r['same_prompts_tokens_per_s'] / r['raw_vllm_tokens_per_s']:.2f}"),
        ("rollout tokens/s in GRPO steps (median)", f"{r['tokens_per_s']:.0f}"),
        (
            "weight sync (GB/s, median of 5)",
            f"{r['sync_gb_per_s']:.2f} ({r['sync_bytes'] / 1e6:.0f} MB in {r['sync_seconds']:.2f} s)",
        ),
        ("  of which on the wire (GB/s)", f"{r['wire_gb_per_s']:.2f}"),
        ("  of which vLLM load + repack (s)", f"{r['engine_load_s']:.2f}"),
        ("setup: engines + models (s)", f"{r['setup_s']:.0f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}} | {v}")


if __name__ == "__main__":
    main()
