"""Per-step metrics in Ray's metrics system, next to Ray's own.

Every number of a step's row (reward, success, losses, KL, clip fraction, entropy, grad
norm, tokens/s, seconds per phase, weight version, sync GB/s, restarts, environment
errors...) is set on a `ray.util.metrics.Gauge` named `rayrl_<key>` and tagged with the
run's name. Ray exports it on each node's Prometheus endpoint (as `ray_rayrl_<key>`, where
the Ray Dashboard's metrics views, Prometheus and Grafana read it).
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


__all__ = ["RayMetrics"]
