"""Offline fine-tuning on collected trajectories (seed 003's path): an agent of yours plays
problems (`rayrl.agent.actions.BaseAgent`), `AgenticTrainer` fine-tunes LoRA adapters on
the trajectories with per-action reward weights, on rayrl's learner and engine actors."""

from rayrl.offline.trainer import AgenticTrainer, LoraSettings, OfflineSettings, RemotePolicy
from rayrl.offline.transcripts import TrajectoryDataset, build_dataset, system_prompt

__all__ = [
    "AgenticTrainer",
    "LoraSettings",
    "OfflineSettings",
    "RemotePolicy",
    "TrajectoryDataset",
    "build_dataset",
    "system_prompt",
]
