"""Generation ahead of the learner (training.max_staleness): the bound holds whichever side
is slow, every token records the weight version that generated it, and syncs happen only
between batches."""

import time

import pytest

from rayrl.actors.learner import ActorLearner
from rayrl.actors.rollout import RolloutWorker
from rayrl.config import ConfigError, ConfigStore
from rayrl.placement import Role
from rayrl.trainer import RayPPOTrainer
from tests.ray.test_resume import reward_by_length  # noqa: F401 - named by the config below
from tests.ray.test_trainer import tiny_config


class SlowLearner(ActorLearner):
    """A learner whose every update takes 2 s longer."""

    def update(self, batch, kl_coef=None):
        time.sleep(2.0)
        return super().update(batch, kl_coef)


class SlowEngine(RolloutWorker):
    """An engine whose every turn takes 0.3 s longer."""

    async def generate(self, *args, **kwargs):
        import asyncio

        await asyncio.sleep(0.3)
        return await super().generate(*args, **kwargs)


def run(tiny_model, tmp_path, k: int, slow: dict, epochs: int = 5):
    config = tiny_config(
        tiny_model,
        training={
            "num_epochs": epochs,
            "batch_size": 8,
            "group_size": 4,
            "learning_rate": 1e-3,
            "kl_coef": 0.0,
            "max_staleness": k,
            "rollout_correction": "truncate" if k else "none",
            "reward_fn": "tests.ray.test_resume:reward_by_length",
        },
        learner={"micro_batch_size": 4},
        checkpoint={"run_dir": str(tmp_path), "run_name": f"k{k}", "save_final": False},
    )
    trainer = RayPPOTrainer(config)
    trainer.role_classes.update(slow)
    try:
        history = trainer.fit()
    finally:
        trainer.cleanup()
    return trainer, history


@pytest.mark.parametrize(
    ("k", "slow"),
    [
        pytest.param(
            1, {Role.LEARNER: SlowLearner}, marks=pytest.mark.slow
        ),  # 67 s; the bound is the same code
        (2, {Role.ROLLOUT: SlowEngine}),
    ],
    ids=["k1_slow_learner", "k2_slow_engine"],
)
def test_staleness_stays_within_k_whichever_side_is_slow(ray_local, tiny_model, tmp_path, k, slow):
    trainer, rows = run(tiny_model, tmp_path, k, slow)
    print([(r["step"], r["staleness_max"], r["synced"], r["engine_weight_version"]) for r in rows])
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["weight_version"] for r in rows] == [1, 2, 3, 4, 5]  # the learner's, one per update
    # versions behind the learner of each batch's tokens when trained on, and syncs: only
    # when the next batch would otherwise be more than k behind, never during a batch
    if k == 1:
        assert [r["staleness_max"] for r in rows] == [0, 1, 1, 1, 1]
        assert [r["synced"] for r in rows] == [0, 1, 1, 1, 0]
    else:
        assert [r["staleness_max"] for r in rows] == [0, 1, 2, 1, 2]
        assert [r["synced"] for r in rows] == [0, 0, 1, 0, 0]
    assert all(r["staleness_mean"] == r["staleness_max"] for r in rows)  # one version per batch
    assert trainer.engine_version == trainer.version == 5  # after the run the engines caught up
    # the rollout correction sees the gap: stale tokens are weighed, not ignored
    assert all(r["is_weight_mean"] > 0 for r in rows)
    assert all(r["episodes"] == 8 for r in rows)


def test_staleness_without_a_correction_is_refused():
    with pytest.raises(ConfigError, match="max_staleness=1.*rollout_correction=truncate"):
        ConfigStore.from_dict({"training": {"max_staleness": 1}})
