"""`rayrl report RUN_DIR`: a finished or interrupted run's summary table and plots.

Reads what every run writes as it goes (`metrics.jsonl`, `samples.jsonl`, and
`eval_before.json` / `summary.json` when they exist) and writes `report.png` (reward and
success, held-out reward before and after, KL, response length and seconds per phase, per
step) and `episodes.html` (a few episodes of each step as text: what the model wrote and
is trained on, highlighted, among the prompt, tool results and feedback it saw).
"""

from __future__ import annotations

import html
import json
import statistics
from pathlib import Path
from typing import Any

PHASES = ("rollout", "reference", "score", "update", "sync")


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The run's step rows and whatever evaluation and summary it has written."""
    path = Path(run_dir)
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{path} is not a run directory: it has no metrics.jsonl")
    lines = metrics.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):  # only the last line may be cut short (a run that died writing it)
                raise ValueError(f"{metrics}:{number} is not JSON") from None
    summary = _json(path / "summary.json") or {}
    before = _json(path / "eval_before.json") or summary.get("eval_held_out_before")
    return {
        "path": path,
        "rows": rows,
        "summary": summary,
        "before": before,
        "after": summary.get("eval_held_out_after"),
    }


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summary_table(run: dict[str, Any], window: int = 5) -> str:
    """A plain-text table of the run's figures."""
    rows = run["rows"]
    rewards = [r["reward_mean"] for r in rows]
    lines = [
        ("run", str(run["path"])),
        ("steps", f"{len(rows)}" + ("" if run["summary"] else " (no summary: interrupted or running)")),
    ]
    if rows:
        lines += [
            (f"reward, first {window} steps", f"{_mean(rewards[:window]):.3f}"),
            (f"reward, last {window} steps", f"{_mean(rewards[-window:]):.3f}"),
            ("success, last step", f"{rows[-1].get('success', 0.0):.3f}"),
            ("KL, last step", f"{rows[-1].get('kl', 0.0):.4f}"),
            ("median step s", f"{statistics.median(r['time_step'] for r in rows):.1f}"),
        ]
        for phase in PHASES:
            key = f"time_{phase}"
            if all(key in r for r in rows):
                lines.append((f"  median {phase} s", f"{statistics.median(r[key] for r in rows):.1f}"))
        restarts = {k: rows[-1].get(k, 0) for k in ("engine_restarts", "role_restarts", "run_restarts")}
        lines.append(("restarts", ", ".join(f"{k} {v}" for k, v in restarts.items())))
    for label, result in (("held-out reward before", run["before"]), ("held-out reward after", run["after"])):
        if result:
            lines.append((label, f"{result['reward_mean']:.3f} over {result.get('episodes', '?')} episodes"))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


def plot(run: dict[str, Any], out: str | Path) -> Path:
    """Write the run's per-step plots to `out` (PNG); returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = run["rows"]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    ax = axes[0][0]
    ax.plot(steps, [r["reward_mean"] for r in rows], label="reward")
    ax.plot(steps, [r.get("success", 0.0) for r in rows], label="success", alpha=0.7)
    ax.set(title="reward per step", xlabel="step")
    ax.legend()
    ax = axes[0][1]
    held = [(0, run["before"]), (steps[-1] if steps else 0, run["after"])]
    points = [(s, r["reward_mean"]) for s, r in held if r]
    if points:
        ax.plot(*zip(*points, strict=True), marker="o")
    ax.set(title="held-out reward (before / after)", xlabel="step", ylim=(0, 1.05))
    ax = axes[0][2]
    ax.plot(steps, [r.get("kl", 0.0) for r in rows])
    ax.set(title="KL to the reference", xlabel="step")
    ax = axes[1][0]
    ax.plot(steps, [r.get("response_tokens", 0) / max(r.get("episodes", 1), 1) for r in rows])
    ax.set(title="response tokens per episode", xlabel="step")
    ax = axes[1][1]
    bottom = [0.0] * len(rows)
    for phase in PHASES:
        values = [r.get(f"time_{phase}", 0.0) for r in rows]
        ax.bar(steps, values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(title="seconds per phase", xlabel="step")
    ax.legend()
    ax = axes[1][2]
    ax.plot(steps, [r.get("entropy", 0.0) for r in rows], label="entropy")
    ax.plot(steps, [r.get("clip_frac", 0.0) for r in rows], label="clip fraction")
    ax.set(title="entropy and clipping", xlabel="step")
    ax.legend()
    fig.suptitle(str(run["path"].name))
    out = Path(out)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: sans-serif; margin: 2em; }}
.episode {{ border: 1px solid #ccc; margin: 1em 0; padding: .5em; }}
pre {{ white-space: pre-wrap; margin: 0; font-size: 13px; }}
.trained {{ background: #d4f7d4; }}
.context {{ color: #555; }}
</style></head><body>
<h1>{title}</h1>
<p>Green: tokens the model generated, which the loss trains on. Grey: prompt, chat
scaffolding, tool results and feedback (context only).</p>
{body}
</body></html>
"""


def episodes_html(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Write `<run_dir>/episodes.html` from `samples.jsonl`; None when the run has no samples."""
    path = Path(run_dir)
    samples = path / "samples.jsonl"
    if not samples.is_file():
        return None
    parts = []
    for line in samples.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # cut short by a run that died writing it
            continue
        parts.append(f"<h2>step {entry.get('step')}</h2>")
        for episode in entry.get("episodes", []):
            spans = "".join(
                f'<span class="{"trained" if s["trained"] else "context"}">{html.escape(s["text"])}</span>'
                for s in episode["spans"]
            )
            head = f"reward {episode['reward']:.3f}, group {episode['group']}, {episode['turns']} turn(s)"
            parts.append(f'<div class="episode"><b>{head}</b><pre>{spans}</pre></div>')
    out = Path(out) if out is not None else path / "episodes.html"
    out.write_text(_PAGE.format(title=html.escape(f"episodes of {path.name}"), body="\n".join(parts)))
    return out


def report(run_dir: str | Path) -> tuple[str, Path, Path | None]:
    """The summary table; the plots (`report.png`) and the sample episodes (`episodes.html`)
    written into the run directory."""
    run = read_run(run_dir)
    return summary_table(run), plot(run, Path(run_dir) / "report.png"), episodes_html(run_dir)


__all__ = ["episodes_html", "plot", "read_run", "report", "summary_table"]
