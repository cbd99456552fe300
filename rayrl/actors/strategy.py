"""Learner strategies: how gradients become an optimizer step across learner ranks.

Every rank holds the model, computes the loss of its share of each mini-batch with
the mini-batch's global denominators (tokens or sequences of all ranks together),
so the gradient the optimizer needs is the SUM over ranks of the local gradients.

- `TorchStrategy`: plain torch. One rank: clip and step. Several: one flat
  all-reduce (SUM) of the gradients per optimizer step over torch.distributed
  (gloo on CPU, NCCL on GPU), then clip and step; every rank steps identically.
- `DeepSpeedStrategy`: a DeepSpeed engine, ZeRO stage 0, 1, 2 or 3, with the torch
  AdamW as its client optimizer and DeepSpeed doing the clipping. DeepSpeed owns the
  accumulation boundary: every optimizer step takes exactly `micro_batches_per_step`
  micro-batches on every rank (the learner pads with weight-0 passes), which is also
  what ZeRO-3's gradient partitioning needs to accumulate correctly. DeepSpeed divides
  the loss by that count and averages gradients over ranks, so the loss is scaled by
  both to keep SUM semantics.
  Under ZeRO-3 parameters are partitioned: `full_parameters()` gathers them (every
  rank must enter it, since the gather is a collective) before a weight sync or save.

Both expose `forward` (the policy's `token_logprobs`, through the engine when there
is one) and `module` (the Hugging Face model, for saving and weight sync), and run
the same code on CPU and GPU: the process-group backend follows the device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from rayrl.actors.modeling import TokenLogprobs
from rayrl.config import TrainingConfig


def init_distributed(host: str, port: int, rank: int, world_size: int, device: torch.device) -> None:
    """Join the learners' default process group (DeepSpeed reads the same variables)."""
    os.environ.update(
        MASTER_ADDR=host, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0"
    )
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)


class TorchStrategy:
    """Plain torch AdamW, gradients summed over ranks by hand (see the module docstring)."""

    micro_batches_per_step: int | None = None  # any number, as each mini-batch needs

    def __init__(self, model: torch.nn.Module, config: TrainingConfig, world_size: int):
        self.module = model
        self.forward = TokenLogprobs(model)
        self.config = config
        self.world_size = world_size
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self._params = [p for p in model.parameters() if p.requires_grad]

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, last_micro_batch: bool) -> None:
        loss.backward()

    def step(self) -> float:
        """Sum gradients over ranks, clip, step; returns the (global) gradient norm."""
        if self.world_size > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
            flat = torch._utils._flatten_dense_tensors(grads)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for p, g in zip(self._params, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
                p.grad = g
        norm = torch.nn.utils.clip_grad_norm_(self._params, self.config.max_grad_norm)
        self.optimizer.step()
        return float(norm)

    @contextmanager
    def full_parameters(self) -> Iterator[None]:
        yield


class DeepSpeedStrategy:
    """DeepSpeed ZeRO engine around the model (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, config: TrainingConfig, world_size: int):
        import deepspeed

        self.config = config
        self.world_size = world_size
        self.stage = config.zero_stage
        rows_per_rank = -(-config.batch_size // (config.num_mini_batches * world_size))
        self.micro_batches_per_step = max(1, -(-rows_per_rank // config.micro_batch_size))
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        ds_config = {
            # rayrl splits batches itself; these only satisfy DeepSpeed's bookkeeping
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": self.micro_batches_per_step,
            "gradient_clipping": config.max_grad_norm,
            "zero_optimization": {"stage": self.stage},
            "zero_allow_untested_optimizer": True,
            # compute runs under torch autocast (bf16 where the device has it); the
            # engine keeps float32 weights, as the torch strategy does
            "bf16": {"enabled": False},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=TokenLogprobs(model), optimizer=optimizer, config=ds_config, dist_init_required=False
        )
        self.forward = self.engine  # every forward goes through the engine's hooks
        self.module = self.engine.module.model

    def zero_grad(self) -> None:
        self.engine.zero_grad()

    def backward(self, loss: torch.Tensor, last_micro_batch: bool) -> None:
        self.engine.backward(loss * (self.world_size * self.micro_batches_per_step))
        if not last_micro_batch:
            self.engine.step()  # not a boundary: only advances DeepSpeed's micro-step count

    def step(self) -> float:
        if not self.engine.is_gradient_accumulation_boundary():
            raise RuntimeError("DeepSpeed step off its accumulation boundary (micro-batch count mismatch)")
        if self.stage == 0:  # the plain engine reports no norm: take it before the step clips
            grads = [p.grad.detach().float().norm() for p in self.module.parameters() if p.grad is not None]
            norm = float(torch.stack(grads).norm()) if grads else 0.0
            self.engine.step()
            return norm
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    @contextmanager
    def full_parameters(self) -> Iterator[None]:
        """Whole parameters on every rank for the duration (ZeRO-3 gathers; a collective)."""
        if self.stage != 3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
            yield


def make_strategy(model: torch.nn.Module, config: TrainingConfig, world_size: int):
    """The configured strategy around `model` (after `init_distributed` when it needs one)."""
    if config.strategy == "deepspeed":
        return DeepSpeedStrategy(model, config, world_size)
    return TorchStrategy(model, config, world_size)
