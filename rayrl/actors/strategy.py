"""Learner strategies: how gradients become an optimizer step across learner ranks.

Every rank holds the model, computes the loss of its share of each mini-batch with
the mini-batch's global denominators (tokens or sequences of all ranks together),
so the gradient the optimizer needs is the SUM over ranks of the local gradients.

- `TorchStrategy`: plain torch. One rank: clip and step. Several: torch's
  DistributedDataParallel sums the gradients over torch.distributed (gloo on CPU,
  NCCL on GPU) during the step's last backward pass, then clip and step; every rank
  steps identically.
- `DeepSpeedStrategy`: a DeepSpeed engine, ZeRO stage 0, 1, 2 or 3, with the torch
  AdamW as its client optimizer and DeepSpeed doing the clipping. DeepSpeed owns the
  accumulation boundary: every optimizer step takes exactly `micro_batches_per_step`
  micro-batches on every rank (the learner pads with weight-0 passes), which is also
  what ZeRO-3's gradient partitioning needs to accumulate correctly. DeepSpeed divides
  the loss by that count and averages gradients over ranks, so the loss is scaled by
  both to keep SUM semantics.
  Under ZeRO-3 parameters are partitioned: `full_parameters()` gathers them (every
  rank must enter it, since the gather is a collective) before a weight sync or save.

Strategies know nothing of the model they train: a role hands over the module whose
forward it calls (the policy's `TokenLogprobs`, the critic's `ValueModel`) and its
optimizer settings, and calls `strategy.forward` (through the engine when there is
one). The same code runs on CPU and GPU: the process-group backend follows the device.

A role with data-parallel ranks (the actor-learner, the critic) takes its optimizer
steps from `mini_batches`, the micro-batches of each from `strategy.micro_batches`
(this rank's share, padded so ranks stay in step), and sums its metrics with
`sum_over_ranks`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from rayrl.actors.modeling import SequenceBatch
from rayrl.config import CriticConfig, LearnerConfig, TrainingConfig


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW and clipping settings of one trained role."""

    learning_rate: float
    weight_decay: float
    max_grad_norm: float


def rendezvous_address() -> tuple[str, int]:
    """(host, free port) on this actor's node, for a process group whose rank 0 runs here."""
    import ray

    from rayrl.weight_sync import free_port

    host = ray.util.get_node_ip_address()
    return host, free_port(host)


def init_distributed(host: str, port: int, rank: int, world_size: int, device: torch.device) -> None:
    """Join the role's process group as this process's default group (each learner or critic
    rank is its own process; DeepSpeed reads the same variables)."""
    os.environ.update(
        MASTER_ADDR=host, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0"
    )
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)


def mini_batches(
    seqs: SequenceBatch, schedule: TrainingConfig, rng: np.random.Generator
) -> Iterator[tuple[int, np.ndarray, float]]:
    """(epoch, rows, trainable tokens) of every optimizer step of a PPO update:
    `ppo_epochs` passes, each a fresh permutation split into `num_mini_batches`.
    Ranks seeded alike draw the same split; the token count is the mini-batch's global
    loss denominator."""
    for epoch in range(schedule.ppo_epochs):
        order = rng.permutation(len(seqs))
        for mini in np.array_split(order, min(schedule.num_mini_batches, len(seqs))):
            yield epoch, mini, float(seqs.token_counts[mini].sum())


def rank_micro_batches(
    seqs: SequenceBatch,
    rows: np.ndarray,
    micro_batch_size: int,
    rank: int,
    world_size: int,
    fixed_count: int | None = None,
    packing: bool = False,
    max_tokens: int | None = None,
) -> list[tuple[np.ndarray, float]]:
    """This rank's micro-batches of `rows`, as (rows, loss weight).

    Rank r takes every world_size-th row, split by `SequenceBatch.micro_batches`. Ranks
    may end up with different numbers of micro-batches (or none), but ZeRO-3's forward
    and every strategy's gradient reduction are collectives that all ranks must enter
    equally often (and DeepSpeed wants `fixed_count` per step), so a rank with fewer
    pads with weight-0 passes over a row it already has (or any row).
    """
    shares = [rows[r::world_size] for r in range(world_size)]
    splits = [seqs.micro_batches(share, micro_batch_size, packing, max_tokens) for share in shares]
    needed = max(len(split) for split in splits)
    if fixed_count is not None:
        if needed > fixed_count:
            raise ValueError(f"{needed} micro-batches per rank needed, the strategy takes {fixed_count}")
        needed = fixed_count
    micros = [(r, 1.0) for r in splits[rank]]
    filler = shares[rank][:1] if len(shares[rank]) else rows[:1]
    return micros + [(filler, 0.0)] * (needed - len(micros))


