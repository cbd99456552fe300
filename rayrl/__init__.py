"""rayrl: Ray-native reinforcement learning for LLM agents.

Heavy pieces (torch, Ray, vLLM) load on first use, so `import rayrl` and
`rayrl.config` stay fast and work on a machine without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rayrl.config import (
    AgentRunConfig,
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
    **dict.fromkeys(
        ["Tool", "ToolDefinition", "ToolParameter", "ToolRegistry", "ToolArgumentError", "CalculatorTool"],
        "rayrl.agent.tools",
    ),
    **dict.fromkeys(
        [
            "ActionParser",
            "JSONActionParser",
            "ReActActionParser",
            "FunctionCallingParser",
            "ToolCall",
            "ParseResult",
        ],
        "rayrl.agent.parsers",
    ),
    **dict.fromkeys(["MultiTurnManager", "Turn", "ExecutedToolCall"], "rayrl.agent.multi_turn"),
    "ConversationTurn": "rayrl.agent.conversation",
    **dict.fromkeys(["ConversationEnvironment", "TaskEnvironment"], "rayrl.envs"),
    **dict.fromkeys(
        ["Agent", "AgentConfig", "MultiTurnAgent", "ToolAgent", "load_agent_from_checkpoint"], "rayrl.agents"
    ),
    **dict.fromkeys(["train", "train_sync", "AutoTrainer", "PROFILES"], "rayrl.training.train"),
    **dict.fromkeys(["Callback", "EarlyStopping"], "rayrl.training.callbacks"),
    "DiagnosticsMonitor": "rayrl.training.diagnostics",
    **dict.fromkeys(
        [
            "AgentPrompt",
            "BundledGenerationOutputs",
            "EnvironmentService",
            "GenerationConfig",
            "Trajectory",
            "register_agent",
            "register_env",
        ],
        "rayrl.agent.async_agent",
    ),
    "AutoAdjust": "rayrl.training.auto",
    **dict.fromkeys(
        [
            "create_inference_engine",
            "VLLMInferenceEngine",
            "BatchInferenceManager",
            "MultiTurnInferenceEngine",
            "InferenceBackendError",
        ],
        "rayrl.agent.inference",
    ),
    **dict.fromkeys(
        [
            "RewardType",
            "RewardResult",
            "RewardFunction",
            "CompositeReward",
            "reward_function",
            "load_reward",
            "EpisodeTranscript",
            "CorrectnessReward",
            "ConcisenessReward",
            "FormatReward",
            "HelpfulnessReward",
            "SafetyReward",
            "EngagementReward",
        ],
        "rayrl.rewards",
    ),
    **dict.fromkeys(["ActionResult", "BaseAgent"], "rayrl.agent.actions"),
    "AgenticTrainer": "rayrl.offline",
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


__all__ = sorted(
    [
        "CheckpointConfig",
        "ConfigError",
        "ConfigStore",
        "EnvironmentConfig",
        "InferenceConfig",
        "ModelConfig",
        "RayConfig",
        "TrainingConfig",
        *_LAZY,
    ]
)
