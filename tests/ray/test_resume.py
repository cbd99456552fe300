"""Full-state checkpoints and exact resume, on real actors with a tiny model."""

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


def run_config(tiny_model, run_dir, name, epochs, **checkpoint):
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
        },
        checkpoint={"run_dir": str(run_dir), "run_name": name, "save_interval": 2, **checkpoint},
    )


def train(config):
    trainer = RayPPOTrainer(config)
    try:
        return trainer, trainer.fit()
    finally:
        trainer.cleanup()


@pytest.fixture(scope="module")
def runs(ray_local, tiny_model, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resume")
    _, whole = train(run_config(tiny_model, run_dir, "whole", 4))
    first, _ = train(run_config(tiny_model, run_dir, "split", 2))
    resumed, _ = train(run_config(tiny_model, run_dir, "split", 4, resume="auto", keep_last=1))
    return whole, first, resumed


def test_resumed_steps_equal_the_uninterrupted_run(runs):
    whole, _, resumed = runs
    rows = resumed.run.read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # no gap, no repeated step
    assert all(r["grad_norm"] > 0 and r["reward_std"] > 0 for r in whole)  # the policy moves
    assert whole[3]["kl"] > 1e-3  # ... away from the reference
    for a, b in zip(whole[2:], rows[2:], strict=True):
        diffs = {k: abs(a[k] - b[k]) for k in COMPARED}
        print(f"step {a['step']} |uninterrupted - resumed|: {diffs}")
        assert max(diffs.values()) <= 1e-4, diffs
        assert a["weight_version"] == b["weight_version"] == a["step"]
    # the first two steps were not re-run: they are the first run's rows
    assert rows[:2] == resumed.metrics_history[:2]


def test_checkpoint_layout_and_pruning(runs):
    _, first, resumed = runs
    checkpoints = resumed.run.path / "checkpoints"
    # keep_last=1 removed step 2 once step 4 was complete
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_000004"]
    latest = checkpoints / "step_000004"
    assert (latest / "policy" / "model.safetensors").is_file()
    assert (latest / "learner" / "rank0.pt").is_file()
    assert (latest / "critic" / "value_head.pt").is_file() and (latest / "critic_state" / "rank0.pt").is_file()
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["weight_version"] == 4


def test_run_with_checkpoints_needs_resume(runs, ray_local, tiny_model):
    _, first, _ = runs
    config = run_config(tiny_model, first.run.path.parent, "split", 4)
    with pytest.raises(ConfigError, match="checkpoint.resume=auto"):
        RayPPOTrainer(config).setup()


class KillLearnerOnce:
    """A callback that kills the learner after step 2 (before that step's checkpoint)."""

    def __init__(self):
        self.killed = False

    def on_step_end(self, trainer, row):
        import ray

        if row["step"] == 2 and not self.killed:
            self.killed = True
            ray.kill(trainer.learner)


def test_a_dead_learner_restarts_the_run_from_its_newest_checkpoint(ray_local, tiny_model, tmp_path):
    config = tiny_config(
        tiny_model,
        training={"num_epochs": 3, "batch_size": 4, "group_size": 2, "kl_coef": 0.0},
        checkpoint={"run_dir": str(tmp_path), "run_name": "restarted", "save_interval": 1, "save_final": False},
    )
    trainer = RayPPOTrainer(config, callbacks=[KillLearnerOnce()])
    try:
        history = trainer.fit()
    finally:
        trainer.cleanup()
    rows = trainer.run.read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3]  # step 2 re-run from checkpoint 1, logged once
    assert [r["run_restarts"] for r in rows] == [0, 1, 1]
    assert [r["weight_version"] for r in rows] == [1, 2, 3]
    assert history == rows


def test_a_dead_learner_without_restarts_left_stops_naming_it(ray_local, tiny_model, tmp_path):
    config = tiny_config(
        tiny_model,
        training={"num_epochs": 3, "batch_size": 4, "group_size": 2, "kl_coef": 0.0, "max_failures": 0},
        checkpoint={"run_dir": str(tmp_path), "run_name": "stopped", "save_interval": 1},
    )
    trainer = RayPPOTrainer(config, callbacks=[KillLearnerOnce()])
    try:
        with pytest.raises(RuntimeError, match=r"ActorDiedError.*ActorLearner.*max_failures=0"):
            trainer.fit()
    finally:
        trainer.cleanup()
