"""Actor-learner role: owns the trainable policy, its optimizer, and the weight broadcast.

float32 master weights with bf16 autocast; the update is the PPO clipped objective
(clip-higher, dual-clip) with an optional KL loss against the reference and an
entropy bonus, aggregated over the trainable tokens of each mini-batch with its
global denominators, with gradient accumulation over micro-batches.

The role is a group of `learner.num_ranks` data-parallel ranks, each a Ray
actor; each rank trains on its share of every mini-batch and the strategy
(`rayrl.actors.strategy`: torch or DeepSpeed ZeRO) sums gradients over ranks, so
every rank takes the step one rank would take on the whole mini-batch. Rank 0 is
also rank 0 of the weight-sync group. Methods that touch the model collectively
(`join_group`, `update`, `broadcast_weights`, `save`) are called on every rank.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rayrl import weight_sync
from rayrl.actors import modeling
from rayrl.actors.strategy import (
    OptimizerSettings,
    init_distributed,
    make_strategy,
    max_over_ranks,
    mini_batches,
    rendezvous_address,
    sum_over_ranks,
)
from rayrl.algorithms import (
    aggregate_loss,
    compute_cispo_loss,
    compute_gspo_loss,
    compute_policy_loss,
    compute_rwr_loss,
    kl_penalty,
    rollout_correction,
)
from rayrl.config import LearnerConfig, TrainingConfig
from rayrl.hardware import resolve_dtype

# Per-token metrics summed over the batch's trainable tokens (then divided by their count).
_SUMMED = (
    "policy_loss",
    "kl",
    "clip_frac",
    "entropy",
    "logprob_gap",
    "is_weight_mean",
    "is_beyond_cap",
    "mismatch_kl",
)


class ActorLearner:
    """Plain class; `rayrl.placement` wraps it as a Ray actor.

    Args:
        model_path: local Hugging Face folder of the initial policy.
        training: the `training` section (algorithm, learning rate, batch schedule, seed).
        config: the `learner` section (ranks, strategy, micro-batches, LoRA, compute).
        sync_dtype: dtype the inference engines hold weights in (sent on the wire).
    """

    def __init__(
        self,
        model_path: str,
        training: TrainingConfig,
        config: LearnerConfig,
        sync_dtype: str = "bfloat16",
        rank: int = 0,
        world_size: int = 1,
    ):
        self.training = training
        self.config = config
        self.model_path = model_path
        self.rank, self.world_size = rank, world_size
        modeling.set_threads(config.num_threads or max(1, (os.cpu_count() or 1) // world_size))
        torch.manual_seed(training.seed)
        self.device = modeling.pick_device()
        self.model = modeling.load_causal_lm(
            model_path,
            self.device,
            trainable=True,
            gradient_checkpointing=config.gradient_checkpointing,
            attention=config.attention,
        )
        # taken now: names of the full model (before LoRA wraps it), and shapes that
        # ZeRO-3 hides once it partitions the parameters in join_group
        self._spec = [
            weight_sync.TensorSpec(name, tuple(p.shape), resolve_dtype(sync_dtype, self.device.type))
            for name, p in self.model.named_parameters()
        ]
        self.lora = config.lora_rank > 0
        if self.lora:
            self.model = _with_lora(self.model, config)
            self._spec = _adapted_blocks(self._spec, self.model)
        self.strategy = None
        if config.strategy == "torch" and world_size == 1:
            self.strategy = self._make_strategy()
        self.sync_dtype = resolve_dtype(sync_dtype, self.device.type)
        self.rng = np.random.default_rng(training.seed)
        self.version = 0
        self._group = None
        self._shared = None  # weight_sync.SharedBuckets, where the engines map them
        # the weight-sync buckets, refilled each sync: on CPU a fresh buffer's page faults
        # cost as much as filling it (on GPU the caching allocator already reuses memory)
        self._sync_buffers: dict | None = {} if self.device.type == "cpu" else None

    def join_group(self, host: str, port: int) -> str:
        """Join the learner group at rank 0's (host, port) and build the strategy (all ranks)."""
        if self.strategy is None:
            init_distributed(host, port, self.rank, self.world_size, self.device)
            self.strategy = self._make_strategy()
        return type(self.strategy).__name__

    def _make_strategy(self):
        c = self.config
        optim = OptimizerSettings(self.training.learning_rate, c.weight_decay, c.max_grad_norm)
        return make_strategy(modeling.TokenLogprobs(self.model), optim, self.training, c, self.world_size)

    def set_learning_rate(self, learning_rate: float) -> float:
        """Change the optimizer's learning rate from the next step on; returns the rate the
        optimizer now holds."""
        self.strategy.set_learning_rate(learning_rate)
        return float(self.strategy.optimizer.param_groups[0]["lr"])

    # ---- training --------------------------------------------------------
    def policy_loss(self, lp, old, advantages, loss_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token policy loss and clip flags of `training.policy_loss` over a micro-batch's
        trainable tokens (flat, in row order of `loss_mask`)."""
        cfg = self.training
        if cfg.policy_loss == "gspo":
            seq_ids = loss_mask[:, 1:].nonzero()[:, 0]  # the row of each trainable token
            return compute_gspo_loss(lp, old, advantages, seq_ids, cfg.clip_ratio_low, cfg.clip_ratio_high)
        if cfg.policy_loss == "cispo":
            return compute_cispo_loss(lp, old, advantages, cfg.clip_ratio_low, cfg.clip_ratio_high)
        if cfg.policy_loss == "rwr":
            return compute_rwr_loss(lp, advantages)
        return compute_policy_loss(
            lp, old, advantages, cfg.clip_ratio_low, cfg.clip_ratio_high, cfg.clip_ratio_c
        )

    def update(self, batch: pa.Table, kl_coef: float | None = None, own_reference: bool = False) -> dict:
        """One PPO update on a scored batch (see `rayrl.actors.scoring`).

        Args:
            batch: table with `input_ids`, `loss_mask`, `rollout_logprobs`, `advantages`,
                and `ref_logprobs` when the KL is a loss term.
            kl_coef: current KL coefficient (adaptive control); default `training.kl_coef`.
            own_reference: the policy still is the reference (not updated yet, one
                optimizer step in this update): the KL loss term takes the learner's own
                log-probs, detached, as the reference's (value 0, and the estimator's
                gradient there), and the batch needs no `ref_logprobs`.

        Returns:
            metrics (seed names): total_loss, policy_loss, kl, clip_frac, entropy, grad_norm, and the mean
            absolute gap between the engine's and the learner's log-probs.
        """
        cfg, role = self.training, self.config
        kl_coef = cfg.kl_coef if kl_coef is None else kl_coef
        seqs = modeling.SequenceBatch(batch)
        zero = dict.fromkeys((*_SUMMED, "total_loss"), 0.0)
        if len(seqs) == 0:  # every group filtered out: nothing to learn from this batch
            return {**zero, "is_weight_max": 0.0, "grad_norm": 0.0, "train_tokens": 0, "sequences": 0}
        adv_tok = torch.from_numpy(modeling.trainable_values(batch, "advantages"))
        use_kl_loss = cfg.kl_mode == "loss" and (own_reference or "ref_logprobs" in batch.column_names)
        ref = None  # the learner's own log-probs when own_reference
        if use_kl_loss and not own_reference:
            ref = torch.from_numpy(modeling.trainable_values(batch, "ref_logprobs"))
        rollout_lp = torch.from_numpy(modeling.trainable_values(batch, "rollout_logprobs"))
        on_policy = cfg.ppo_epochs == 1 and cfg.num_mini_batches == 1
        old_lp = None
        if not on_policy:
            old_lp = torch.from_numpy(
                modeling.batch_logprobs(
                    self.strategy.forward,
                    seqs,
                    role.micro_batch_size,
                    self.device,
                    role.autocast_dtype,
                    packing=role.packing,
                    max_tokens=role.max_tokens_per_pass,
                )
            )

        keys = _SUMMED
        sums = dict.fromkeys(keys, 0.0)
        grad_norms, losses = [], []
        seen_tokens, is_max = 0, 0.0
        self.model.train()
        for epoch, mini, n_tok in mini_batches(seqs, cfg, self.rng):
            self.strategy.zero_grad()
            mini_loss = 0.0
            for mb in self.strategy.micro_batches(seqs, mini, role.micro_batch_size, self.device):
                idx, weight = mb.index, mb.weight
                with modeling.autocast(self.device, role.autocast_dtype):
                    lp, entropy = self.strategy.forward(
                        **mb.inputs,
                        with_entropy=epoch == 0 or cfg.entropy_coef > 0,
                        entropy_grad=cfg.entropy_coef > 0,
                    )
                old = old_lp[idx].to(self.device) if old_lp is not None else lp.detach()
                pg, clipped = self.policy_loss(lp, old, adv_tok[idx].to(self.device), mb.loss_mask)
                behaviour = rollout_lp[idx].to(self.device)
                is_weight, beyond = rollout_correction(
                    old, behaviour, cfg.rollout_correction, cfg.rollout_is_cap
                )
                token_loss = pg * is_weight
                kl = None
                if use_kl_loss:
                    ref_mb = lp.detach() if ref is None else ref[idx].to(self.device)
                    kl = kl_penalty(lp, ref_mb, cfg.kl_estimator)
                    token_loss = token_loss + kl_coef * kl
                if cfg.entropy_coef > 0:
                    token_loss = token_loss - cfg.entropy_coef * entropy
                select = mb.loss_mask[:, 1:]
                dense = torch.zeros(select.shape, dtype=token_loss.dtype, device=self.device)
                dense[select] = token_loss
                loss = weight * aggregate_loss(
                    dense, select, cfg.loss_agg_mode, num_tokens=n_tok, num_seqs=len(mini)
                )
                self.strategy.backward(loss, last_micro_batch=mb.last)
                if weight == 0.0:
                    continue  # a placeholder pass that keeps ranks in step (strategy.rank_micro_batches)
                mini_loss += float(loss.detach())
                if epoch == 0:
                    sums["policy_loss"] += float(pg.detach().sum())
                    sums["clip_frac"] += float(clipped.sum())
                    if kl is not None:
                        sums["kl"] += float(kl.detach().sum())
                    sums["entropy"] += float(entropy.detach().sum())
                    gap = (lp.detach().float().cpu() - rollout_lp[idx]).abs()
                    sums["logprob_gap"] += float(gap.sum())
                    # engine vs learner at the start of the update: importance weights and
                    # KL(engine || learner) (k3, with the engine's samples)
                    raw = torch.exp((old - behaviour).clamp(-20.0, 20.0)).double()
                    sums["is_weight_mean"] += float(raw.sum())
                    sums["is_beyond_cap"] += float((raw > cfg.rollout_is_cap).sum())
                    sums["mismatch_kl"] += float((raw - 1.0 - raw.log()).sum())
                    is_max = max(is_max, float(raw.max())) if len(raw) else is_max
                    seen_tokens += len(idx)
            grad_norms.append(self.strategy.step())
            losses.append(mini_loss)
        # metrics over the whole batch, not this rank's share
        total = sum_over_ranks([*(sums[k] for k in keys), seen_tokens, *losses], self.world_size)
        sums = dict(zip(keys, total[: len(keys)], strict=True))
        seen_tokens, losses = total[len(keys)], total[len(keys) + 1 :]
        modeling.release_memory(self.device, self.config.release_memory)
        denom = max(seen_tokens, 1)
        metrics = {k: v / denom for k, v in sums.items()}
        metrics["is_weight_max"] = max_over_ranks([is_max], self.world_size)[0]
        metrics.update(
            total_loss=float(np.mean(losses)),
            grad_norm=float(np.mean(grad_norms)),
            train_tokens=seqs.num_tokens,
            sequences=len(seqs),
        )
        return metrics

    # ---- weight sync -----------------------------------------------------
    def weight_spec(self) -> weight_sync.WeightSpec:
        """Names, shapes and wire dtypes of the weights the engines receive: every weight,
        or with LoRA those of the blocks that hold adapters (the rest never changes)."""
        return list(self._spec)

    def group_address(self) -> tuple[str, int]:
        """Rendezvous address for a group whose rank 0 is this actor (learner ranks, weight sync)."""
        return rendezvous_address()

    def init_weight_sync(
        self, host: str, port: int, world_size: int, timeout_s: float = 300.0, shared_memory: bool = True
    ) -> str:
        """Create the group as rank 0 (blocks until every engine worker joins); a collective
        of the group that waits longer than `timeout_s` fails. With `shared_memory`, on CPU,
        the weights travel through memory every engine worker maps where all can
        (`weight_sync.share_memory`). Returns the transport: "gloo", "gloo+shared" or "nccl"."""
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        self._group = weight_sync.init_group(host, port, 0, world_size, backend, timeout_s)
        offer = self._spec if shared_memory and self.device.type == "cpu" else None
        self._shared = weight_sync.share_memory(self._group, 0, offer, self.device)
        return backend + ("+shared" if self._shared is not None else "")

    def broadcast_weights(
        self, bucket_bytes: int, version: int, spec: weight_sync.WeightSpec | None = None
    ) -> dict:
        """Send the current weights to every engine (rank 0; the other ranks only take part
        in the ZeRO-3 gather); returns bytes, seconds, version and the fingerprint of what
        was sent (see `weight_sync.fingerprint`).

        Args:
            bucket_bytes: bucket size; the receivers must be given the same number.
            version: the policy version being sent (the trainer counts updates).
            spec: `weight_spec()` with the wire layouts the engines agreed on
                (`weight_sync.with_blocked`); default: `weight_spec()`, all row-major.
        """
        spec = self._spec if spec is None else weight_sync.from_wire(spec)
        if [t.name for t in spec] != [t.name for t in self._spec]:
            raise ValueError("broadcast_weights: the spec names other weights than weight_spec()")
        if self.rank == 0 and self._group is None:
            raise RuntimeError("init_weight_sync() has not run")
        t0 = time.perf_counter()
        sent, prints = 0, {}
        with torch.no_grad(), modeling.threads(self._sync_threads()), self.strategy.full_parameters():
            if self.rank == 0:
                # one pass over the weights (with LoRA each one is merged on the fly)
                sending = {t.name for t in spec}
                weights = [(n, t) for n, t in self.full_weights() if n in sending]
                prints = dict.fromkeys(weight_sync.fingerprint_names(spec))
                sent = weight_sync.send_weights(
                    self._group,
                    weights,
                    spec,
                    bucket_bytes,
                    self.device,
                    self._sync_buffers,
                    prints,
                    self._shared,
                )
        self.version = version
        seconds = time.perf_counter() - t0
        transport = "shared memory" if self._shared is not None else "broadcast"
        return {
            "bytes": sent,
            "seconds": seconds,
            "version": self.version,
            "transport": transport,
            "fingerprint": prints,
        }

    def _sync_threads(self) -> int:
        """Threads that cast the weights into the buckets. Through shared memory, half of
        this learner's: the engines load the last bucket on the same cores while the
        learner casts the next, and an OpenMP pool that waits for a thread whose core the
        other side took stalls on every tensor. The learner is the side that gives way:
        vLLM's CPU worker binds its OpenMP threads to cores and replaces
        `torch.set_num_threads` with a no-op, so the engines keep theirs. On 2 cores,
        casting the default model's weights with one core kept busy took 0.38 s with 2
        threads and 0.10 s with 1."""
        n = torch.get_num_threads()
        return max(1, n // 2) if self._shared is not None else n

    # ---- checkpoints -----------------------------------------------------
    def save(self, path: str) -> str:
        """Save the policy and tokenizer in Hugging Face format (vLLM can serve it); rank 0
        writes, every rank takes part in the ZeRO-3 gather."""
        from transformers import AutoTokenizer

        with torch.no_grad(), self.strategy.full_parameters():
            if self.rank == 0:
                Path(path).mkdir(parents=True, exist_ok=True)
                if self.lora:  # a plain model with the adapters merged in, plus the adapters
                    merged = {name: t.detach().clone() for name, t in self.full_weights()}
                    self.model.get_base_model().save_pretrained(
                        path, state_dict=merged, safe_serialization=True
                    )
                    self.model.save_pretrained(str(Path(path) / "adapter"))
                else:
                    self.model.save_pretrained(path, safe_serialization=True)
                AutoTokenizer.from_pretrained(self.model_path).save_pretrained(path)
        return path

    def save_state(self, folder: str) -> str:
        """Module, optimizer and RNG state of this rank into `folder` (every rank)."""
        self.strategy.save_state(folder, modeling.rng_state(self.rng, version=self.version))
        return folder

    def load_state(self, folder: str) -> int:
        """Restore `save_state`'s folder (every rank); returns the weight version."""
        extra = self.strategy.load_state(folder)
        modeling.set_rng_state(self.rng, extra)
        self.version = int(extra["version"])
        return self.version

    def full_weights(self):
        """(name, tensor) of every weight of the full model, in `weight_spec` order; with
        LoRA each adapted weight is merged on the fly (W + scale * B @ A), nothing in place."""
        if not self.lora:
            yield from self.model.named_parameters()
            return
        from peft.tuners.lora import LoraLayer

        base = self.model.get_base_model()
        deltas = {
            f"{name}.base_layer.weight": module.get_delta_weight(adapter)
            for name, module in base.named_modules()
            if isinstance(module, LoraLayer)
            for adapter in module.active_adapters
        }
        for name, param in base.named_parameters():
            if ".lora_" in name:
                continue
            merged = param + deltas[name] if name in deltas else param
            yield name.replace(".base_layer", ""), merged

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and total parameters of the policy (with LoRA: adapters against the
        base model plus adapters)."""
        params = list(self.model.parameters())
        return {
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "total": sum(p.numel() for p in params),
        }

    def flat_parameters(self) -> np.ndarray:
        """Every weight, concatenated in float32 (for checks; call on every rank: under
        ZeRO-3 the gather is a collective)."""
        with torch.no_grad(), self.strategy.full_parameters():
            flat = [t.detach().float().flatten().cpu() for _, t in self.full_weights()]
            return torch.cat(flat).numpy()

    def sequence_logprobs(self, token_ids: list[int]) -> list[float]:
        """Log-prob of every token after the first under the current policy (float32, for checks)."""
        ids = torch.tensor([token_ids], device=self.device)
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[0, 0] = False
        with torch.no_grad():
            lp, _ = modeling.token_logprobs(self.model, ids, torch.ones_like(ids), mask)
        return lp.float().cpu().tolist()


def _with_lora(model, config: LearnerConfig):
    """`model` wrapped by peft with trainable LoRA adapters (the base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        target_modules=list(config.lora_target_modules),
        lora_dropout=config.lora_dropout,
        bias="none",
    )
    return get_peft_model(model, lora)


def _adapted_blocks(spec: weight_sync.WeightSpec, model) -> weight_sync.WeightSpec:
    """The part of `spec` a LoRA learner changes: every weight of each block (attention,
    MLP) that holds an adapter. Whole blocks, because engines fuse a block's layers (q, k
    and v into one tensor) and load a fused tensor only once all its parts arrived; the
    rest keeps the base weights the engines started from."""
    from peft.tuners.lora import LoraLayer

    blocks = {
        weight_sync.module_parent(f"{name}.weight")
        for name, module in model.get_base_model().named_modules()
        if isinstance(module, LoraLayer)
    }
    return [t for t in spec if weight_sync.module_parent(t.name) in blocks]
