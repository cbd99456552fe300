"""Where each step's metrics go besides `metrics.jsonl`: Ray's metrics system and TensorBoard.

`RayMetrics`: every number of a step's row (reward, success, losses, KL, clip fraction, entropy, grad
norm, tokens/s, seconds per phase, weight version, sync GB/s, restarts, environment
errors...) is set on a `ray.util.metrics.Gauge` named `rayrl_<key>` and tagged with the
run's name. Ray exports it on each node's Prometheus endpoint (as `ray_rayrl_<key>`, where
the Ray Dashboard's metrics views, Prometheus and Grafana read it).

`TensorBoardLog`: the same numbers as TensorBoard scalars (`<run>/tensorboard`), grouped
by prefix (`time/rollout`, `env/correct`, ...): `tensorboard --logdir runs`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

logger = logging.getLogger(__name__)
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


class RayMetrics:
    """Gauges for one run's step rows.

    Args:
        run_name: the tag `run` of every value (the run directory's name).
    """

    def __init__(self, run_name: str):
        self.tags = {"run": run_name}
        self._gauges: dict[str, Any] = {}
        self.enabled = True

    def record(self, row: dict[str, Any]) -> None:
        """Set a gauge per numeric entry of `row`; never raises (a failure is logged once
        and turns the export off, the run goes on)."""
        if not self.enabled:
            return
        try:
            for key, value in row.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                self._gauge(key).set(float(value), tags=self.tags)
        except Exception as err:  # noqa: BLE001 - observability must not stop training
            self.enabled = False
            logger.warning("metrics export to Ray turned off: %s: %s", type(err).__name__, err)

    def _gauge(self, key: str):
        gauge = self._gauges.get(key)
        if gauge is None:
            from ray.util.metrics import Gauge

            name = "rayrl_" + _INVALID.sub("_", key)
            gauge = self._gauges[key] = Gauge(name, description=f"rayrl step metric {key}", tag_keys=("run",))
        return gauge


class TensorBoardLog:
    """TensorBoard event files of a run's step rows.

    Args:
        folder: where the event files go (created).
    """

    GROUPS = ("time", "env", "agent", "eval", "sync", "is", "value", "staleness")

    def __init__(self, folder):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), flush_secs=30)

    @classmethod
    def tag(cls, key: str) -> str:
        """`time_rollout` -> `time/rollout`; ungrouped keys under `train/`."""
        head, _, rest = key.partition("_")
        return f"{head}/{rest}" if head in cls.GROUPS and rest else f"train/{key}"

    def record(self, row: dict[str, Any]) -> None:
        step = int(row.get("step", 0))
        for key, value in row.items():
            if (
                key not in ("step", "epoch")
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                self.writer.add_scalar(self.tag(key), float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["RayMetrics", "TensorBoardLog"]
