"""Full-state checkpoints, exact resume and run restarts, on real actors with a tiny model."""

import json

import pytest

from rayrl.config import ConfigError
from rayrl.trainer import RayPPOTrainer
from tests.ray.test_trainer import tiny_config

COMPARED = ("reward_mean", "total_loss", "policy_loss", "kl", "grad_norm", "entropy", "value_loss")


def reward_by_length(summary: dict) -> float:
    """A reward that varies within each group (the tiny random model never solves a task),
    so every step has advantages, a gradient and a moving policy."""
    return (len(summary["final_response"]) % 5) / 4


class KillLearnerOnce:
    """A callback that kills the learner at the end of step `at`, before that step's
    checkpoint: the run restarts from the checkpoint of step `at - 1`."""

    def __init__(self, at: int):
        self.at, self.killed = at, False

    def on_step_end(self, trainer, row):
        import ray

        if row["step"] == self.at and not self.killed:
            self.killed = True
            ray.kill(trainer.learner)


def run_config(tiny_model, run_dir, name, epochs, training=None, **checkpoint):
    return tiny_config(
        tiny_model,
        training={
            "num_epochs": epochs,
            "batch_size": 8,
            "group_size": 4,
            "micro_batch_size": 4,
            "learning_rate": 1e-3,
            "kl_coef": 0.01,
            "deterministic": True,
            "adv_estimator": "gae",  # a critic too: its weights and optimizer are resumed as well
            "reward_fn": "tests.ray.test_resume:reward_by_length",
            **(training or {}),
        },
        checkpoint={"run_dir": str(run_dir), "run_name": name, **checkpoint},
    )


def train(config, callbacks=None):
    trainer = RayPPOTrainer(config, callbacks=callbacks)
    try:
        return trainer, trainer.fit()
    finally:
        trainer.cleanup()


@pytest.fixture(scope="module")
def runs(ray_local, tiny_model, tmp_path_factory):
    """An uninterrupted 3-step run, and one whose learner is killed at the end of step 3:
    it restarts from the checkpoint of step 2 (new actors, state loaded) and goes on."""
    run_dir = tmp_path_factory.mktemp("resume")
    _, whole = train(run_config(tiny_model, run_dir, "whole", 3, save_final=False))
    restarted, _ = train(
        run_config(tiny_model, run_dir, "restarted", 3, save_interval=1, keep_last=1),
        callbacks=[KillLearnerOnce(at=3)],
    )
    return whole, restarted


def test_resumed_steps_equal_the_uninterrupted_run(runs):
    whole, restarted = runs
    rows = restarted.run.read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3]  # step 3 re-run and logged once
    assert [r["run_restarts"] for r in rows] == [0, 0, 1]
    assert all(r["grad_norm"] > 0 and r["reward_std"] > 0 for r in whole)  # the policy moves
    assert whole[2]["kl"] > 1e-3  # ... away from the reference
    for a, b in zip(whole[2:], rows[2:], strict=True):
        diffs = {k: abs(a[k] - b[k]) for k in COMPARED}
        print(f"step {a['step']} |uninterrupted - resumed|: {diffs}")
        assert max(diffs.values()) <= 1e-4, diffs
        assert a["weight_version"] == b["weight_version"] == a["step"]
    assert rows == restarted.metrics_history


def test_checkpoint_layout_and_pruning(runs):
    _, restarted = runs
    checkpoints = restarted.run.path / "checkpoints"
    # keep_last=1 left the newest complete checkpoint only, and no temporary folder
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_000003"]
    latest = checkpoints / "step_000003"
    assert (latest / "policy" / "model.safetensors").is_file()
    assert (latest / "learner" / "rank0.pt").is_file()
    assert (latest / "critic" / "value_head.pt").is_file() and (
        latest / "critic_state" / "rank0.pt"
    ).is_file()
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["weight_version"] == 3


def test_run_with_checkpoints_needs_resume(runs, tiny_model):
    _, restarted = runs
    config = run_config(tiny_model, restarted.run.path.parent, "restarted", 3)
    with pytest.raises(ConfigError, match="checkpoint.resume=auto"):
        RayPPOTrainer(config).setup()  # before any actor starts


@pytest.mark.slow  # the same stop path as tests/ray/test_trainer.py's engine restart limit
def test_a_dead_learner_without_restarts_left_stops_naming_it(ray_local, tiny_model, tmp_path):
    config = run_config(
        tiny_model, tmp_path, "stopped", 2, {"adv_estimator": "grpo", "max_failures": 0}, save_interval=1
    )
    trainer = RayPPOTrainer(config, callbacks=[KillLearnerOnce(at=2)])
    try:
        with pytest.raises(RuntimeError, match=r"ActorDiedError.*ActorLearner.*max_failures=0"):
            trainer.fit()
    finally:
        trainer.cleanup()
