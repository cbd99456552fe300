"""Scoring stage: rewards, KL-in-reward, group filtering and advantages for one batch.

Runs in a small Ray actor (`Scorer`) between rollout and update. It reads the rollout table and
the per-token arrays the reference and critic produced, and returns the table the
learner and the critic train on: filtered rows plus per-token columns aligned with
`input_ids` (`advantages`, `returns`, `old_values`, `ref_logprobs`). The episode's
reward sits on its last generated token; with `kl_mode: reward` every generated
token also pays kl_coef * KL(policy || reference), where the policy's log-probs are
the sampling engine's (the policy that produced the batch).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from rayrl.actors.modeling import SequenceBatch, trainable_values, with_token_columns
from rayrl.algorithms import (
    AdvantageInputs,
    apply_kl_to_rewards,
    compute_advantages,
    informative_groups,
    normalize_rewards,
    pad_tokens,
    unpad_tokens,
)
from rayrl.config import TrainingConfig


def score_batch(
    batch: pa.Table,
    ref_logprobs: np.ndarray | None,
    values: np.ndarray | None,
    config: TrainingConfig,
    kl_coef: float | None = None,
) -> tuple[pa.Table, dict]:
    """Advantages for `batch`; returns (training table, metrics).

    Args:
        batch: rollout table (`input_ids`, `loss_mask`, `rollout_logprobs`, `reward`, `group`).
        ref_logprobs: flat reference log-probs of the trainable tokens, or None.
        values: flat critic values of the trainable tokens, or None.
        config: the `training` section.
        kl_coef: the current KL coefficient (adaptive control), default `config.kl_coef`.
    """
    kl_coef = config.kl_coef if kl_coef is None else kl_coef
    seqs = SequenceBatch(batch)
    counts = torch.from_numpy(seqs.token_counts)
    rewards = torch.tensor(batch.column("reward").to_pylist(), dtype=torch.float64)
    groups = torch.tensor(batch.column("group").to_pylist(), dtype=torch.long)
    if config.reward_norm and len(rewards):
        rewards = normalize_rewards(rewards)

    # the episode's reward on its last generated token, each turn's own reward (IMMEDIATE
    # rewards) on the last token of that turn
    token_rewards = torch.zeros(seqs.num_tokens, dtype=torch.float64)
    last = torch.from_numpy(seqs.token_offsets[1:] - 1)
    token_rewards[last] = rewards
    totals = rewards.clone()
    if "turn_rewards" in batch.column_names:
        for row, per_turn in enumerate(batch.column("turn_rewards").to_pylist()):
            if per_turn:
                ends = seqs.span_ends(row)[: len(per_turn)]
                turn = torch.tensor(per_turn[: len(ends)], dtype=torch.float64)
                token_rewards[torch.from_numpy(ends)] += turn
                totals[row] += turn.sum()
    token_rewards, mask = pad_tokens(token_rewards, counts)

    metrics: dict[str, float] = {}
    if config.kl_mode == "reward" and ref_logprobs is not None:
        policy, _ = pad_tokens(torch.from_numpy(trainable_values(batch, "rollout_logprobs")).double(), counts)
        ref, _ = pad_tokens(torch.tensor(np.asarray(ref_logprobs), dtype=torch.float64), counts)
        token_rewards, kl = apply_kl_to_rewards(
            token_rewards, policy, ref, mask, kl_coef, config.kl_estimator
        )
        metrics["kl_reward"] = float(kl.sum() / mask.sum().clamp(min=1))
    padded_values = None
    if values is not None:
        padded_values, _ = pad_tokens(torch.tensor(np.asarray(values), dtype=torch.float64), counts)

    inputs = AdvantageInputs(token_rewards, mask, groups, padded_values, config.gamma, config.lam)
    advantages, returns = compute_advantages(config.adv_estimator, inputs)

    columns = {
        "advantages": unpad_tokens(advantages, mask).numpy(),
        "returns": unpad_tokens(returns, mask).numpy(),
    }
    if values is not None:
        columns["old_values"] = np.asarray(values)
    if ref_logprobs is not None:
        columns["ref_logprobs"] = np.asarray(ref_logprobs)
    table = with_token_columns(batch, columns)

    keep = (
        informative_groups(totals, groups) if config.filter_groups else torch.ones(len(rewards), dtype=bool)
    )
    if not bool(keep.all()):
        table = table.filter(pa.array(keep.numpy()))
    adv_kept = unpad_tokens(advantages, mask & keep.unsqueeze(1))
    metrics.update(
        advantage_mean=float(adv_kept.mean()) if adv_kept.numel() else 0.0,
        advantage_std=float(adv_kept.std()) if adv_kept.numel() > 1 else 0.0,
        kept_episodes=int(keep.sum()),
        filtered_episodes=int((~keep).sum()),
    )
    if values is not None:
        ret = unpad_tokens(returns, mask)
        val = torch.tensor(np.asarray(values), dtype=torch.float64)
        var = ret.var() if ret.numel() > 1 else torch.tensor(0.0)
        metrics["value_explained_var"] = float(1 - (ret - val).var() / var) if var > 0 else 0.0
    return table, metrics


class Scorer:
    """Plain class wrapped as a CPU-less Ray actor: `score_batch` in a process that stays
    up (as a Ray task it paid a fresh worker's torch import, ~1.5 s, on every step).

    The reference and critic groups hand over one object reference per rank (each
    rank's block of rows, in rank order), joined here into the batch's flat arrays.
    """

    def score(
        self,
        batch: pa.Table,
        ref_parts: list | None,
        value_parts: list | None,
        config: TrainingConfig,
        kl_coef: float | None = None,
    ):
        return score_batch(batch, _join(ref_parts), _join(value_parts), config, kl_coef)


def _join(parts: list | None) -> np.ndarray | None:
    """Concatenate per-rank flat arrays (object references are fetched)."""
    if not parts:
        return None
    import ray

    arrays = [ray.get(p) if isinstance(p, ray.ObjectRef) else p for p in parts]
    return np.concatenate(arrays)
