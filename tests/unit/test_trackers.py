"""W&B (offline) and MLflow (file store) sinks: what a run logs is what they hold."""

from __future__ import annotations

import json
import struct
import time

import pytest

from rayrl.config import ConfigError
from rayrl.metrics_export import MlflowLog, WandbLog, trackers
from tests.conftest import make_config

ROWS = [
    {"step": s, "epoch": 0, "reward_mean": 0.25 * s, "time_rollout": 1.5 + s, "ok": True} for s in (1, 2, 3)
]


def wandb_history(run_path) -> list[dict]:
    """The history records of an offline W&B run, read from its `.wandb` file (a LevelDB-
    format log of protobuf records: 32 KiB blocks, 7-byte record headers, a 7-byte file
    header)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_path.glob("wandb/offline-run-*/*.wandb")
    data = path.read_bytes()
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
    rows = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
    return rows


def test_wandb_offline_run_holds_every_step(tmp_path):
    run = tmp_path / "run-a"
    run.mkdir()
    sink = WandbLog(run, {"training": {"learning_rate": 1e-5}}, "rayrl-test", "offline")
    for row in ROWS:
        sink.record(row)
    sink.close()
    sink.close()  # twice is harmless
    # wandb's service process may still be writing the log after finish() on a loaded machine
    deadline = time.monotonic() + 60
    while len(history := wandb_history(run)) < len(ROWS) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [h["_step"] for h in history] == [1, 2, 3]
    assert [h["train/reward_mean"] for h in history] == [0.25, 0.5, 0.75]
    assert [h["time/rollout"] for h in history] == [2.5, 3.5, 4.5]
    assert all("train/ok" not in h and "train/epoch" not in h for h in history)


def test_mlflow_file_store_run_holds_every_step_and_the_config(tmp_path):
    run = tmp_path / "run-b"
    run.mkdir()
    sink = MlflowLog(run, {"training": {"learning_rate": 1e-5, "batch_size": 32}}, "rayrl-test", None)
    run_id = sink.run_id
    for row in ROWS:
        sink.record(row)
    sink.close()
    history = sink.client.get_metric_history(run_id, "train/reward_mean")
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.5), (3, 0.75)]
    stored = sink.client.get_run(run_id)
    assert stored.data.params["training.batch_size"] == "32" and stored.info.status == "FINISHED"
    assert stored.info.run_name == "run-b" and (run / "mlruns").is_dir()


def test_a_tracker_that_is_not_installed_is_a_config_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(
        ConfigError, match="tracking.wandb=true but wandb is not installed: pip install wandb"
    ):
        trackers(make_config(tracking={"wandb": True}), tmp_path)
    assert trackers(make_config(), tmp_path) == []
