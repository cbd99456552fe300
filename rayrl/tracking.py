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
    """

    def __init__(self, config: ConfigStore):
        name = config.checkpoint.run_name or time.strftime("%Y%m%d-%H%M%S")
        self.path = Path(config.checkpoint.run_dir).expanduser().resolve() / name
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        self.metrics_file = self.path / "metrics.jsonl"

    def log(self, row: dict[str, Any]) -> None:
        """Append one step's metrics."""
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(row) + "\n")

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
