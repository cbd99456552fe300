"""Data-parallel learner ranks on CPU (gloo): two ranks equal one rank on the same global batch."""

import sys

import numpy as np
import psutil
import pyarrow as pa
import pytest
import torch

from rayrl.actors import modeling
from rayrl.actors.learner import ActorLearner
from rayrl.config import LearnerConfig
from tests.conftest import make_config

LR = 1e-3


def global_batch() -> pa.Table:
    """Seven sequences of different lengths (an odd count, so ranks get unequal shares)."""
    rng = np.random.default_rng(0)
    ids, masks, lps, advs = [], [], [], []
    for i in range(7):
        n_prompt, n_gen = 4 + i, 3 + 2 * i
        ids.append(rng.integers(5, 1000, n_prompt + n_gen).tolist())
        masks.append([0] * n_prompt + [1] * n_gen)
        lps.append([0.0] * n_prompt + [-1.0] * n_gen)
        advs.append([0.0] * n_prompt + [float(rng.normal())] * n_gen)
    return pa.table(
        {
            "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
            "loss_mask": pa.array(masks, type=pa.list_(pa.int8())),
            "rollout_logprobs": pa.array(lps, type=pa.list_(pa.float32())),
            "advantages": pa.array(advs, type=pa.list_(pa.float32())),
        }
    )


def learner_config(tiny_model, **keys):
    """float32, one thread, micro-batches of 2 of a batch of 8 (the global batch has 7 rows);
    `keys` go to the `learner` section when they are its own, else to `training`."""
    learner = {"micro_batch_size": 2, "autocast_dtype": "float32", "num_threads": 1}
    training = {"learning_rate": LR, "batch_size": 8}
    for key, value in keys.items():
        (learner if key in LearnerConfig.model_fields else training)[key] = value
    return make_config(model={"model_name": tiny_model}, training=training, learner=learner)


def start_ranks(ray, tiny_model, world: int, **keys):
    """`world` learner ranks of the tiny model, joined in their strategy's group."""
    cfg = learner_config(tiny_model, kl_coef=0.0, num_ranks=world, **keys)
    cls = ray.remote(ActorLearner).options(num_cpus=0)
    ranks = [cls.remote(tiny_model, cfg.training, cfg.learner, "float32", r, world) for r in range(world)]
    host, port = ray.get(ranks[0].group_address.remote())
    ray.get([r.join_group.remote(host, port) for r in ranks])
    return ranks


def train(ray, tiny_model, world: int, **training):
    ranks = start_ranks(ray, tiny_model, world, **training)
    before = ray.get([r.flat_parameters.remote() for r in ranks])[0]  # a collective under ZeRO-3
    batch = ray.put(global_batch())
    metrics = ray.get([r.update.remote(batch) for r in ranks])
    weights = ray.get([r.flat_parameters.remote() for r in ranks])
    for r in ranks:
        ray.kill(r)
    return before, metrics, weights


@pytest.mark.parametrize(
    "strategy",
    [
        {"strategy": "torch"},
        # ZeRO 0 and 2 share the optimizer path of 3 without its parameter partitioning, and
        # ZeRO-3 runs below with two epochs and two mini-batches: the default run keeps those
        pytest.param({"strategy": "deepspeed", "zero_stage": 0}, marks=pytest.mark.slow),
        pytest.param({"strategy": "deepspeed", "zero_stage": 2}, marks=pytest.mark.slow),
        pytest.param({"strategy": "deepspeed", "zero_stage": 3}, marks=pytest.mark.slow),
        {"strategy": "deepspeed", "zero_stage": 3, "ppo_epochs": 2, "num_mini_batches": 2},
        # passes cut by tokens: rank 0's share takes 3 passes, rank 1's 2 and a weight-0 one
        {"strategy": "torch", "max_tokens_per_pass": 40},
    ],
    ids=["torch", "zero0", "zero2", "zero3", "zero3_two_epochs_two_minibatches", "torch_token_budget"],
)
def test_two_ranks_match_one_rank_on_the_same_global_batch(ray_local, tiny_model, strategy):
    schedule = {k: strategy[k] for k in ("ppo_epochs", "num_mini_batches") if k in strategy}
    if "max_tokens_per_pass" in strategy:
        seqs = modeling.SequenceBatch(global_batch())
        shares = [np.arange(7)[r::2] for r in range(2)]
        passes = [len(seqs.micro_batches(s, 2, True, strategy["max_tokens_per_pass"])) for s in shares]
        assert passes == [3, 2]
    before, one_metrics, (one,) = train(ray_local, tiny_model, 1, strategy="torch", **schedule)
    _, two_metrics, (rank0, rank1) = train(ray_local, tiny_model, 2, **strategy)
    # both ranks took the identical step
    np.testing.assert_array_equal(rank0, rank1)
    # the summed gradient is the whole batch's: same norm, same loss, same token count
    assert two_metrics[0]["grad_norm"] == pytest.approx(one_metrics[0]["grad_norm"], rel=1e-4)
    assert two_metrics[0]["total_loss"] == pytest.approx(one_metrics[0]["total_loss"], rel=1e-4, abs=1e-7)
    assert two_metrics[0]["train_tokens"] == one_metrics[0]["train_tokens"]
    # and the same weights: Adam's first step moves each trained weight by about lr
    moved = np.abs(one - before) > LR / 2
    assert moved.sum() > 10_000
    diff = np.abs(rank0 - one)
    assert diff.max() <= 2.5 * LR
    assert (diff > LR / 100).mean() < 1e-4  # only weights whose gradient is ~0 may flip


