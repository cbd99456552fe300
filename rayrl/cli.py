"""`rayrl` command line: `rayrl train CONFIG [section.key=value ...]`, `rayrl check CONFIG ...`,
`rayrl report RUN_DIR`, `rayrl eval RUN_DIR_OR_MODEL [CONFIG] [--compare BASE]`,
`rayrl serve RUN_DIR_OR_MODEL [--port] [--token]`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rayrl.config import ConfigError, ConfigStore


def _load(args) -> ConfigStore:
    return ConfigStore.from_yaml(args.config, args.overrides)


def summarize(history: list[dict], window: int = 5) -> dict:
    """First/last-window reward means and spreads of a metrics history."""
    import numpy as np

    rewards = np.array([row["reward_mean"] for row in history])
    first, last = rewards[:window], rewards[-window:]
    return {
        "steps": len(history),
        "reward_first": float(first.mean()) if first.size else 0.0,
        "reward_first_std": float(first.std()) if first.size else 0.0,
        "reward_last": float(last.mean()) if last.size else 0.0,
        "reward_last_std": float(last.std()) if last.size else 0.0,
        "step_seconds_median": float(np.median([row["time_step"] for row in history])) if history else 0.0,
    }


def cmd_train(args) -> int:
    config = _load(args)
    from rayrl.trainer import RayPPOTrainer

    t0 = time.perf_counter()
    trainer = RayPPOTrainer(config)
    try:
        trainer.setup()
        print(f"run directory: {trainer.run.path}", flush=True)
        n_eval = config.training.eval_tasks
        before_file = trainer.run.path / "eval_before.json"
        if trainer.start_step and before_file.exists():  # resumed: the base policy was scored then
            before = json.loads(before_file.read_text())
        else:
            before = trainer.evaluate(n_eval) if n_eval else None
            before_file.write_text(json.dumps(before))
        history = trainer.fit()
        after = trainer.evaluate(n_eval) if n_eval else None
        summary = summarize(history)
        summary.update(
            eval_held_out_before=before,
            eval_held_out_after=after,
            wall_seconds=time.perf_counter() - t0,
            run_dir=str(trainer.run.path),
            final_policy=trainer.run.checkpoint_path("final") if config.checkpoint.save_final else None,
        )
        trainer.run.write_summary(summary)
    finally:
        trainer.cleanup()
    print("\n== rayrl summary ==")
    print(
        f"steps {summary['steps']}, median step {summary['step_seconds_median']:.1f}s, wall {summary['wall_seconds']:.0f}s"
    )
    print(
        f"reward first 5 steps {summary['reward_first']:.3f} (std {summary['reward_first_std']:.3f}) -> "
        f"last 5 steps {summary['reward_last']:.3f} (std {summary['reward_last_std']:.3f})"
    )
    if before and after:
        print(f"held-out reward {before['reward_mean']:.3f} -> {after['reward_mean']:.3f}")
    print(f"metrics: {trainer.run.metrics_file} (TensorBoard: {trainer.run.path / 'tensorboard'})")
    try:
        from rayrl.report import report

        _, png, page = report(trainer.run.path)
        print(f"plots: {png}" + (f", sample episodes: {page}" if page else ""))
    except Exception as err:  # noqa: BLE001 - the run is done; a plot failure only loses the plot
        print(f"plots not written: {type(err).__name__}: {err}", file=sys.stderr)
    if summary["final_policy"]:
        print(f"final policy (Hugging Face format): {summary['final_policy']}")
    return 0


def cmd_check(args) -> int:
    config = _load(args)
    print(json.dumps(config.to_dict(), indent=2))
    return 0


def cmd_report(args) -> int:
    from rayrl.report import report

    try:
        table, png, page = report(args.run_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"rayrl: {err}", file=sys.stderr)
        return 2
    print(table)
    print(f"plots: {png}")
    if page:
        print(f"sample episodes: {page}")
    return 0


def cmd_eval(args) -> int:
    from rayrl.evaluation import evaluate_policy, policy_of, table

    model, run_dir = policy_of(args.target)
    config_file = args.config or (run_dir / "config.yaml" if run_dir else None)
    if config_file is None:
        print("rayrl: eval of a model needs a CONFIG naming its environment", file=sys.stderr)
        return 2
    config = ConfigStore.from_yaml(config_file, args.overrides)
    config.ray.include_dashboard = False
    results = {}
    for name, policy in [("base", args.compare), ("trained" if args.compare else "policy", model)]:
        if policy is not None:
            results[name] = evaluate_policy(
                config, policy, args.episodes, args.samples, args.seed, args.temperature
            )
    print(table(results))
    out = Path(args.out) if args.out else (run_dir / "eval.json" if run_dir else None)
    if out is not None:
        out.write_text(json.dumps(results, indent=2))
        print(f"written: {out}")
    return 0


def cmd_serve(args) -> int:
    from rayrl.serve import ServeConfig, deploy, shutdown

    fields = {
        k: getattr(args, k) for k in ("host", "port", "token", "max_tokens") if getattr(args, k) is not None
    }
    try:
        url = deploy(args.target, ServeConfig(**fields))
    except FileNotFoundError as err:
        print(f"rayrl: {err}", file=sys.stderr)
        return 2
    print(f"serving {args.target} at {url}/v1 (OpenAI chat completions) and {url}/solve; Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayrl", description="Ray-native RL for LLM agents")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="summary table and plots of a run directory, finished or not")
    p.add_argument("run_dir", help="a run directory (it holds metrics.jsonl)")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser(
        "eval", help="held-out episodes of a run's policy (or a model), optionally against a base"
    )
    p.add_argument("target", help="a run directory (its final policy and config) or a model folder or name")
    p.add_argument("config", nargs="?", help="YAML config (default: the run's config.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. environment.max_turns=3")
    p.add_argument("--episodes", type=int, default=64, help="held-out tasks (default 64)")
    p.add_argument("--samples", type=int, default=1, help="episodes per task: pass@k for k > 1")
    p.add_argument("--compare", help="a base model to evaluate on the same tasks, side by side")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the run's)")
    p.add_argument("--seed", type=int, default=1234, help="task draw and sampling seed")
    p.add_argument("--out", help="JSON file for the results (default: <run>/eval.json)")
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("serve", help="serve a run's policy (or a model) with Ray Serve, OpenAI-compatible")
    p.add_argument("target", help="a run directory (its final policy) or a model folder or name")
    p.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="HTTP port (default 8000)")
    p.add_argument("--token", help="bearer token every request must carry")
    p.add_argument("--max-tokens", dest="max_tokens", type=int, help="cap on a reply's tokens (default 1024)")
    p.set_defaults(fn=cmd_serve)
    for name, fn, text in (
        ("train", cmd_train, "train from a YAML config"),
        ("check", cmd_check, "validate a config and print it resolved"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", help="YAML config file")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.batch_size=32")
        p.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as err:
        print(f"rayrl: config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
