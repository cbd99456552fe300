"""Callbacks on a real run: hooks see each metrics row, a raising callback is counted and
training goes on, `adjust` changes the learners' optimizer and is recorded with its
reason, `request_stop` ends training early."""

import json

import pytest

from rayrl.trainer import RayPPOTrainer
from rayrl.training import Callback
from tests.ray.test_trainer import tiny_config


class Steer(Callback):
    def __init__(self):
        self.rows, self.began, self.ended = [], 0, None

    def on_train_begin(self, trainer):
        self.began += 1

    def on_step_end(self, trainer, row):
        self.rows.append(row)
        if row["step"] == 1:
            trainer.adjust("test: halve", learning_rate=trainer.learning_rate / 2)
        if row["step"] == 2:
            trainer.request_stop("test: enough")

    def on_train_end(self, trainer, history):
        self.ended = len(history)


class Broken(Callback):
    def on_step_end(self, trainer, row):
        raise RuntimeError("callback bug")


@pytest.mark.slow  # adjust and stop through a real run: test_agent_training.py's AutoTrainer run
def test_callbacks_adjust_and_stop_a_real_run(ray_local, tiny_model, tmp_path):
    config = tiny_config(
        tiny_model,
        training={"num_epochs": 4, "batch_size": 4, "group_size": 2, "learning_rate": 1e-3},
        checkpoint={"run_dir": str(tmp_path), "run_name": "steer", "save_final": False},
    )
    steer = Steer()
    trainer = RayPPOTrainer(config, callbacks=[Broken(), steer])
    try:
        history = trainer.fit()
    finally:
        trainer.cleanup()
    assert [r["step"] for r in history] == [1, 2]  # stopped after 2 of 4
    assert steer.began == 1 and steer.ended == 2 and steer.rows == history
    assert history[0]["learning_rate"] == 1e-3 and history[1]["learning_rate"] == 5e-4
    assert history[1]["callback_errors"] == 1  # the broken callback's step-1 failure
    lines = (tmp_path / "steer" / "adjustments.jsonl").read_text().splitlines()
    change = json.loads(lines[0])
    assert change["reason"] == "test: halve" and change["learning_rate"] == [1e-3, 5e-4]