def test_gradient_checkpointing_gives_the_same_update(tiny_model):
    """Recomputing activations in the backward pass changes memory, not the gradient."""
    results = []
    for checkpointing in (False, True):
        cfg = learner_config(tiny_model, gradient_checkpointing=checkpointing)
        learner = ActorLearner(tiny_model, cfg.training, cfg.learner, "float32")
        assert learner.model.is_gradient_checkpointing == checkpointing
        results.append(learner.update(global_batch()))
    plain, recomputed = results
    assert recomputed["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-5)
    assert recomputed["total_loss"] == pytest.approx(plain["total_loss"], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("packing", [False, True])
def test_a_token_budget_changes_the_passes_not_the_update(tiny_model, packing):
    """Micro-batches cut by tokens (max_tokens_per_pass) instead of rows sum to the same
    gradient: same grad norm, loss and weights."""
    seqs = modeling.SequenceBatch(global_batch())
    assert len(seqs.micro_batches(np.arange(7), 2, packing, 30)) == 6  # 4 passes of 2 rows without it
    results = []
    for budget in (None, 30):
        cfg = learner_config(tiny_model, kl_coef=0.0, packing=packing, max_tokens_per_pass=budget)
        learner = ActorLearner(tiny_model, cfg.training, cfg.learner, "float32")
        results.append((learner.update(global_batch()), learner.flat_parameters()))
    (by_rows, w_rows), (by_tokens, w_tokens) = results
    assert by_tokens["grad_norm"] == pytest.approx(by_rows["grad_norm"], rel=1e-5)
    assert by_tokens["total_loss"] == pytest.approx(by_rows["total_loss"], rel=1e-5, abs=1e-7)
    assert np.abs(w_tokens - w_rows).max() < LR / 10


def test_rollout_correction_weighs_each_tokens_policy_loss(tiny_model):
    """Engine log-probs far below the learner's make every weight exceed the cap: truncation
    scales the policy loss by exactly the cap, masking removes every token from it."""
    batch = global_batch()
    far = [[lp - 30.0 for lp in row] for row in batch.column("rollout_logprobs").to_pylist()]
    batch = batch.set_column(
        batch.column_names.index("rollout_logprobs"),
        "rollout_logprobs",
        pa.array(far, type=pa.list_(pa.float32())),
    )
    results = {}
    for mode in ("none", "truncate", "mask"):
        cfg = learner_config(tiny_model, kl_coef=0.0, rollout_correction=mode, rollout_is_cap=2.0)
        results[mode] = ActorLearner(tiny_model, cfg.training, cfg.learner, "float32").update(batch)
    none, truncate, mask = results["none"], results["truncate"], results["mask"]
    assert truncate["total_loss"] == pytest.approx(2.0 * none["total_loss"], rel=1e-5)
    assert truncate["grad_norm"] == pytest.approx(2.0 * none["grad_norm"], rel=1e-4)
    assert mask["total_loss"] == 0.0 and mask["grad_norm"] == 0.0
    for row in results.values():  # the statistics do not depend on the mode
        assert (
            row["is_beyond_cap"] == 1.0 and row["is_weight_max"] > 1e8
        )  # exp of the log-ratio clamped at 20
        assert row["mismatch_kl"] > 20  # k3 of a log-ratio of ~30


def test_gspo_and_cispo_take_ppos_on_policy_step_through_the_learner(tiny_model):
    """On-policy (one epoch, one mini-batch) every ratio is 1, so GSPO and CISPO have PPO's
    gradient: the same grad norm in a real update; GSPO also PPO's loss, CISPO -A * log pi."""
    results = {}
    for loss in ("ppo", "gspo", "cispo"):
        cfg = learner_config(tiny_model, kl_coef=0.0, policy_loss=loss, loss_agg_mode="seq-mean-token-mean")
        results[loss] = ActorLearner(tiny_model, cfg.training, cfg.learner, "float32").update(global_batch())
    ppo, gspo, cispo = results["ppo"], results["gspo"], results["cispo"]
    assert ppo["grad_norm"] > 0
    assert gspo["grad_norm"] == pytest.approx(ppo["grad_norm"], rel=1e-5)
    assert gspo["total_loss"] == pytest.approx(ppo["total_loss"], rel=1e-5, abs=1e-7)
    assert cispo["grad_norm"] == pytest.approx(ppo["grad_norm"], rel=1e-5)
    assert cispo["total_loss"] != pytest.approx(ppo["total_loss"], rel=1e-3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_memory_returns_an_updates_activations_to_the_system(tiny_model):
    """An idle learner should hold its weights and optimizer state, not its activation peak."""
    rss_mb = lambda: psutil.Process().memory_info().rss / 2**20  # noqa: E731
    rng = np.random.default_rng(0)
    n = 32
    batch = pa.table(
        {
            "input_ids": pa.array(rng.integers(5, 1000, (n, 256)).tolist(), type=pa.list_(pa.int32())),
            "loss_mask": pa.array([[0] * 128 + [1] * 128] * n, type=pa.list_(pa.int8())),
            "rollout_logprobs": pa.array([[0.0] * 256] * n, type=pa.list_(pa.float32())),
            "advantages": pa.array([[0.0] * 128 + [1.0] * 128] * n, type=pa.list_(pa.float32())),
        }
    )
    cfg = learner_config(tiny_model, micro_batch_size=n, batch_size=n, release_memory=False)
    learner = ActorLearner(tiny_model, cfg.training, cfg.learner, "float32")
    learner.update(batch)
    held = rss_mb()
    modeling.release_memory(learner.device)
    assert held - rss_mb() > 80  # measured: ~165 MB of a 32 x 256-token pass given back


def test_release_memory_freezes_the_long_lived_heap_and_still_collects_new_cycles():
    """The first release takes the loaded heap out of the collector's scans (gc.freeze);
    garbage that later passes leave in reference cycles is still collected."""
    import gc
    import weakref

    modeling.release_memory(torch.device("cpu"))
    assert modeling._heap_frozen and gc.get_freeze_count() > 100_000  # imports, the libraries

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    gc.disable()  # only the release's own collection may free the cycle
    try:
        del a, b
        assert gone() is not None
        modeling.release_memory(torch.device("cpu"))
        assert gone() is None
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "world,strategy",
    [
        (1, {"strategy": "torch", "lora_rank": 4}),
        (2, {"strategy": "torch"}),
        (2, {"strategy": "deepspeed", "zero_stage": 3}),
    ],
    ids=["torch_lora", "torch_two_ranks", "zero3_two_ranks"],
)
def test_saved_state_continues_training_exactly(ray_local, tiny_model, tmp_path, world, strategy):
    """Train, save, train again; fresh ranks that load the save train to the same weights
    (optimizer moments, RNG and weight version restored, not only the weights)."""
    batch = ray_local.put(global_batch())
    ranks = start_ranks(ray_local, tiny_model, world, **strategy)
    ray_local.get([r.update.remote(batch) for r in ranks])
    ray_local.get([r.save_state.remote(str(tmp_path)) for r in ranks])
    continued = ray_local.get([r.update.remote(batch) for r in ranks])[0]
    expected = ray_local.get([r.flat_parameters.remote() for r in ranks])[0]
    for r in ranks:
        ray_local.kill(r)

    fresh = start_ranks(ray_local, tiny_model, world, **strategy)
    ray_local.get([r.load_state.remote(str(tmp_path)) for r in fresh])
    resumed = ray_local.get([r.update.remote(batch) for r in fresh])[0]
    got = ray_local.get([r.flat_parameters.remote() for r in fresh])[0]
    for r in fresh:
        ray_local.kill(r)
    assert resumed["total_loss"] == continued["total_loss"]
    np.testing.assert_array_equal(got, expected)
