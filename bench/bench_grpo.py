"""rayrl benchmark on the default model: GRPO step time and phases, rollout tokens/s
against raw vLLM on the same prompts, and weight-sync GB/s. Prints a table.

    .venv/bin/python bench/bench_grpo.py [--steps 6] [--prompts 8] [--samples 4] [--max-tokens 48]
    .venv/bin/python bench/bench_grpo.py --peer trl     # also TRL's GRPOTrainer, same run

`--peer trl` needs the bench extra (`.venv/bin/pip install -e ".[bench]"`): TRL's
GRPOTrainer runs on the same prompts, reward, shape, learning rate, KL coefficient and
micro-batch size (rayrl's, `--set` overrides included: `--set training.kl_coef=0` runs
both without a reference model, TRL's own default), and the table gives both medians
and their ratio.
Parts run in separate processes one after the other, so they never share the cores.
Raw vLLM runs twice: in its default processes as a part of its own, and all in one
process beside rayrl's part, where it is built after rayrl's steps and then alternates
with rayrl's same-prompt rollouts batch by batch (raw, rayrl, raw, ..., raw). The rollout
ratio is each rayrl batch against the raw batches either side of it, so a machine that
speeds up or slows down between parts (these move by up to 2x) does not enter it. Raw
vLLM is measured once more after Ray has stopped: what Ray's idle presence costs it.
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


def _raw_engine(args, in_process: bool):
    """Offline vLLM on the same chat prompts: the engine's own ceiling. By default vLLM's
    own layout (engine core and model worker in two child processes); `in_process`: both
    in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, no inter-process hop at all).
    Returns a function that generates one batch (all prompts, one sample each) and gives
    its tokens/s."""
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
    prompts = [{"prompt_token_ids": _prompt_ids(path, t)} for t in _tasks(args.prompts * args.samples)]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=1.0, logprobs=0)
    llm.generate(prompts[:8], params, use_tqdm=False)  # warm-up

    def rate() -> float:
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - t0)

    return rate


def raw_vllm(args) -> dict:
    """Raw vLLM in its default processes, three batches."""
    rate = _raw_engine(args, in_process=False)
    rates = [rate() for _ in range(3)]
    return {"raw_vllm_tokens_per_s": statistics.median(rates), "raw_vllm_peak_mb": peak_rss_mb()}


def raw_sidecar(args) -> dict:
    """Raw vLLM all in one process, kept alive next to rayrl's part: it prints READY, then
    generates one batch per `rate` line on stdin (answering `RATE <tokens/s>`), and stops
    at end of input. Idle, it uses no CPU, so the two alternate on the same cores."""
    rate = _raw_engine(args, in_process=True)
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() == "rate":
            print(f"RATE {rate()}", flush=True)
    return {"raw_inproc_peak_mb": peak_rss_mb()}


class RawSidecar:
    """The driver's end of `raw_sidecar`, a child process."""

    def __init__(self, args):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--part", "raw-sidecar", *_shape_args(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._expect("READY")

    def _expect(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise RuntimeError(f"raw vLLM sidecar ended (exit {self.proc.wait()}) before {prefix}")

    def rate(self) -> float:
        self.proc.stdin.write("rate\n")
        self.proc.stdin.flush()
        return float(self._expect("RATE "))

    def close(self) -> dict:
        self.proc.stdin.close()
        out = json.loads(self._expect("RESULT "))
        self.proc.wait()
        return out


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
        # Raw vLLM in one process, built only now so that it is not there during the steps
        # (idle, its gloo threads still take ~2% of a core).
        raw = RawSidecar(args)
        # Rollout throughput on exactly the prompts raw vLLM gets, one episode each,
        # alternating with raw vLLM: raw, rayrl, raw, rayrl, raw, rayrl, raw.
        rates, raw_rates = [], [raw.rate()]
        for _ in range(3):
            _, stats_ref = trainer.runner.collect.options(num_returns=2).remote(
                _tasks(args.prompts * args.samples), 1
            )
            stats = ray.get(stats_ref)
            rates.append(stats["response_tokens"] / stats["seconds"])
            raw_rates.append(raw.rate())
        peaks = {
            role.value: sum(ray.get([a.__ray_call__.remote(peak_rss_mb) for a in group.members]))
            for role, group in trainer.groups.items()
        }
    finally:
        trainer.cleanup()
    # raw vLLM again once Ray and rayrl's roles are gone: what their idle presence costs it
    time.sleep(2)
    raw_alone = statistics.median(raw.rate() for _ in range(3))
    raw_result = raw.close()
    # each rayrl batch against the mean of the raw batches either side of it
    paired = [r / ((a + b) / 2) for r, a, b in zip(rates, raw_rates, raw_rates[1:], strict=False)]
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
        "raw_inproc_tokens_per_s": statistics.median(raw_rates),
        "raw_inproc_alone_tokens_per_s": raw_alone,
        "rollout_ratio_paired": statistics.median(paired),
        "rollout_ratios": paired,
        **raw_result,
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
    parser.add_argument("--part", choices=["raw", "raw-sidecar", "rayrl", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        parts = {
            "raw": raw_vllm,
            "raw-sidecar": raw_sidecar,
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
    for part in ("raw", "rayrl", *([args.peer] if args.peer else [])):
        cmd = [sys.executable, __file__, "--part", part, *_shape_args(args)]
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
        *(
            [
                ("TRL GRPOTrainer step, median (s)", f"{r['trl_time_step']:.1f}"),
                ("rayrl / TRL step time", f"{r['time_step'] / r['trl_time_step']:.2f}"),
            ]
            if "trl_time_step" in r
            else []
        ),
        ("rollout tokens/s, rayrl (same prompts, median of 3)", f"{r['same_prompts_tokens_per_s']:.0f}"),
        ("rollout tokens/s, raw vLLM in one process, alternated", f"{r['raw_inproc_tokens_per_s']:.0f}"),
        (
            "rayrl / raw vLLM alongside it (median of 3 pairs)",
            f"{r['rollout_ratio_paired']:.2f} ({', '.join(f'{x:.2f}' for x in r['rollout_ratios'])})",
        ),
        (
            "rollout tokens/s, raw vLLM in one process, after Ray stopped",
            f"{r['raw_inproc_alone_tokens_per_s']:.0f}",
        ),
        (
            "rayrl / raw vLLM after Ray stopped",
            f"{r['same_prompts_tokens_per_s'] / r['raw_inproc_alone_tokens_per_s']:.2f}",
        ),
        ("rollout tokens/s, raw vLLM (its default processes, own part)", f"{r['raw_vllm_tokens_per_s']:.0f}"),
        (
            "rayrl / raw vLLM in its default processes",
            f"{r['same_prompts_tokens_per_s'] / r['raw_vllm_tokens_per_s']:.2f}",
        ),
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


def _shape_args(args) -> list[str]:
    """The command-line arguments that give a part this run's shape and settings."""
    return [
        *("--steps", str(args.steps), "--prompts", str(args.prompts)),
        *("--samples", str(args.samples), "--max-tokens", str(args.max_tokens)),
        *(f"--set={kv}" for kv in args.set),
    ]


def print_table(rows: list[tuple[str, str]]) -> None:
    """(metric, value) rows as a two-column text table."""
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}} | {v}")


if __name__ == "__main__":
    main()
