"""Where each step's metrics go besides `metrics.jsonl`: Ray's metrics system and TensorBoard.

`RayMetrics`: every number of a step's row (reward, success, losses, KL, clip fraction, entropy, grad
norm, tokens/s, seconds per phase, weight version, sync GB/s, restarts, environment
errors...) is set on a `ray.util.metrics.Gauge` named `rayrl_<key>` and tagged with the
run's name. Ray exports it on each node's Prometheus endpoint (as `ray_rayrl_<key>`, where
the Ray Dashboard's metrics views, Prometheus and Grafana read it).

`TensorBoardLog`: the same numbers as TensorBoard scalars (`<run>/tensorboard`), grouped
by prefix (`time/rollout`, `env/correct`, ...): `tensorboard --logdir runs`.

`WandbLog` and `MlflowLog` (`tracking.wandb`, `tracking.mlflow`): the same scalars, under
the same names, in a W&B run or an MLflow run named after the run directory, with the
resolved config as its config (W&B) or parameters (MLflow). `trackers(config, run_path)`
builds the ones the config asks for.
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
        for tag, value in _scalars(row).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    """A row's numbers under their TensorBoard names (`time/rollout`, `train/kl`, ...)."""
    return {
        TensorBoardLog.tag(k): float(v)
        for k, v in row.items()
        if k not in ("step", "epoch") and isinstance(v, int | float) and not isinstance(v, bool)
    }


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:500]  # MLflow's limit on a parameter value
    return out


class WandbLog:
    """A Weights & Biases run of the training run (resumed with it: its id is the run
    directory's name).

    Args:
        run_path: the run directory (W&B keeps its files in `<run>/wandb`).
        config: the resolved config, as a nested dict.
        project: the W&B project.
        mode: "online", "offline", "disabled", or None for wandb's own choice.
    """

    def __init__(self, run_path, config: dict[str, Any], project: str, mode: str | None):
        import wandb

        self.run = wandb.init(
            project=project,
            name=run_path.name,
            id=_INVALID.sub("-", run_path.name),
            resume="allow",
            dir=str(run_path),
            config=config,
            mode=mode,
            reinit="create_new",
        )

    def record(self, row: dict[str, Any]) -> None:
        self.run.log(_scalars(row), step=int(row.get("step", 0)))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class MlflowLog:
    """An MLflow run of the training run, in the experiment `project`.

    Args:
        run_path: the run directory (the default store is `<run>/mlruns`).
        config: the resolved config, as a nested dict (logged as dotted parameters).
        project: the MLflow experiment.
        tracking_uri: the tracking server or store (None: `$MLFLOW_TRACKING_URI`, else
            a file store in the run directory: `mlflow ui --backend-store-uri <run>/mlruns`).
    """

    def __init__(self, run_path, config: dict[str, Any], project: str, tracking_uri: str | None):
        import os

        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow 3 keeps its file store in maintenance mode, behind this switch
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_path / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(project)
        self.run_id = self.client.create_run(experiment_id, run_name=run_path.name).info.run_id
        params = [Param(k, v) for k, v in _flat(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.tracking_uri = uri

    def record(self, row: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row.get("step", 0))
        metrics = [Metric(k, v, now, step) for k, v in _scalars(row).items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def close(self) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id)
            self.run_id = None


def trackers(config, run_path) -> list[Any]:
    """The W&B and MLflow sinks `config.tracking` asks for.

    Raises:
        ConfigError: a tracker is asked for but its package is not installed.
    """
    import importlib.util

    from rayrl.config import ConfigError

    t = config.tracking
    for wanted, package, hint in ((t.wandb, "wandb", "wandb"), (t.mlflow, "mlflow", "mlflow-skinny")):
        if wanted and importlib.util.find_spec(package) is None:
            raise ConfigError(f"tracking.{package}=true but {package} is not installed: pip install {hint}")
    tree = config.to_dict()
    sinks: list[Any] = []
    if t.wandb:
        sinks.append(WandbLog(run_path, tree, t.project, t.wandb_mode))
    if t.mlflow:
        sinks.append(MlflowLog(run_path, tree, t.project, t.mlflow_tracking_uri))
    return sinks


__all__ = ["MlflowLog", "RayMetrics", "TensorBoardLog", "WandbLog", "trackers"]
