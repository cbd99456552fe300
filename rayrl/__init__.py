"""rayrl: Ray-native reinforcement learning for LLM agents.

Heavy pieces (torch, Ray, vLLM) load on first use, so `import rayrl` and
`rayrl.config` stay fast and work on a machine without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rayrl.config import (
    CheckpointConfig,
    ConfigError,
    ConfigStore,
    EnvironmentConfig,
    InferenceConfig,
    ModelConfig,
    RayConfig,
    TrainingConfig,
)

_LAZY = {
    "RayPPOTrainer": "rayrl.trainer",
    "BaseEnvironment": "rayrl.envs.base",
    "MathFeedbackEnvironment": "rayrl.envs.math_feedback",
    "KLController": "rayrl.algorithms.kl",
    "compute_grpo_advantage": "rayrl.algorithms.advantages",
    "compute_policy_loss": "rayrl.algorithms.losses",
    "resolve_model": "rayrl.model_store",
}

if TYPE_CHECKING:  # pragma: no cover
    from rayrl.algorithms.advantages import compute_grpo_advantage
    from rayrl.algorithms.kl import KLController
    from rayrl.algorithms.losses import compute_policy_loss
    from rayrl.envs.base import BaseEnvironment
    from rayrl.envs.math_feedback import MathFeedbackEnvironment
    from rayrl.model_store import resolve_model
    from rayrl.trainer import RayPPOTrainer


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rayrl' has no attribute {name!r}")


__all__ = [
    "BaseEnvironment",
    "CheckpointConfig",
    "ConfigError",
    "ConfigStore",
    "EnvironmentConfig",
    "InferenceConfig",
    "KLController",
    "MathFeedbackEnvironment",
    "ModelConfig",
    "RayConfig",
    "RayPPOTrainer",
    "TrainingConfig",
    "compute_grpo_advantage",
    "compute_policy_loss",
    "resolve_model",
]
