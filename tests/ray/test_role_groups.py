"""Reference and critic groups of several ranks on CPU: N ranks equal one rank."""

import functools

import numpy as np
import pytest

from rayrl.actors import modeling
from rayrl.actors.critic import Critic
from rayrl.actors.reference import ReferenceWorker
from tests.conftest import make_config
from tests.ray.test_learner_ranks import global_batch

LR = 1e-3


def config(tiny_model, training=None, **critic):
    compute = {"micro_batch_size": 2, "autocast_dtype": "float32", "num_threads": 1}
    return make_config(
        model={"model_name": tiny_model},
        training={"batch_size": 8, "adv_estimator": "gae", **(training or {})},
        reference=compute,
        critic={"learning_rate": LR, **compute, **critic},
    )


def test_reference_ranks_score_blocks_that_join_into_the_whole_batch(ray_local, tiny_model):
    cfg = config(tiny_model).reference
    batch = ray_local.put(global_batch())
    cls = ray_local.remote(ReferenceWorker).options(num_cpus=0)
    (whole,) = ray_local.get([cls.remote(tiny_model, cfg).compute_logprobs.remote(batch)])
    ranks = [cls.remote(tiny_model, cfg, r, 3) for r in range(3)]
    parts = ray_local.get([r.compute_logprobs.remote(batch) for r in ranks])
    seqs = modeling.SequenceBatch(global_batch())
    # blocks of 3, 2 and 2 rows: each part holds exactly its rows' tokens
    assert [len(p) for p in parts] == [
        int(seqs.token_counts[modeling.row_shard(7, r, 3)].sum()) for r in range(3)
    ]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-5, atol=1e-5)
    assert whole.shape == (seqs.num_tokens,) and np.all(whole < 0)


def scored_batch():
    """The learner test's batch plus the critic's inputs: returns and old values."""
    table = global_batch()
    n = modeling.SequenceBatch(table).num_tokens
    rng = np.random.default_rng(1)
    return modeling.with_token_columns(
        table, {"returns": rng.normal(size=n), "old_values": rng.normal(scale=0.1, size=n)}
    )


def train_critic(ray, tiny_model, world: int, training=None, **critic):
    cfg = config(tiny_model, training, num_ranks=world, **critic)
    cls = ray.remote(Critic).options(num_cpus=0)
    ranks = [cls.remote(tiny_model, cfg.training, cfg.critic, r, world) for r in range(world)]
    host, port = ray.get(ranks[0].group_address.remote())
    ray.get([r.join_group.remote(host, port) for r in ranks])
    before = ray.get([r.flat_parameters.remote() for r in ranks])[0]
    batch = ray.put(scored_batch())
    values = np.concatenate(ray.get([r.compute_values.remote(batch) for r in ranks]))
    metrics = ray.get([r.update.remote(batch) for r in ranks])
    weights = ray.get([r.flat_parameters.remote() for r in ranks])
    for r in ranks:
        ray.kill(r)
    return before, values, metrics, weights


@functools.cache
def one_rank_critic(ray, tiny_model: str, micro_batch_size: int):
    """The one-rank critic's run that both strategies compare with, trained once."""
    return train_critic(ray, tiny_model, 1, SCHEDULE, micro_batch_size=micro_batch_size)


SCHEDULE = {"ppo_epochs": 1, "num_mini_batches": 2}


@pytest.mark.parametrize(
    "strategy",
    [{"strategy": "torch"}, {"strategy": "deepspeed", "zero_stage": 3}],
    ids=["torch", "zero3"],
)
def test_two_critic_ranks_match_one_rank(ray_local, tiny_model, strategy):
    # micro-batches of 3: the value blocks of 4 and 3 rows take 2 and 1 passes, so under
    # ZeRO-3 (a collective forward) rank 1 must add a pass
    before, one_values, one_metrics, (one,) = one_rank_critic(ray_local, tiny_model, 3)
    _, two_values, two_metrics, (rank0, rank1) = train_critic(
        ray_local, tiny_model, 2, SCHEDULE, micro_batch_size=3, **strategy
    )
    # values: each rank scored its block, together the whole batch
    assert one_values.shape == (modeling.SequenceBatch(global_batch()).num_tokens,)
    np.testing.assert_allclose(two_values, one_values, rtol=1e-5, atol=1e-6)
    # update: identical step on both ranks, the whole batch's loss and gradient
    np.testing.assert_array_equal(rank0, rank1)
    assert two_metrics[0] == two_metrics[1]
    for key in ("value_loss", "critic_grad_norm", "value_clip_frac"):
        assert two_metrics[0][key] == pytest.approx(one_metrics[0][key], rel=1e-4, abs=1e-7)
    assert one_metrics[0]["value_clip_frac"] > 0  # returns far from old values get clipped
    moved = np.abs(one - before) > LR / 2
    assert moved.sum() > 10_000
    diff = np.abs(rank0 - one)
    assert diff.max() <= 4.5 * LR  # two Adam steps (two mini-batches)
    assert (diff > LR / 100).mean() < 1e-4
