"""Reference role: the frozen initial policy, scoring rollouts for the KL term.

The role is a group of `reference.num_ranks` ranks; each scores a contiguous
block of the batch's rows (`modeling.row_shard`) and the scorer concatenates their
outputs in rank order. Inference only: the ranks share no process group.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rayrl.actors import modeling
from rayrl.config import ReferenceConfig


class ReferenceWorker:
    """Plain class; `rayrl.placement` wraps it as a Ray actor.

    Args:
        model_path: local Hugging Face folder of the initial policy.
        config: the `reference` section (micro-batch size, autocast, threads).
        rank / world_size: which block of rows this rank scores, out of how many.
    """

    def __init__(self, model_path: str, config: ReferenceConfig, rank: int = 0, world_size: int = 1):
        self.config = config
        self.rank, self.world_size = rank, world_size
        modeling.set_threads(config.num_threads)
        self.device = modeling.pick_device()
        self.model = modeling.load_causal_lm(
            model_path, self.device, trainable=False, attention=config.attention
        )
        self.forward = modeling.TokenLogprobs(self.model)
        self.batches_scored = 0

    def compute_logprobs(self, batch: pa.Table) -> np.ndarray:
        """Flat float32 reference log-probs of the trainable tokens of this rank's block
        of rows, in table order."""
        self.batches_scored += 1
        seqs = modeling.SequenceBatch(batch)
        logprobs = modeling.batch_logprobs(
            self.forward,
            seqs,
            self.config.micro_batch_size,
            self.device,
            self.config.autocast_dtype,
            rows=modeling.row_shard(len(seqs), self.rank, self.world_size),
            packing=self.config.packing,
            max_tokens=self.config.max_tokens_per_pass,
        )
        modeling.release_memory(self.device, self.config.release_memory)
        return logprobs

    def scored(self) -> int:
        """Batches this rank has scored (a run's first step needs none: the learner still
        is the reference then)."""
        return self.batches_scored