@dataclass(frozen=True)
class MicroBatch:
    """One forward/backward pass of an optimizer step, as tensors on the device."""

    inputs: dict[str, torch.Tensor]  # the forward's keyword arguments, padded or packed
    loss_mask: torch.Tensor  # (rows, T): where its trainable tokens are, row by row
    index: torch.Tensor  # positions of its trainable tokens in the batch's flat arrays
    weight: float  # 1, or 0 for a pass that only keeps the ranks in step
    last: bool  # the step's last pass


class _DataParallel:
    """What both strategies share: this rank's micro-batches of a mini-batch."""

    rank: int = 0
    world_size: int = 1
    micro_batches_per_step: int | None = None  # any number, as each mini-batch needs
    packing: bool = False  # passes packed (`SequenceBatch.packed`) instead of padded
    max_tokens: int | None = None  # micro-batches cut by tokens, not rows

    def micro_batches(
        self, seqs: SequenceBatch, rows: np.ndarray, micro_batch_size: int, device: torch.device
    ) -> Iterator[MicroBatch]:
        """This rank's passes over mini-batch `rows` (see `rank_micro_batches`)."""
        micros = rank_micro_batches(
            seqs,
            rows,
            micro_batch_size,
            self.rank,
            self.world_size,
            self.micro_batches_per_step,
            self.packing,
            self.max_tokens,
        )
        for k, (part, weight) in enumerate(micros):
            inputs = seqs.forward_inputs(part, device, self.packing)
            mask = inputs["loss_mask"] if "loss_mask" in inputs else seqs.padded(part, device)[2]
            index = torch.from_numpy(seqs.flat_index(part))
            yield MicroBatch(inputs, mask, index, weight, k == len(micros) - 1)

    def set_learning_rate(self, learning_rate: float) -> None:
        """Use `learning_rate` from the next optimizer step on (e.g. an automatic adjustment)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate


def sum_over_ranks(values: list[float], world_size: int) -> list[float]:
    """Element-wise sum of `values` over the ranks of the default group (float64)."""
    if world_size == 1:
        return list(values)
    local = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(local)
    return local.tolist()


def max_over_ranks(values: list[float], world_size: int) -> list[float]:
    """Element-wise maximum of `values` over the ranks of the default group."""
    if world_size == 1:
        return list(values)
    local = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(local, op=dist.ReduceOp.MAX)
    return local.tolist()


def _sum_hook(state, bucket):  # no annotations: DDP checks them against the real classes
    """DDP communication hook: all-reduce a gradient bucket (dist.GradBucket) as a SUM over ranks."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def adamw(module: torch.nn.Module, optim: OptimizerSettings) -> torch.optim.AdamW:
    """torch's AdamW over `module`'s parameters, fused (one kernel per tensor) where torch
    has that kernel for their device. On CPU torch otherwise takes its per-tensor loop of
    separate operations: a step of the 135M default took 0.25 s that way and 0.05-0.08 s
    fused (2 cores, 2026-12-04), with the same weights to one float32 rounding."""
    devices = {p.device.type for p in module.parameters()}
    return torch.optim.AdamW(
        module.parameters(),
        lr=optim.learning_rate,
        weight_decay=optim.weight_decay,
        fused=devices <= {"cpu", "cuda"} or None,
    )


class TorchStrategy(_DataParallel):
    """Plain torch AdamW; with several ranks, torch's DistributedDataParallel sums the
    gradients (see the module docstring).

    DDP all-reduces bucket by bucket while the backward pass runs; `no_sync` keeps every
    micro-batch but a step's last one local, so an optimizer step costs one reduction.
    Ranks never run unevenly: `rank_micro_batches` pads a short rank with weight-0 passes
    (which ZeRO-3 needs too), so DDP's `Join` has nothing to shadow.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        optim: OptimizerSettings,
        schedule: TrainingConfig,
        role: LearnerConfig | CriticConfig,
        world_size: int,
    ):
        self.rank = dist.get_rank() if world_size > 1 else 0
        self.module = module
        self.forward = module
        self.optim = optim
        self.packing = role.packing
        self.max_tokens = role.max_tokens_per_pass
        self.world_size = world_size
        if world_size > 1:
            # buffers (rotary tables) are constants: no broadcast before every forward
            self.forward = torch.nn.parallel.DistributedDataParallel(module, forward_sync_buffers=False)
            # DDP averages over ranks; the losses are written for the sum (global
            # denominators), so the hook all-reduces without dividing.
            self.forward.register_comm_hook(None, _sum_hook)
        self.optimizer = adamw(module, optim)
        self._params = [p for p in module.parameters() if p.requires_grad]

    def micro_batches(
        self, seqs: SequenceBatch, rows: np.ndarray, micro_batch_size: int, device: torch.device
    ) -> Iterator[MicroBatch]:
        """As `_DataParallel.micro_batches`; the caller's forward and backward of every pass
        but the step's last run inside DDP's `no_sync` (gradients accumulate locally)."""
        for mb in super().micro_batches(seqs, rows, micro_batch_size, device):
            local = self.world_size > 1 and not mb.last
            with self.forward.no_sync() if local else nullcontext():
                yield mb

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, last_micro_batch: bool) -> None:
        loss.backward()

    def step(self) -> float:
        """Clip and step (DDP has summed the gradients over ranks); returns the global
        gradient norm."""
        norm = torch.nn.utils.clip_grad_norm_(self._params, self.optim.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # no gradient memory held between updates
        return float(norm)

    @contextmanager
    def full_parameters(self) -> Iterator[None]:
        yield

    def save_state(self, folder: str, extra: dict[str, Any]) -> None:
        """This rank's module, optimizer and `extra` as `folder/rank{r}.pt`."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        state = {"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), "extra": extra}
        torch.save(state, Path(folder) / f"rank{self.rank}.pt")

    def load_state(self, folder: str) -> dict[str, Any]:
        """Restore what `save_state` wrote; returns its `extra`."""
        path = Path(folder) / f"rank{self.rank}.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no training state for rank {self.rank} (saved with fewer ranks?)"
            )
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        return state["extra"]


