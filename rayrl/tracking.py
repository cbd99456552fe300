"""Run directory: resolved config, per-step metrics (JSON lines), summary, final policy."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from rayrl.config import ConfigStore


class RunDirectory:
    """Files of one training run.

    Args:
        config: the resolved config (written to `config.yaml`).
        path: the directory (default: `path_for(config)`).
    """

    def __init__(self, config: ConfigStore, path: Path | None = None):
        self.path = Path(path) if path is not None else self.path_for(config)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        self.metrics_file = self.path / "metrics.jsonl"

    @staticmethod
    def path_for(config: ConfigStore) -> Path:
        """`checkpoint.run_dir / checkpoint.run_name` (a timestamp when unnamed)."""
        name = config.checkpoint.run_name or time.strftime("%Y%m%d-%H%M%S")
        return Path(config.checkpoint.run_dir).expanduser().resolve() / name

    def truncate(self, step: int) -> list[dict[str, Any]]:
        """Drop rows logged after `step` (by a run that went on past its last checkpoint
        before it died), so a resumed run continues without a gap or a repeated step;
        returns the rows kept."""
        kept = [row for row in self.read_metrics() if row.get("step", 0) <= step]
        self.metrics_file.write_text("".join(json.dumps(row) + "\n" for row in kept))
        adjustments = self.path / "adjustments.jsonl"
        if adjustments.exists():
            rows = [json.loads(line) for line in adjustments.read_text().splitlines() if line]
            adjustments.write_text("".join(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= step))
        return kept

    def log(self, row: dict[str, Any], samples: list[dict[str, Any]] | None = None) -> None:
        """Append one step's metrics, and a few of its episodes to `samples.jsonl` (each
        episode's text in spans, the trained ones marked, with its reward)."""
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if samples:
            with (self.path / "samples.jsonl").open("a") as f:
                f.write(json.dumps({"step": row.get("step"), "episodes": samples}) + "\n")

    def log_adjustment(self, change: dict[str, Any]) -> None:
        """Append one automatic (or manual) hyper-parameter change and its reason."""
        with (self.path / "adjustments.jsonl").open("a") as f:
            f.write(json.dumps(change) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every logged row, in order."""
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]

    def write_summary(self, summary: dict[str, Any]) -> None:
        """The run's closing figures."""
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2))

    def checkpoint_path(self, tag: str) -> str:
        """Folder for a saved policy (`final`, `step_000010`, ...)."""
        return str(self.path / tag)
