"""Reference role: the frozen initial policy, scoring rollouts for the KL term."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rayrl.actors import modeling
from rayrl.config import TrainingConfig


class ReferenceWorker:
    """Plain class; `rayrl.placement` wraps it as a Ray actor.

    Args:
        model_path: local Hugging Face folder of the initial policy.
        config: the `training` section (micro-batch size, autocast, threads).
    """

    def __init__(self, model_path: str, config: TrainingConfig):
        self.config = config
        modeling.set_threads(config.num_threads)
        self.device = modeling.pick_device()
        self.model = modeling.load_causal_lm(model_path, self.device, trainable=False)

    def compute_logprobs(self, batch: pa.Table) -> np.ndarray:
        """Flat float32 reference log-probs of the batch's trainable tokens, in table order."""
        seqs = modeling.SequenceBatch(batch)
        return modeling.batch_logprobs(
            modeling.TokenLogprobs(self.model),
            seqs,
            self.config.micro_batch_size,
            self.device,
            self.config.autocast_dtype,
        )
