"""rayrl benchmark on the default model: GRPO step time and phases, rollout tokens/s
against raw vLLM on the same prompts, and weight-sync GB/s. Prints a table.

    .venv/bin/python bench/bench_grpo.py [--steps 6] [--prompts 8] [--samples 4] [--max-tokens 48]
    .venv/bin/python bench/bench_grpo.py --peer trl     # also TRL's GRPOTrainer, same run

`--peer trl` needs the bench extra (`.venv/bin/pip install -e ".[bench]"`): TRL's
GRPOTrainer runs on the same prompts, reward, shape, learning rate, KL coefficient and
micro-batch size (rayrl's, `--set` overrides included: `--set training.kl_coef=0` runs
both without a reference model, TRL's own default), and the table gives both medians
and their ratio.
Raw vLLM runs twice, in its default processes and all in one process; the rollout ratio
is against the faster. Parts run in separate processes one after the other, so they never
share the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def peak_rss_mb(_actor=None) -> float:
    """Peak resident memory of this process plus its live children (a rollout actor's vLLM
    engine core, with the model in it, is a child process), MiB: the sum of each process's
    own peak (VmHWM)."""
    import psutil

    me = psutil.Process()
    total_kb = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                total_kb += next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
        except (OSError, StopIteration):
            continue
    return total_kb / 1024


def raw_vllm(args, in_process: bool = False) -> dict:
    """Offline vLLM on the same chat prompts: the engine's own ceiling. By default vLLM's
    own layout (engine core and model worker in two child processes); `in_process`: both
    in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, no inter-process hop at all)."""
    import os

    if in_process:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
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
    key = "raw_inproc" if in_process else "raw_vllm"
    return {f"{key}_tokens_per_s": statistics.median(rates), f"{key}_peak_mb": peak_rss_mb()}


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


def _reward(text: str, task: dict) -> float:
    from rayrl.envs.math_feedback import last_integer

    return float(last_integer(text) == task["a"] + task["b"])


def trl_steps(args) -> dict:
    """TRL's GRPOTrainer on rayrl's prompts: the same chat messages, reward (last integer is
    the sum), batch (prompts x samples per optimizer step, in micro-batches of 16),
    learning rate, KL coefficient and bf16 autocast; generation by transformers, as TRL
    does without a vLLM server."""
    import tempfile

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rayrl.config import ConfigStore, EnvironmentConfig
    from rayrl.envs.math_feedback import MathFeedbackEnvironment
    from rayrl.hardware import resolve_dtype
    from rayrl.model_store import resolve_model

    defaults = ConfigStore.from_dict({}, overrides=args.set)  # the same settings as rayrl's part
    env = MathFeedbackEnvironment(EnvironmentConfig())
    tasks = _tasks(args.prompts * (args.steps + 1))
    data = Dataset.from_list(
        [
            {
                "prompt": [
                    {"role": "system", "content": env.get_prompt_prefix()},
                    {"role": "user", "content": env.reset(t)},
                ],
                **t,
            }
            for t in tasks
        ]
    )

    def reward(completions, a, b, **_):
        return [
            _reward(c[-1]["content"], {"a": x, "b": y}) for c, x, y in zip(completions, a, b, strict=True)
        ]

    micro = min(defaults.learner.micro_batch_size, args.prompts * args.samples)
    step_ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    bf16 = resolve_dtype(defaults.learner.autocast_dtype, "cpu") == "bfloat16"
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            use_cpu=True,
            bf16=bf16,
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=args.prompts * args.samples // micro,
            num_generations=args.samples,
            max_completion_length=args.max_tokens,
            temperature=1.0,
            learning_rate=defaults.training.learning_rate,
            beta=defaults.training.kl_coef,
            max_steps=args.steps,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            shuffle_dataset=False,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=resolve_model("SmolLM2-135M-Instruct"),
            reward_funcs=reward,
            args=config,
            train_dataset=data,
            callbacks=[Clock()],
        )
        t0 = time.perf_counter()
        trainer.train()
    times = [b - a for a, b in zip([t0, *step_ends], step_ends, strict=False)]
    steady = times[1:] or times
    return {"trl_time_step": statistics.median(steady), "trl_bf16": bf16, "trl_peak_mb": peak_rss_mb()}


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
            # as the default job: the built-in math environment runs in the agent loop
            "environment": {"max_turns": 1, "isolation": "inline"},
            "checkpoint": {"run_dir": "/tmp/rayrl-bench", "save_final": False},
            "ray": {"include_dashboard": False},
        },
        overrides=args.set,
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
        peaks = {
            role.value: sum(ray.get([a.__ray_call__.remote(peak_rss_mb) for a in group.members]))
            for role, group in trainer.groups.items()
        }
    finally:
        trainer.cleanup()
    steady = history[1:] or history  # the first step includes engine warm-up
    med = {
        k: statistics.median(r[k] for r in steady)
        for k in (
            "time_step",
            "time_rollout",
            "time_reference",
            "time_update",
            "time_sync",
            "tokens_per_s",
            "logprob_gap",
        )
    }
    return {
        "setup_s": setup_s,
        **med,
        "same_prompts_tokens_per_s": statistics.median(rates),
        # end to end: from the learner's first send to every engine's proven load
        "sync_gb_per_s": statistics.median(s["bytes"] / s["wall_s"] / 1e9 for s in syncs),
        "sync_seconds": statistics.median(s["wall_s"] for s in syncs),
        "sync_send_s": statistics.median(s["seconds"] for s in syncs),
        "engine_path": syncs[0]["engine_path"],
        "sync_transport": syncs[0].get("transport", "broadcast"),
        **{
            k: statistics.median(s[k] for s in syncs)
            for k in (
                "engine_receive_s",
                "engine_load_s",
                "engine_finalize_s",
                "engine_process_s",
                "engine_fingerprint_s",
                "engine_page_faults",
            )
            if k in syncs[0]
        },
        "sync_bytes": syncs[0]["bytes"],
        "peak_mb": peaks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a rayrl config override (repeatable)"
    )
    parser.add_argument("--peer", choices=["trl"], help="also run this peer's GRPO trainer, same run")
    parser.add_argument("--part", choices=["raw", "raw-inproc", "rayrl", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        parts = {
            "raw": raw_vllm,
            "raw-inproc": lambda a: raw_vllm(a, True),
            "rayrl": rayrl_steps,
            "trl": trl_steps,
        }
        result = parts[args.part](args)
        print("RESULT " + json.dumps(result))
        return
    if args.peer == "trl":
        try:
            import trl  # noqa: F401
        except ImportError:
            raise SystemExit('--peer trl needs TRL: .venv/bin/pip install -e ".[bench]"') from None
    results = {}
    for part in ("raw", "raw-inproc", "rayrl", *([args.peer] if args.peer else [])):
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
            *(f"--set={kv}" for kv in args.set),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
            raise SystemExit(f"bench part {part!r} failed")
        results.update(json.loads(line[len("RESULT ") :]))
    r = results
    raw_best = max(r["raw_vllm_tokens_per_s"], r["raw_inproc_tokens_per_s"])
    shape = f"{args.prompts} prompts x {args.samples} samples x {args.max_tokens} new tokens, 1 turn"
    rows = [
        ("shape", shape),
        ("GRPO step, median (s)", f"{r['time_step']:.1f}"),
        ("  rollout (s)", f"{r['time_rollout']:.1f}"),
        ("  reference (s)", f"{r['time_reference']:.1f}"),
        ("  update (s)", f"{r['time_update']:.1f}"),
        ("  weight sync (s)", f"{r['time_sync']:.2f}"),
        *(
            [
                ("TRL GRPOTrainer step, median (s)", f"{r['trl_time_step']:.1f}"),
                ("rayrl / TRL step time", f"{r['time_step'] / r['trl_time_step']:.2f}"),
            ]
            if "trl_time_step" in r
            else []
        ),
        ("rollout tokens/s, rayrl (same prompts)", f"{r['same_prompts_tokens_per_s']:.0f}"),
        ("rollout tokens/s, raw vLLM (its default processes)", f"{r['raw_vllm_tokens_per_s']:.0f}"),
        ("rollout tokens/s, raw vLLM (all in one process)", f"{r['raw_inproc_tokens_per_s']:.0f}"),
        ("rayrl / raw vLLM (the faster)", f"{r['same_prompts_tokens_per_s'] / raw_best:.2f}"),
        ("rollout tokens/s in GRPO steps (median)", f"{r['tokens_per_s']:.0f}"),
        ("engine vs learner log-prob, mean abs gap", f"{r['logprob_gap']:.4f}"),
        (
            "weight sync, end to end (GB/s, median of 5)",
            f"{r['sync_gb_per_s']:.2f} ({r['sync_bytes'] / 1e6:.0f} MB in {r['sync_seconds']:.2f} s)",
        ),
        ("  transport", r.get("sync_transport", "broadcast")),
        ("  learner: gather, cast and send (s)", f"{r['sync_send_s']:.2f}"),
        ("  engine: waiting for buckets (s)", f"{r['engine_receive_s']:.2f}"),
        (
            f"  engine: loading, {r['engine_path']} path (s)",
            f"{r['engine_load_s'] + r['engine_finalize_s']:.2f}",
        ),
        *(
            [("    of which kernel re-packing (s)", f"{r['engine_process_s']:.2f}")]
            if "engine_process_s" in r
            else []
        ),
        *(
            [("  engine: page faults (fresh 4 KiB pages touched)", f"{r['engine_page_faults']:.0f}")]
            if "engine_page_faults" in r
            else []
        ),
        *(
            [("  engine: fingerprint after loading (s)", f"{r['engine_fingerprint_s']:.3f}")]
            if "engine_fingerprint_s" in r
            else []
        ),
        ("setup: engines + models (s)", f"{r['setup_s']:.0f}"),
        *((f"peak RSS, {role} (MiB)", f"{mb:.0f}") for role, mb in r["peak_mb"].items()),
        ("peak RSS, raw vLLM, default processes (MiB)", f"{r['raw_vllm_peak_mb']:.0f}"),
        ("peak RSS, raw vLLM, one process (MiB)", f"{r['raw_inproc_peak_mb']:.0f}"),
        *([("peak RSS, TRL process (MiB)", f"{r['trl_peak_mb']:.0f}")] if "trl_peak_mb" in r else []),
    ]
    print_table(rows)


def print_table(rows: list[tuple[str, str]]) -> None:
    """(metric, value) rows as a two-column text table."""
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}} | {v}")


if __name__ == "__main__":
    main()
