"""Shared fixtures: a tiny random Llama beside the real SmolLM2 tokenizer, and a local Ray."""

from __future__ import annotations

import os

import pytest

from rayrl.config import ConfigStore


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

    os.environ.update(ACTOR_ENV)
    ray.init(num_cpus=8, include_dashboard=False, runtime_env={"env_vars": ACTOR_ENV})
    yield ray
    ray.shutdown()
