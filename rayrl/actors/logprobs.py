"""Log-probs (and entropy) of sampled tokens from their logits, a few rows at a time.

`torch.log_softmax(logits.float())` followed by a gather materialises a float32 copy of
the whole vocabulary for every scored token, plus one more in its backward: SmolLM2's
49k vocabulary makes that 0.2 GB per 1,000 tokens, each pass over it a trip through
memory. Here the normaliser, the picked log-prob and the entropy are computed a chunk
of rows at a time, while the chunk is in cache, and the backward writes the gradient
into the logits' own storage, chunk by chunk, so no full-vocabulary tensor is made
beyond the logits themselves. The projection to the vocabulary stays one call of the
model's output layer, so adapters and parameter-gathering hooks on it work as before.
"""

from __future__ import annotations

import torch

CHUNK_BYTES = 8 << 20
"""Float32 bytes of one chunk of rows on a CPU: a few MiB, to stay in its cache."""
DEVICE_CHUNK_BYTES = 512 << 20
"""The same on an accelerator, where a chunk costs kernel launches rather than cache misses."""


def chunk_rows(vocab_size: int, device: torch.device) -> int:
    """Rows per chunk for a vocabulary of `vocab_size` on `device`."""
    budget = CHUNK_BYTES if device.type == "cpu" else DEVICE_CHUNK_BYTES
    return max(1, budget // (4 * vocab_size))


class _SampledLogprobs(torch.autograd.Function):
    """(log p(target), entropy) per row of `logits`; the backward reuses `logits`' storage."""

    @staticmethod
    def forward(ctx, logits, targets, with_entropy, entropy_grad):
        n = logits.shape[0]
        rows = chunk_rows(logits.shape[-1], logits.device)
        dtype = torch.promote_types(logits.dtype, torch.float32)
        lse = torch.empty(n, dtype=dtype, device=logits.device)
        logp = torch.empty_like(lse)
        entropy = torch.empty_like(lse) if with_entropy else lse.new_empty(0)
        for s in range(0, n, rows):
            rs = slice(s, s + rows)
            z = logits[rs].to(dtype)
            norm = torch.logsumexp(z, dim=-1)
            lse[rs] = norm
            logp[rs] = z.gather(-1, targets[rs, None]).squeeze(-1) - norm
            if with_entropy:
                p = (z - norm[:, None]).exp_()
                entropy[rs] = norm - (p * z).sum(-1)
        ctx.save_for_backward(logits, targets, lse, entropy if entropy_grad else None)
        ctx.set_materialize_grads(False)
        ctx.spent = False
        if not entropy_grad:
            ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        if ctx.spent:
            raise RuntimeError("sampled_logprobs: the backward reuses the logits' storage, so it runs once")
        ctx.spent = True
        logits, targets, lse, entropy = ctx.saved_tensors
        if grad_logp is None and grad_entropy is None:
            return None, None, None, None
        n = logits.shape[0]
        rows = chunk_rows(logits.shape[-1], logits.device)
        g_lp = lse.new_zeros(n) if grad_logp is None else grad_logp.to(lse.dtype)
        for s in range(0, n, rows):
            rs = slice(s, s + rows)
            out = logits[rs]
            z = out.to(lse.dtype)  # the chunk itself unless the logits are half precision
            g = g_lp[rs, None]
            # d log p_t / dz = onehot_t - p;  d H / dz = -p * (log p + H)
            if grad_entropy is not None and entropy is not None:
                logp_all = z - lse[rs, None]
                g_h = grad_entropy[rs, None].to(lse.dtype)
                z = logp_all.exp().mul_(logp_all.add_(entropy[rs, None]).mul_(g_h).add_(g)).neg_()
            else:
                z = z.sub_(lse[rs, None]).exp_().mul_(g.neg())
            z.scatter_add_(-1, targets[rs, None], g)
            if z.data_ptr() != out.data_ptr():
                out.copy_(z)
        return logits, None, None, None


def sampled_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool = False, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of `targets` (N,) under `logits` (N, V), and optionally the entropy, in
    float32 (float64 for float64 logits).

    Equal to `log_softmax(logits.float()).gather(targets)` and its entropy, in values and
    gradients. `logits` must not be used after the backward (it holds the gradient then);
    pass a tensor made for this call, as `modeling.token_logprobs` does.

    Args:
        with_entropy: also return each row's entropy.
        entropy_grad: keep the entropy differentiable (an entropy bonus); else it is a
            plain value for metrics.
    """
    logp, entropy = _SampledLogprobs.apply(logits, targets, with_entropy, entropy_grad and with_entropy)
    return logp, entropy if with_entropy else None