class DeepSpeedStrategy(_DataParallel):
    """DeepSpeed ZeRO engine around the model (see the module docstring)."""

    def __init__(
        self,
        module: torch.nn.Module,
        optim: OptimizerSettings,
        schedule: TrainingConfig,
        role: LearnerConfig | CriticConfig,
        world_size: int,
    ):
        import deepspeed

        if not torch.cuda.is_available():
            # On its CPU accelerator DeepSpeed JIT-compiles a shared-memory all-reduce kernel
            # whenever its communication backend starts: ~45 s of a 2-core machine on first
            # use, and again whenever the environment's path changes. Only its tensor-parallel
            # inference calls that kernel; ZeRO training goes through torch.distributed.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        self.rank = dist.get_rank()  # DeepSpeed always runs in a process group
        self.world_size = world_size
        self.packing = role.packing
        self.stage = role.zero_stage
        if role.max_tokens_per_pass is not None:
            raise ValueError(
                "max_tokens_per_pass needs the torch strategy: DeepSpeed fixes the passes per step"
            )
        rows_per_rank = -(-schedule.batch_size // (schedule.num_mini_batches * world_size))
        self.micro_batches_per_step = max(1, -(-rows_per_rank // role.micro_batch_size))
        optimizer = adamw(module, optim)
        ds_config = {
            # rayrl splits batches itself; these only satisfy DeepSpeed's bookkeeping
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": self.micro_batches_per_step,
            "gradient_clipping": optim.max_grad_norm,
            "zero_optimization": {"stage": self.stage},
            "zero_allow_untested_optimizer": True,
            # compute runs under torch autocast (bf16 where the device has it); the
            # engine keeps float32 weights, as the torch strategy does
            "bf16": {"enabled": False},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=module, optimizer=optimizer, config=ds_config, dist_init_required=False
        )
        self.forward = self.engine  # every forward goes through the engine's hooks
        self.module = module

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

    def save_state(self, folder: str, extra: dict[str, Any]) -> None:
        """DeepSpeed's own checkpoint (every rank writes its partitions; a collective), with
        this rank's `extra` as client state."""
        self.engine.save_checkpoint(
            str(Path(folder) / "deepspeed"), tag="state", client_state={"extra": extra}
        )

    def load_state(self, folder: str) -> dict[str, Any]:
        """Restore what `save_state` wrote (a collective); returns this rank's `extra`."""
        path, client = self.engine.load_checkpoint(str(Path(folder) / "deepspeed"), tag="state")
        if path is None:
            raise FileNotFoundError(f"{folder}: no DeepSpeed checkpoint")
        return client["extra"]


def make_strategy(
    module: torch.nn.Module,
    optim: OptimizerSettings,
    schedule: TrainingConfig,
    role: LearnerConfig | CriticConfig,
    world_size: int,
):
    """The strategy `role.strategy` names, training `module` (after `init_distributed`
    when it needs one).

    Args:
        module: what the role's forward calls; its parameters are trained.
        optim: the role's optimizer settings.
        schedule: the `training` section (batch size, mini-batches).
        role: the role's section (strategy, ZeRO stage, micro-batch size).
        world_size: data-parallel ranks of the role.
    """
    if role.strategy == "deepspeed":
        return DeepSpeedStrategy(module, optim, schedule, role, world_size)
    return TorchStrategy(module, optim, schedule, role, world_size)
