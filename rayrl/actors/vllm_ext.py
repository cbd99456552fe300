"""Methods rayrl adds to every vLLM worker (`worker_extension_cls`).

vLLM runs its model in a worker process of its own; `collective_rpc(name, args)`
calls these methods there. They join the learner's weight-sync group and load
received tensors through vLLM's layer-wise reload lifecycle, which re-applies the
per-layer weight processing that a plain `load_weights` would skip.
"""

from __future__ import annotations

import logging
import time

import torch

from rayrl import weight_sync


class WeightSyncExtension:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def rayrl_init_weight_sync(
        self, host: str, port: int, rank_offset: int, world_size: int, backend: str, timeout_s: float = 300.0
    ) -> int:
        """Join the learner's group as rank `rank_offset + this worker's rank`."""
        rank = rank_offset + self.rank
        self._rayrl_group = weight_sync.init_group(host, port, rank, world_size, backend, timeout_s)
        self._rayrl_aliases = _shared_parameters(self.model_runner.model)
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(
            _ExpectedReloadWarnings()
        )
        return rank

    def rayrl_fingerprint(self, names: list[str]) -> dict:
        """`weight_sync.fingerprint` of the named weights as the running model holds them:
        read directly where the model keeps them as sent, and for a GEMM layer (possibly
        fused, "a+b+c" keys) read back through the kernel it runs with."""
        model = self.model_runner.model
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        held = ((n, p) for n, p in model.named_parameters() if p.numel() > 0)  # not a packed GEMM's stub
        prints = weight_sync.fingerprint(held, names, dtype)
        fused = _gemm_weights(model, set(names) - set(prints))
        prints.update(weight_sync.fingerprint(fused.items(), list(fused), dtype))
        return prints

    def rayrl_receive_weights(self, wire_spec: list, bucket_bytes: int) -> dict:
        """Receive one broadcast of every weight and load it into the running model.

        Args:
            wire_spec: `weight_sync.to_wire(spec)` of the learner's weights.
            bucket_bytes: bucket size the learner sends with.

        Returns:
            tensors loaded, seconds spent receiving, loading and finalizing, and the
            fingerprint of the loaded weights.
        """
        from vllm.model_executor.model_loader.reload import (
            finalize_layerwise_reload,
            initialize_layerwise_reload,
        )

        model = self.model_runner.model
        device = next(model.parameters()).device
        stats = {"tensors": 0, "receive_s": 0.0, "load_s": 0.0}
        t0 = time.perf_counter()
        initialize_layerwise_reload(model)
        with torch.no_grad():
            buckets = weight_sync.receive_buckets(
                self._rayrl_group, weight_sync.from_wire(wire_spec), bucket_bytes, device
            )
            while True:
                t = time.perf_counter()
                bucket = next(buckets, None)
                stats["receive_s"] += time.perf_counter() - t
                if bucket is None:
                    break
                t = time.perf_counter()
                model.load_weights(weights=bucket)
                stats["load_s"] += time.perf_counter() - t
                stats["tensors"] += len(bucket)
        t = time.perf_counter()
        finalize_layerwise_reload(model, self.model_runner.model_config)
        # Layer-wise reload restores a layer that received nothing (the tied LM head)
        # from its old tensors, which unties it; point it at the fresh shared weight
        # again and redo its post-load processing (on CPU that repacks the GEMM weight
        # the logits are computed with; elsewhere it is a no-op for plain weights).
        for alias, source in self._rayrl_aliases:
            module_name, _, attr = alias.rpartition(".")
            module = model.get_submodule(module_name)
            setattr(module, attr, model.get_parameter(source))
            method = getattr(module, "quant_method", None)
            if method is not None:
                method.process_weights_after_loading(module)
        stats["finalize_s"] = time.perf_counter() - t
        stats["total_s"] = time.perf_counter() - t0
        stats["fingerprint"] = self.rayrl_fingerprint(
            weight_sync.fingerprint_names(weight_sync.from_wire(wire_spec))
        )
        return stats


class _ExpectedReloadWarnings(logging.Filter):
    """Drop the per-sync "Failed to load weights" warnings: a layer that receives nothing
    keeps its weights, which is expected (rotary embeddings hold only derived buffers, a
    tied LM head is re-tied right after, a LoRA learner sends only the blocks it adapts).
    A layer that should have loaded and did not is caught by the fingerprints instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to load weights" not in str(record.msg)


def _shared_parameters(model: torch.nn.Module) -> list[tuple[str, str]]:
    """(alias, source) names of parameters that are the same tensor (tied weights)."""
    first: dict[int, str] = {}
    aliases = []
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases.append((name, first[id(param)]))
        else:
            first[id(param)] = name
    return aliases


@torch.no_grad()
def _gemm_weights(model: torch.nn.Module, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The weights of the GEMM layers whose checkpoint weights are all in `wanted`, as the
    layer computes with them, keyed by those names joined with "+" (vLLM fuses q, k and v
    into one `qkv_proj`, gate and up into `gate_up_proj`). On CPU the layer keeps only a
    kernel-packed copy, so the weight is read back as the layer's product with an identity
    matrix (exact: one term per output). Tensor-parallel shards are skipped."""
    packed = getattr(model, "packed_modules_mapping", {})
    out = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if weight is None or getattr(module, "tp_size", 1) != 1:
            continue
        parent, _, leaf = name.rpartition(".")
        members = [f"{parent}.{part}.weight" for part in packed.get(leaf, [leaf])]
        if not all(m in wanted for m in members):
            continue
        if weight.numel() > 0:
            out["+".join(members)] = weight
        elif hasattr(module, "cpu_linear"):
            eye = torch.eye(module.input_size_per_partition, dtype=weight.dtype, device=weight.device)
            out["+".join(members)] = module.cpu_linear(eye, weight, None).t()
    return out
