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
from rayrl.algorithms import compute_value_loss
from rayrl.config import CriticConfig, TrainingConfig


class ValueModel(torch.nn.Module):
    """Decoder of a causal LM with a linear value head on its last hidden state."""

    def __init__(self, model_path: str):
        super().__init__()
        lm = modeling.load_causal_lm(model_path, torch.device("cpu"), trainable=True)
        self.backbone = lm.get_decoder()
        hidden = lm.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1))
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, loss_mask) -> torch.Tensor:
        """Values of the tokens where `loss_mask` is set, flattened row by row."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        h = hidden[:, :-1][loss_mask[:, 1:]]
        return self.value_head(h).squeeze(-1).float()


class Critic:
    """Plain class; `rayrl.placement` wraps it as a Ray actor.

    Args:
        model_path: local Hugging Face folder of the backbone.
        training: the `training` section (micro-batches, PPO epochs, autocast, threads).
        config: the `critic` section.
    """

    def __init__(self, model_path: str, training: TrainingConfig, config: CriticConfig):
        self.training = training
        self.config = config
        modeling.set_threads(training.num_threads)
        torch.manual_seed(training.seed)
        self.device = modeling.pick_device()
        self.model = ValueModel(model_path).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate)
        self.rng = np.random.default_rng(training.seed + 1)

    @torch.no_grad()
    def compute_values(self, batch: pa.Table) -> np.ndarray:
        """Flat float32 values of the batch's trainable tokens, in table order."""
        seqs = modeling.SequenceBatch(batch)
        out = np.zeros(seqs.num_tokens, dtype=np.float32)
        self.model.eval()
        for rows in seqs.micro_batches(np.arange(len(seqs)), self.training.micro_batch_size):
            ids, attn, mask = seqs.padded(rows, self.device)
            with modeling.autocast(self.device, self.training.autocast_dtype):
                values = self.model(ids, attn, mask)
            out[seqs.flat_index(rows)] = values.float().cpu().numpy()
        return out

    def update(self, batch: pa.Table) -> dict:
        """PPO epochs of clipped value regression onto `returns`; returns metrics."""
        t = self.training
        seqs = modeling.SequenceBatch(batch)
        if len(seqs) == 0:
            return {"value_loss": 0.0, "value_clip_frac": 0.0, "critic_grad_norm": 0.0}
        returns = torch.from_numpy(modeling.trainable_values(batch, "returns"))
        old_values = torch.from_numpy(modeling.trainable_values(batch, "old_values"))
        losses, clip_fracs, norms = [], [], []
        self.model.train()
        for _ in range(t.ppo_epochs):
            order = self.rng.permutation(len(seqs))
            for mini in np.array_split(order, min(t.num_mini_batches, len(seqs))):
                n_tok = float(seqs.token_counts[mini].sum())
                self.optimizer.zero_grad(set_to_none=True)
                mini_loss, clipped = 0.0, 0.0
                for rows in seqs.micro_batches(mini, t.micro_batch_size):
                    ids, attn, mask = seqs.padded(rows, self.device)
                    idx = torch.from_numpy(seqs.flat_index(rows))
                    with modeling.autocast(self.device, t.autocast_dtype):
                        values = self.model(ids, attn, mask)
                    token_loss, was_clipped = compute_value_loss(
                        values,
                        old_values[idx].to(self.device),
                        returns[idx].to(self.device),
                        self.config.value_clip,
                    )
                    loss = token_loss.sum() / max(n_tok, 1.0)
                    loss.backward()
                    mini_loss += float(loss.detach())
                    clipped += float(was_clipped.sum())
                norms.append(
                    float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm))
                )
                self.optimizer.step()
                losses.append(mini_loss)
                clip_fracs.append(clipped / max(n_tok, 1.0))
        return {
            "value_loss": float(np.mean(losses)),
            "value_clip_frac": float(np.mean(clip_fracs)),
            "critic_grad_norm": float(np.mean(norms)),
        }

    def save(self, path: str) -> str:
        """Save the backbone (Hugging Face format) and the value head (`value_head.pt`)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        self.model.backbone.save_pretrained(path, safe_serialization=True)
        torch.save(self.model.value_head.state_dict(), Path(path) / "value_head.pt")
        return path
