"""Checkpoint folders: atomic commit, pruning, which checkpoint a resume picks, metrics truncation."""

import json

import pytest

from rayrl.checkpoint import CheckpointStore, find_resume, read_state, run_path_of
from rayrl.config import CheckpointConfig, ConfigError
from rayrl.tracking import RunDirectory
from rayrl.training.callbacks import CallbackList, EarlyStopping
from tests.conftest import make_config


def save(store: CheckpointStore, step: int) -> None:
    tmp = store.begin(step)
    (tmp / "policy").mkdir()
    store.commit(tmp, step, {"weight_version": step})


def test_commit_renames_and_an_unfinished_write_is_not_a_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path)
    save(store, 2)
    store.begin(4)  # a crash while writing step 4
    assert [p.name for p in store.complete()] == ["step_000002"]
    assert read_state(store.latest()) == {"weight_version": 2, "step": 2}
    save(store, 4)  # the next attempt replaces the leftover temporary folder
    assert store.latest().name == "step_000004"
    assert not list(store.root.glob(".*.tmp"))


def test_keep_last_prunes_oldest_and_never_the_newest(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2)
    for step in (1, 2, 3, 10):
        save(store, step)
    assert [p.name for p in store.complete()] == ["step_000003", "step_000010"]  # numeric order
    one = CheckpointStore(tmp_path, keep_last=1)
    one.prune()
    assert [p.name for p in one.complete()] == ["step_000010"]


def test_find_resume(tmp_path):
    run = tmp_path / "run"
    assert find_resume(CheckpointConfig(), run) is None  # fresh run
    assert find_resume(CheckpointConfig(resume="auto", run_name="run"), run) is None  # nothing yet
    store = CheckpointStore(run)
    save(store, 2)
    save(store, 4)
    with pytest.raises(ConfigError, match="resume=auto"):
        find_resume(CheckpointConfig(run_name="run"), run)
    assert find_resume(CheckpointConfig(resume="auto", run_name="run"), run).name == "step_000004"
    explicit = find_resume(CheckpointConfig(resume=str(run / "checkpoints" / "step_000002")), tmp_path / "x")
    assert explicit.name == "step_000002" and run_path_of(explicit) == run
    assert find_resume(CheckpointConfig(resume=str(run)), tmp_path / "x").name == "step_000004"
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        find_resume(CheckpointConfig(resume=str(tmp_path / "nowhere")), run)


def test_resume_auto_needs_a_run_name():
    with pytest.raises(ConfigError, match="checkpoint.run_name"):
        make_config(checkpoint={"resume": "auto"}).check()


def test_truncate_drops_rows_after_the_checkpoint(tmp_path):
    config = make_config(checkpoint={"run_dir": str(tmp_path), "run_name": "r"})
    run = RunDirectory(config)
    for step in (1, 2, 3):
        run.log({"step": step, "reward_mean": step / 10})
    run.log_adjustment({"step": 1, "reason": "a"})
    run.log_adjustment({"step": 3, "reason": "b"})
    kept = run.truncate(2)
    assert [r["step"] for r in kept] == [1, 2] == [r["step"] for r in run.read_metrics()]
    lines = (run.path / "adjustments.jsonl").read_text().splitlines()
    assert [json.loads(line)["reason"] for line in lines] == ["a"]


def test_callback_state_round_trips():
    stop = EarlyStopping("reward_mean", patience=3)
    callbacks = CallbackList([stop])

    class Trainer:
        def request_stop(self, reason):
            self.reason = reason

    trainer = Trainer()
    for value in (0.5, 0.4, 0.3):
        callbacks.on_step_end(trainer, {"step": 1, "reward_mean": value})
    state = json.loads(json.dumps(callbacks.state_dict()))
    again = EarlyStopping("reward_mean", patience=3)
    restored = CallbackList([again])
    restored.on_train_begin(trainer)
    restored.load_state_dict(state)
    assert (again.best, again.wait) == (0.5, 2)
    restored.on_step_end(trainer, {"step": 4, "reward_mean": 0.2})  # the third step without improvement
    assert again.stopped_step == 4 and "patience 3" in trainer.reason
