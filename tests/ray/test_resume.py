"""Full-state checkpoints, exact resume and run restarts, on real actors with a tiny model."""

import json

import pytest

from rayrl.config import ConfigError
from rayrl.trainer import RayPPOTrainer
from tests.ray.test_trainer import tiny_config

# Every role killed mid-step and a resumed run equal to an uninterrupted one: three runs,
# about 270 s on 2 cores, so behind `-m slow`. The default tier resumes a run from its
# checkpoint in tests/ray/test_data.py (the read position of a data file, the checkpoint
# layout, and the error of a run with checkpoints started without `checkpoint.resume`).
pytestmark = pytest.mark.slow

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


def exit_later(actor, delay_s: float) -> int:
    """Run inside an actor (`handle.__ray_call__`): its process exits with os._exit after
    `delay_s` seconds, wherever it is then. Returns the pid."""
    import os
    import threading

    threading.Timer(delay_s, os._exit, args=(1,)).start()
    return os.getpid()


class KillDuringSteps:
    """A callback that, once each, kills an actor of a role early in a chosen step: with
    os._exit inside the actor's process (the engine's vLLM core runs in that process too)."""

    def __init__(self, plan: dict[int, tuple[str, float]]):
        self.plan = plan  # step during which to kill -> (role, seconds into the step)
        self.done: list[tuple[int, str, int]] = []

    def on_train_begin(self, trainer):
        self._arm(trainer, trainer.start_step + 1)

    def on_step_end(self, trainer, row):
        self._arm(trainer, row["step"] + 1)

    def _arm(self, trainer, step):
        import ray

        if step not in self.plan or any(d[0] == step for d in self.done):
            return
        role, delay = self.plan[step]
        actor = {
            "reference": trainer.references,
            "engine": trainer.engines,
            "agent_loop": [trainer.runner],
            "critic": trainer.critics,
            "learner": trainer.learners,
        }
        pid = ray.get(actor[role][0].__ray_call__.remote(exit_later, delay))
        self.done.append((step, role, pid))


def run_config(tiny_model, run_dir, name, epochs, training=None, **checkpoint):
    return tiny_config(
        tiny_model,
        training={
            "num_epochs": epochs,
            "batch_size": 8,
            "group_size": 4,
            "learning_rate": 1e-3,
            "kl_coef": 0.01,
            "deterministic": True,
            "adv_estimator": "gae",  # a critic too: its weights and optimizer are resumed as well
            "reward_fn": "tests.ray.test_resume:reward_by_length",
            **(training or {}),
        },
        learner={"micro_batch_size": 4},
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
    """An uninterrupted 5-step run, and the same run in two parts: 4 steps during which an
    engine, the reference (step 1 has no reference pass), the critic and the learner die
    in turn, then a new trainer that resumes it from its checkpoint
    (`checkpoint.resume=auto`) for step 5, during which the agent loop dies."""
    run_dir = tmp_path_factory.mktemp("resume")
    _, whole = train(run_config(tiny_model, run_dir, "whole", 5, save_final=False))
    kills = KillDuringSteps(
        {1: ("engine", 0.5), 2: ("reference", 0.5), 3: ("critic", 0.5), 4: ("learner", 0.5)}
    )
    survived, _ = train(
        run_config(tiny_model, run_dir, "survived", 4, save_interval=1, keep_last=1, save_final=False),
        callbacks=[kills],
    )
    resumed_kills = KillDuringSteps({5: ("agent_loop", 0.5)})
    resumed, _ = train(
        run_config(tiny_model, run_dir, "survived", 5, save_interval=1, keep_last=1, resume="auto"),
        callbacks=[resumed_kills],
    )
    return whole, survived, resumed, kills.done + resumed_kills.done


def test_a_run_survives_each_role_dying_mid_step_and_stays_exact(runs):
    """Every role killed for real during a step (os._exit in its process), and the run
    stopped and resumed by a new trainer: every step equals the uninterrupted run's, each
    logged once, and the counters say what happened."""
    whole, survived, resumed, done = runs
    assert [role for _, role, _ in done] == ["engine", "reference", "critic", "learner", "agent_loop"]
    rows = resumed.run.read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # re-run steps logged once
    assert rows[:4] == survived.metrics_history  # the resumed run continued the same log
    counters = ("role_restarts", "engine_restarts", "run_restarts")
    print({r["step"]: {k: r[k] for k in (*counters, "episodes_retried")} for r in rows})
    # after step 1 the engine was replaced mid-rollout; by the end of step 4 the reference
    # had restarted in place, and learner and critic twice back to the newest checkpoint
    # (where each death lands, in a step or in the checkpoint after it, depends on timing);
    # the resumed trainer counts afresh: the agent loop restarted in place
    assert [tuple(r[k] for k in counters) for r in (rows[0], rows[3], rows[4])] == [
        (0, 1, 0),
        (1, 1, 2),
        (1, 0, 0),
    ]
    assert rows[0]["episodes_retried"] > 0  # the dead engine's episodes ran again
    assert all(r["episodes"] == 8 for r in rows)  # none dropped
    assert all(r["grad_norm"] > 0 and r["reward_std"] > 0 for r in whole)  # the policy moves
    assert whole[-1]["kl"] > 1e-3  # ... away from the reference
    for a, b in zip(whole, rows, strict=True):
        diffs = {k: abs(a[k] - b[k]) for k in COMPARED}
        print(f"step {a['step']} |uninterrupted - survived|: {diffs}")
        assert max(diffs.values()) <= 1e-4, diffs
        assert a["weight_version"] == b["weight_version"] == a["step"]


def test_checkpoint_layout_and_pruning(runs):
    _, _, resumed, _ = runs
    checkpoints = resumed.run.path / "checkpoints"
    # keep_last=1 left the newest complete checkpoint only, and no temporary folder
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_000005"]
    latest = checkpoints / "step_000005"
    assert (latest / "policy" / "model.safetensors").is_file()
    assert (latest / "learner" / "rank0.pt").is_file()
    assert (latest / "critic" / "value_head.pt").is_file() and (
        latest / "critic_state" / "rank0.pt"
    ).is_file()
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["step"] == 5 and state["weight_version"] == 5


def test_run_with_checkpoints_needs_resume(runs, tiny_model):
    _, _, resumed, _ = runs
    config = run_config(tiny_model, resumed.run.path.parent, "survived", 6)
    with pytest.raises(ConfigError, match="checkpoint.resume=auto"):
        RayPPOTrainer(config).setup()  # before any actor starts


# the same stop path as tests/ray/test_trainer.py's engine restart limit
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
