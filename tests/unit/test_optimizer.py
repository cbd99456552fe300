"""The trained roles' AdamW (`strategy.adamw`) against the update rule written out in float64."""

import numpy as np
import pytest
import torch

from rayrl.actors.strategy import OptimizerSettings, adamw


def adamw_by_hand(p, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_adamw_follows_the_update_rule_and_is_fused_on_cpu(dtype, tol):
    torch.manual_seed(0)
    module = torch.nn.Linear(7, 5).to(dtype)
    start = {n: p.detach().double().numpy().copy() for n, p in module.named_parameters()}
    grads = {n: [np.random.default_rng(i).normal(size=p.shape) for i in range(4)] for n, p in start.items()}
    optimizer = adamw(module, OptimizerSettings(learning_rate=1e-2, weight_decay=0.1, max_grad_norm=1.0))
    assert optimizer.defaults["fused"]  # torch's per-tensor loop is ~4x slower on CPU
    for step in range(4):
        for n, p in module.named_parameters():
            p.grad = torch.from_numpy(grads[n][step]).to(dtype)
        optimizer.step()
    for n, p in module.named_parameters():
        expected = adamw_by_hand(start[n], grads[n], lr=1e-2, wd=0.1)
        np.testing.assert_allclose(p.detach().double().numpy(), expected, rtol=tol, atol=tol)
        assert not np.allclose(expected, start[n])  # the steps moved it
