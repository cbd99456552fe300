"""Masked reductions and the flat <-> padded token layout the estimators share.

Roles exchange per-token values as flat arrays: the trainable tokens of every row,
row after row. Estimators that walk along a sequence (GAE, discounted returns) work
on a padded (B, L) view of the same values, where row b holds its `counts[b]`
tokens from column 0 and `mask` marks them. Environment turns between two
generated spans are not in either layout: a multi-turn episode's trainable tokens
are one contiguous trajectory here.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` where `mask` is set (0 where nothing is)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8):
    """(x - mean) / std over the masked entries (population std); masked-out entries become 0."""
    mask_f = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean).square(), mask)
    out = (x - mean) if shift_mean else x
    return out * torch.rsqrt(var + eps) * mask_f


def pad_tokens(flat: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat per-token values -> ((B, L) values, (B, L) bool mask), L = max(counts)."""
    counts = torch.as_tensor(counts, dtype=torch.long)
    width = int(counts.max()) if counts.numel() else 0
    mask = torch.arange(width).unsqueeze(0) < counts.unsqueeze(1)
    out = torch.zeros(mask.shape, dtype=flat.dtype)
    out[mask] = flat
    return out, mask


def unpad_tokens(padded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Inverse of `pad_tokens`."""
    return padded[mask]
