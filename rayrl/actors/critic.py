"""Critic role: a value model (the language model's backbone plus a scalar head).

V(s_t) is read from the hidden state at position t-1, the same position whose
logits give the log-prob of token t, so each trainable token has one value, in the
flat order every role uses. Trained on the clipped value loss against the returns
the scoring stage computed (`returns`, `old_values` columns of the batch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rayrl.actors import modeling
from rayrl.actors.strategy import (
    OptimizerSettings,
    init_distributed,
    make_strategy,
    mini_batches,
    rendezvous_address,
    sum_over_ranks,
)
from rayrl.algorithms import compute_value_loss
from rayrl.config import CriticConfig, TrainingConfig


class ValueModel(torch.nn.Module):
    """Decoder of a causal LM with a linear value head on its last hidden state."""

    def __init__(self, model_path: str, gradient_checkpointing: bool = False, attention: str = "sdpa"):
        super().__init__()
        lm = modeling.load_causal_lm(
            model_path,
            torch.device("cpu"),
            trainable=True,
            gradient_checkpointing=gradient_checkpointing,
            attention=attention,
        )
        self.backbone = lm.get_decoder()
        hidden = lm.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1))
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(
        self, input_ids, attention_mask, loss_mask=None, position_ids=None, predictor=None, targets=None
    ) -> torch.Tensor:
        """Values at the states that predict the scored tokens, flattened row by row (padded
        or packed inputs, as `modeling.token_logprobs` takes them)."""
        h, _ = modeling.predicting_states(
            self.backbone, input_ids, attention_mask, loss_mask, position_ids, predictor, targets
        )
        return self.value_head(h).squeeze(-1).float()


class Critic:
    """Plain class; `rayrl.placement` wraps it as a Ray actor.

    The role is a group of `critic.num_ranks` data-parallel ranks trained by the same
    strategy choices as the actor-learner (`critic.strategy`, torch or DeepSpeed ZeRO), with
    its own process group. `compute_values` gives each rank a contiguous block of rows;
    `update` splits every mini-batch over the ranks and sums their gradients. Call
    `join_group`, `compute_values`, `update` and `save` on every rank.

    Args:
        model_path: local Hugging Face folder of the backbone.
        training: the `training` section (batch schedule, PPO epochs, seed).
        config: the `critic` section (ranks, strategy, micro-batches, compute, optimizer).
        rank / world_size: this rank and the group's size.
    """

    def __init__(
        self,
        model_path: str,
        training: TrainingConfig,
        config: CriticConfig,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.training = training
        self.config = config
        self.rank, self.world_size = rank, world_size
        modeling.set_threads(config.num_threads)
        torch.manual_seed(training.seed)  # every rank starts from the same value head
        self.device = modeling.pick_device()
        self.model = ValueModel(
            model_path,
            config.gradient_checkpointing,
            modeling.attention_kernel(config.attention, self.device, trainable=True),
        ).to(self.device)
        self.strategy = None
        if config.strategy == "torch" and world_size == 1:
            self.strategy = self._make_strategy()
        self.rng = np.random.default_rng(training.seed + 1)  # same mini-batch split on every rank

    def group_address(self) -> tuple[str, int]:
        """Rendezvous address of the critic group (called on rank 0)."""
        return rendezvous_address()

    def join_group(self, host: str, port: int) -> str:
        """Join the critic group at rank 0's (host, port) and build the strategy (all ranks)."""
        if self.strategy is None:
            init_distributed(host, port, self.rank, self.world_size, self.device)
            self.strategy = self._make_strategy()
        return type(self.strategy).__name__

    def _make_strategy(self):
        optim = OptimizerSettings(
            self.config.learning_rate, self.config.weight_decay, self.config.max_grad_norm
        )
        return make_strategy(self.model, optim, self.training, self.config, self.world_size)

    def compute_values(self, batch: pa.Table) -> np.ndarray:
        """Flat float32 values of the trainable tokens of this rank's block of rows
        (`modeling.row_shard`), in table order."""
        seqs = modeling.SequenceBatch(batch)
        rows = modeling.row_shard(len(seqs), self.rank, self.world_size)
        num_passes = None
        if getattr(self.strategy, "stage", None) == 3:  # the same number of passes on every rank
            largest = len(modeling.row_shard(len(seqs), 0, self.world_size))
            num_passes = -(-largest // self.config.micro_batch_size)
        self.model.eval()
        values = modeling.batch_logprobs(
            self.strategy.forward,
            seqs,
            self.config.micro_batch_size,
            self.device,
            self.config.autocast_dtype,
            rows=rows,
            num_passes=num_passes,
            packing=self.config.packing,
            max_tokens=self.config.max_tokens_per_pass,
        )
        modeling.release_memory(self.device, self.config.release_memory)
        return values

    def update(self, batch: pa.Table) -> dict:
        """PPO epochs of clipped value regression onto `returns`; returns metrics of the
        whole batch (every rank returns the same)."""
        t = self.training
        seqs = modeling.SequenceBatch(batch)
        if len(seqs) == 0:
            return {"value_loss": 0.0, "value_clip_frac": 0.0, "critic_grad_norm": 0.0}
        returns = torch.from_numpy(modeling.trainable_values(batch, "returns"))
        old_values = torch.from_numpy(modeling.trainable_values(batch, "old_values"))
        losses, norms = [], []
        clipped = 0.0
        self.model.train()
        for _, mini, n_tok in mini_batches(seqs, t, self.rng):
            self.strategy.zero_grad()
            mini_loss = 0.0
            for mb in self.strategy.micro_batches(seqs, mini, self.config.micro_batch_size, self.device):
                idx, weight = mb.index, mb.weight
                with modeling.autocast(self.device, self.config.autocast_dtype):
                    values = self.strategy.forward(**mb.inputs)
                token_loss, was_clipped = compute_value_loss(
                    values,
                    old_values[idx].to(self.device),
                    returns[idx].to(self.device),
                    self.config.value_clip,
                )
                loss = weight * token_loss.sum() / max(n_tok, 1.0)
                self.strategy.backward(loss, last_micro_batch=mb.last)
                mini_loss += float(loss.detach())
                clipped += weight * float(was_clipped.sum())
            norms.append(self.strategy.step())
            losses.append(mini_loss)
        modeling.release_memory(self.device, self.config.release_memory)
        total = sum_over_ranks([clipped, *losses], self.world_size)
        tokens = seqs.num_tokens * t.ppo_epochs
        return {
            "value_loss": float(np.mean(total[1:])),
            "value_clip_frac": total[0] / max(tokens, 1),
            "critic_grad_norm": float(np.mean(norms)),
        }

    def save(self, path: str) -> str:
        """Save the backbone (Hugging Face format) and the value head (`value_head.pt`);
        rank 0 writes, every rank takes part in the ZeRO-3 gather."""
        with torch.no_grad(), self.strategy.full_parameters():
            if self.rank == 0:
                Path(path).mkdir(parents=True, exist_ok=True)
                self.model.backbone.save_pretrained(path, safe_serialization=True)
                head = {k: v.detach().clone() for k, v in self.model.value_head.state_dict().items()}
                torch.save(head, Path(path) / "value_head.pt")
        return path

    def save_state(self, folder: str) -> str:
        """Model, optimizer and RNG state of this rank into `folder` (every rank)."""
        self.strategy.save_state(folder, modeling.rng_state(self.rng))
        return folder

    def load_state(self, folder: str) -> None:
        """Restore `save_state`'s folder (every rank)."""
        modeling.set_rng_state(self.rng, self.strategy.load_state(folder))

    def flat_parameters(self) -> np.ndarray:
        """Every weight, concatenated in float32 (for checks; a collective under ZeRO-3)."""
        with torch.no_grad(), self.strategy.full_parameters():
            return torch.cat([p.detach().float().flatten().cpu() for p in self.model.parameters()]).numpy()
