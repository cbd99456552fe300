"""Policy-gradient losses: PPO's clipped surrogate (clip-higher, dual-clip), GSPO's
sequence-level ratio, CISPO's clipped importance weight; the clipped value loss, entropy and
aggregation."""

from __future__ import annotations

from typing import Literal

import torch

LossAggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
PolicyLoss = Literal["ppo", "gspo", "cispo", "rwr"]
RolloutCorrection = Literal["none", "truncate", "mask"]


def aggregate_loss(
    loss: torch.Tensor,
    mask: torch.Tensor,
    mode: LossAggMode = "token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar over the tokens where `mask` is 1.

    Args:
        loss: per-token loss, shape (B, T).
        mask: 1 for trainable tokens, 0 elsewhere, shape (B, T).
        mode: "token-mean" (every token of the batch weighs the same),
            "seq-mean-token-mean" (mean per sequence, then mean over sequences),
            "seq-mean-token-sum" (sum per sequence, then mean over sequences).
        num_tokens / num_seqs: global denominators when the batch is split into
            micro-batches, so that accumulated gradients equal the full-batch ones.
            Default: this micro-batch's own count.
    """
    mask = mask.to(loss.dtype)
    if mode == "token-mean":
        denom = mask.sum() if num_tokens is None else num_tokens
        return (loss * mask).sum() / max(float(denom), 1.0)
    per_seq = (loss * mask).sum(dim=-1)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / mask.sum(dim=-1).clamp(min=1.0)
    elif mode != "seq-mean-token-sum":
        raise ValueError(f"unknown loss aggregation {mode!r}")
    denom = loss.shape[0] if num_seqs is None else num_seqs
    return per_seq.sum() / max(float(denom), 1.0)


def compute_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_ratio_c: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO clipped surrogate loss.

    loss = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A),
    ratio = exp(logprobs - old_logprobs). With dual-clip (Ye et al. 2020), a token
    with A < 0 also has its loss capped at -clip_ratio_c * A, so one huge ratio on a
    bad token cannot dominate the batch.

    Args:
        logprobs: current policy log-probabilities of sampled tokens, (B, T).
        old_logprobs: log-probabilities under the policy that sampled, (B, T).
        advantages: per-token advantages, (B, T) (or broadcastable).
        clip_low / clip_high: lower and upper clip ranges (equal for classic PPO;
            clip_high > clip_low is DAPO's clip-higher).
        clip_ratio_c: dual-clip bound (> 1), None to disable.

    Returns:
        (per-token loss, per-token 0/1 float showing where either clip bound the loss).
    """
    if clip_ratio_c is not None and clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1, got {clip_ratio_c}")
    log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    was_clipped = clipped > unclipped
    if clip_ratio_c is not None:
        cap = -advantages * clip_ratio_c
        dual = (advantages < 0) & (loss > cap)
        loss = torch.where(dual, cap, loss)
        was_clipped = was_clipped | dual
    return loss, was_clipped.to(logprobs.dtype)


def compute_gspo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    seq_ids: torch.Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token GSPO loss (Zheng et al. 2025, the GSPO-token form): PPO's clipped surrogate
    on the sequence's importance ratio s = exp(mean over its tokens of log(pi / pi_old)).

    Each token's ratio has the value of its sequence's s and the gradient
    s * grad log pi(token), so with sequence-level advantages and "seq-mean-token-mean"
    aggregation the gradient is GSPO's sequence objective's. Its clip ranges are
    small (the paper: 3e-4 / 4e-4), since a sequence ratio moves far less than a token's.

    Args:
        logprobs / old_logprobs / advantages: per trainable token, flat (N,).
        seq_ids: the sequence each token belongs to, (N,) integers.
        clip_low / clip_high: clip range of the sequence ratio.

    Returns:
        (per-token loss, per-token 0/1 float: where the clip bound the loss).
    """
    log_ratio = (logprobs - old_logprobs).detach()
    count = torch.zeros(
        int(seq_ids.max()) + 1 if seq_ids.numel() else 0, dtype=log_ratio.dtype, device=log_ratio.device
    )
    total = count.clone().index_add_(0, seq_ids, log_ratio)
    count.index_add_(0, seq_ids, torch.ones_like(log_ratio))
    seq_log_ratio = (total / count.clamp(min=1.0))[seq_ids].clamp(-20.0, 20.0)
    ratio = torch.exp(seq_log_ratio + logprobs - logprobs.detach())
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).to(logprobs.dtype)


def compute_cispo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token CISPO loss (MiniMax-M1, 2025): -sg(clip(ratio, 1 - clip_low, 1 + clip_high))
    * A * log pi. The importance weight is clipped and carries no gradient, so, unlike PPO's
    clip, no token drops out of the gradient: a clipped token still gets a bounded update.

    Returns:
        (per-token loss, per-token 0/1 float: where the weight was clipped).
    """
    ratio = torch.exp((logprobs - old_logprobs).detach().clamp(-20.0, 20.0))
    weight = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    return -weight * advantages * logprobs, (weight != ratio).to(logprobs.dtype)


def rollout_correction(
    logprobs: torch.Tensor,
    rollout_logprobs: torch.Tensor,
    mode: RolloutCorrection = "truncate",
    cap: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token importance weights that correct for sampling by another policy than the
    one the loss is taken under: the engines' (behaviour, `rollout_logprobs`: a stale
    weight version, or the same weights in another numerics) against the learner's
    (`logprobs`, the PPO proximal policy).

    w = exp(logprobs - rollout_logprobs), no gradient. "truncate" (TIS): min(w, cap);
    "mask" (MIS): w, and 0 for tokens with w > cap (they leave the loss); "none": 1.
    Multiply each token's policy loss by its weight.

    Returns:
        (weights, 0/1 float: where w > cap), both shaped like `logprobs`.
    """
    if cap <= 1.0:
        raise ValueError(f"cap must be > 1, got {cap}")
    w = torch.exp((logprobs.detach() - rollout_logprobs).clamp(-20.0, 20.0))
    beyond = w > cap
    if mode == "none":
        weights = torch.ones_like(w)
    elif mode == "truncate":
        weights = w.clamp(max=cap)
    elif mode == "mask":
        weights = torch.where(beyond, torch.zeros_like(w), w)
    else:
        raise ValueError(f"unknown rollout correction {mode!r}")
    return weights, beyond.to(w.dtype)


def compute_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_range: float | None = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped value loss: 0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2).

    Args:
        values: the critic's current predictions, (B, T).
        old_values: its predictions when the batch was scored, (B, T).
        returns: targets, (B, T).
        clip_range: eps; None for the plain squared error.

    Returns:
        (per-token loss, per-token 0/1 float showing where the clipped term was larger).
        Only a value that left the clip range counts: where nothing was clamped the two
        terms differ by rounding alone (old + (V - old) is not always V).
    """
    plain = (values - returns).square()
    if clip_range is None:
        return 0.5 * plain, torch.zeros_like(plain)
    delta = values - old_values
    clipped_values = old_values + delta.clamp(-clip_range, clip_range)
    clipped = (clipped_values - returns).square()
    active = (delta.abs() > clip_range) & (clipped > plain)
    return 0.5 * torch.maximum(plain, clipped), active.to(values.dtype)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution given by `logits` (last dim), differentiable."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
