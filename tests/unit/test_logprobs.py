"""Chunked log-probs of sampled tokens against a plain full-vocabulary log-softmax."""

import pytest
import torch

from rayrl.actors import logprobs
from rayrl.actors.logprobs import sampled_logprobs


def plain(logits, targets):
    logp_all = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
    return logp, -(logp_all.exp() * logp_all).sum(-1)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 rows, so that 10 rows end in a partial chunk."""
    monkeypatch.setattr(logprobs, "CHUNK_BYTES", 3 * 4 * 50)


def case(dtype, n=10, vocab=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, vocab, generator=gen, dtype=torch.float64) * 3).to(dtype)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    w_lp = torch.randn(n, generator=gen, dtype=torch.float64)
    w_ent = torch.randn(n, generator=gen, dtype=torch.float64)
    return logits, targets, w_lp, w_ent


@pytest.mark.parametrize("entropy_grad", [False, True])
def test_values_and_gradients_equal_a_full_log_softmax_in_float64(small_chunks, entropy_grad):
    assert logprobs.chunk_rows(50, torch.device("cpu")) == 3
    logits, targets, w_lp, w_ent = case(torch.float64)
    a = logits.clone().requires_grad_()
    lp, ent = sampled_logprobs(a * 1.0, targets, with_entropy=True, entropy_grad=entropy_grad)
    loss = (lp * w_lp).sum() + ((ent * w_ent).sum() if entropy_grad else 0.0)
    loss.backward()
    b = logits.clone().requires_grad_()
    lp0, ent0 = plain(b, targets)
    ((lp0 * w_lp).sum() + ((ent0 * w_ent).sum() if entropy_grad else 0.0)).backward()
    torch.testing.assert_close(lp, lp0, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)
    assert ent.requires_grad == entropy_grad


def test_half_precision_logits_are_normalised_in_float32(small_chunks):
    logits, targets, w_lp, _ = case(torch.bfloat16)
    a = logits.clone().requires_grad_()
    lp, ent = sampled_logprobs(a * 1.0, targets, with_entropy=True)
    (lp * w_lp.float()).sum().backward()
    assert lp.dtype == ent.dtype == torch.float32 and a.grad.dtype == torch.bfloat16
    b = logits.clone().requires_grad_()
    lp0, ent0 = plain(b, targets)
    (lp0 * w_lp.float()).sum().backward()
    torch.testing.assert_close(lp, lp0, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-5)
    # both round the same float32 gradient to bfloat16
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def test_without_entropy_and_without_grad(small_chunks):
    logits, targets, _, _ = case(torch.float32)
    with torch.no_grad():
        lp, ent = sampled_logprobs(logits, targets)
    assert ent is None
    torch.testing.assert_close(lp, plain(logits, targets)[0], rtol=0, atol=1e-5)
    assert torch.equal(logits, case(torch.float32)[0])  # a forward leaves them alone


def test_a_second_backward_is_refused():
    logits, targets, _, _ = case(torch.float32)
    z = logits.clone().requires_grad_()
    lp, _ = sampled_logprobs(z * 2.0, targets)
    lp.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        lp.sum().backward()
