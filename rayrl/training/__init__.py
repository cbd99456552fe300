"""Training around `RayPPOTrainer`: one-call `train()` with profiles, callbacks, health
diagnostics, automatic adjustment.

Everything here imports without Ray or torch (the trainer loads when `train()` runs), so
it imports fast and the callbacks are tested on recorded metrics rows.
"""

from rayrl.training.auto import AutoAdjust, AutoAdjustConfig
from rayrl.training.callbacks import Callback, CallbackList, EarlyStopping, TrainerControl, row_value
from rayrl.training.diagnostics import (
    DiagnosticsMonitor,
    DiagnosticsThresholds,
    HealthIssue,
    HealthStatus,
    TrainingHealth,
)
from rayrl.training.train import PROFILES, AutoTrainer, build_config, train, train_sync

__all__ = [
    "PROFILES",
    "AutoAdjust",
    "AutoTrainer",
    "AutoAdjustConfig",
    "Callback",
    "CallbackList",
    "DiagnosticsMonitor",
    "DiagnosticsThresholds",
    "EarlyStopping",
    "HealthIssue",
    "HealthStatus",
    "TrainerControl",
    "TrainingHealth",
    "build_config",
    "row_value",
    "train",
    "train_sync",
]
