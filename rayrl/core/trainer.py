"""`rayrl.core.trainer`: offline fine-tuning on trajectories (defined in `rayrl.offline`)."""

from rayrl.offline import AgenticTrainer, LoraSettings, OfflineSettings  # noqa: F401
