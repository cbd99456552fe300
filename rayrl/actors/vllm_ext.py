"""Methods rayrl adds to every vLLM worker (`worker_extension_cls`).

`collective_rpc(name, args)` calls these methods on vLLM's model worker. They join the
learner's weight-sync group and load what it broadcasts. When every weight sent lands in
an unquantized layer (the usual case: a bf16 or float32 policy), each is placed straight
from the received bucket: a GEMM layer's parts (q, k, v fused into one `qkv_proj`) are
already adjacent there, so the layer's kernel re-packs from the bucket without a copy, and
the other weights are copied into the tensors the model holds. Anything else (quantized
layers, tensor-parallel shards) goes through vLLM's layer-wise reload lifecycle, which
re-applies each layer's post-load processing in general.

On a CPU with AMX, `rayrl_blocked_weights` switches the unquantized 16-bit GEMM layers to
vLLM's AMX kernel that reads a blocked weight (`weight_sync.BLOCKED`): the learner then
sends those weights in that layout and each layer computes from the received bucket as
is, with no repacking after a sync.
"""

from __future__ import annotations

import logging
import resource
import time

import torch

from rayrl import weight_sync


class WeightSyncExtension:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def rayrl_init_weight_sync(
        self, host: str, port: int, rank_offset: int, world_size: int, backend: str, timeout_s: float = 300.0
    ) -> int:
        """Join the learner's group as rank `rank_offset + this worker's rank`, and map the
        learner's shared buckets where it offers them (`weight_sync.share_memory`)."""
        rank = rank_offset + self.rank
        self._rayrl_group = weight_sync.init_group(host, port, rank, world_size, backend, timeout_s)
        device = next(self.model_runner.model.parameters()).device
        self._rayrl_shared = weight_sync.share_memory(self._rayrl_group, rank, None, device)
        self._rayrl_aliases = _shared_parameters(self.model_runner.model)
        for layer in _input_embeddings(self.model_runner.model):
            # its packed copy (of the weights it was loaded with: syncs leave it alone) is
            # freed; were the layer ever used as a GEMM, it computes from its current weight
            if hasattr(layer, "cpu_linear"):
                layer.cpu_linear = torch.nn.functional.linear
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

    def rayrl_blocked_weights(self, wire_spec: list) -> list[str]:
        """Names in `wire_spec` this worker takes `BLOCKED` (see `use_blocked_kernel`); the
        layers they belong to compute with the blocked kernel from now on. Empty where the
        direct loader does not apply to the spec or the kernel is not there."""
        spec = weight_sync.from_wire(wire_spec)
        plan = self._rayrl_direct_plan(spec) if blocked_kernel_available() else None
        if plan is None:
            return []
        dtypes = {t.name: t.dtype for t in spec}
        layers: dict = {}  # layer -> its sent weight names
        for name, (layer, kind, *_rest) in plan.gemm.items():
            layers.setdefault(layer, []).append((name, kind))
        accepted = []
        for layer, names in layers.items():
            whole_blocks = all(
                kind == "weight" and weight_sync.blockable(plan.gemm[n][4], dtypes[n]) for n, kind in names
            )
            if whole_blocks and use_blocked_kernel(layer):
                accepted += [n for n, _ in names]
        # an embedding that is also the LM head arrives row-major (lookups need that) and
        # its GEMM is re-blocked from it after each load (once for all layers sharing it)
        for holders in plan.holders.values():
            for layer in holders:
                if hasattr(layer, "cpu_linear"):
                    use_blocked_kernel(layer, keep_weight=True)
        return accepted

    def rayrl_receive_weights(self, wire_spec: list, bucket_bytes: int) -> dict:
        """Receive one broadcast of every weight and load it into the running model.

        Args:
            wire_spec: `weight_sync.to_wire(spec)` of the learner's weights.
            bucket_bytes: bucket size the learner sends with.

        Returns:
            tensors loaded, the loading path ("direct" or "layerwise"), seconds spent
            receiving, loading and finalizing (the direct path also: copying plain weights,
            re-processing layers), the page faults this process took meanwhile (fresh
            memory touched; on CPU mostly the kernels' new packed weights), and the
            fingerprint of the loaded weights with the seconds it took.
        """
        model = self.model_runner.model
        device = next(model.parameters()).device
        spec = weight_sync.from_wire(wire_spec)
        loader = self._rayrl_loader(spec)
        stats = {"tensors": 0, "receive_s": 0.0, "load_s": 0.0, "path": loader.path}
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        with torch.no_grad():
            buckets = weight_sync.receive_buckets(
                self._rayrl_group,
                spec,
                bucket_bytes,
                device,
                self._rayrl_receive_buffers(spec, device),
                self._rayrl_shared,
            )
            while True:
                t = time.perf_counter()
                bucket = next(buckets, None)
                stats["receive_s"] += time.perf_counter() - t
                if bucket is None:
                    break
                t = time.perf_counter()
                loader.load(bucket)
                stats["load_s"] += time.perf_counter() - t
                stats["tensors"] += len(bucket)
            t = time.perf_counter()
            loader.finish()
        stats["finalize_s"] = time.perf_counter() - t
        stats["total_s"] = time.perf_counter() - t0
        stats["page_faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        stats.update(getattr(loader, "seconds", {}))
        t = time.perf_counter()
        taken = getattr(loader, "prints", {})  # while later buckets arrived
        rest = [n for n in weight_sync.fingerprint_names(spec) if n not in taken]
        stats["fingerprint"] = {**taken, **self.rayrl_fingerprint(rest)}
        stats["fingerprint_s"] = time.perf_counter() - t
        return stats

    def _rayrl_receive_buffers(self, spec: weight_sync.WeightSpec, device) -> dict | None:
        """Buffers to receive into on CPU, where a fresh one's page faults cost as much as
        filling it: one set, refilled each sync; two used in turn while layers compute
        from the `BLOCKED` weights of the last sync's buffers. None on GPU, or where the
        buckets are shared with the learner."""
        if torch.device(device).type != "cpu" or self._rayrl_shared is not None:
            return None
        sets = self.__dict__.setdefault("_rayrl_buffer_sets", [{}, {}])
        if any(t.layout == weight_sync.BLOCKED for t in spec):
            sets.reverse()
        return sets[0]

    def _rayrl_direct_plan(self, spec: weight_sync.WeightSpec) -> DirectLoad | None:
        """`DirectLoad.plan` for `spec`'s weights, planned once per spec (layouts aside)."""
        key = tuple((t.name, t.shape) for t in spec)
        if getattr(self, "_rayrl_plan_key", None) != key:
            self._rayrl_plan_key = key
            self._rayrl_plan = DirectLoad.plan(self.model_runner.model, spec)
        return self._rayrl_plan

    def _rayrl_loader(self, spec: weight_sync.WeightSpec):
        """The direct loader where it applies to `spec`, else vLLM's layer-wise reload."""
        plan = self._rayrl_direct_plan(spec)
        return plan.start(spec, keep=self._rayrl_shared is not None) if plan else LayerwiseLoad(self, spec)


class LayerwiseLoad:
    """vLLM's general reload: each layer is rebuilt from what it receives and processed
    again once complete (quantization, repacking), whatever its kind."""

    path = "layerwise"

    def __init__(self, worker, spec: weight_sync.WeightSpec):
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        self.worker = worker
        self.model = worker.model_runner.model
        self.blocked = {t.name for t in spec if t.layout == weight_sync.BLOCKED}
        # a weight the direct path took as received must not be written through into the
        # buffers it came in (the learner refills them)
        for param in self.model.parameters():
            if param.__dict__.pop("_rayrl_received", False):
                param.data = param.data.clone()
        initialize_layerwise_reload(self.model)

    def load(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        self.model.load_weights(
            weights=[(n, weight_sync.from_blocked(t) if n in self.blocked else t) for n, t in bucket]
        )

    def finish(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.worker.model_runner.model_config)
        # every layer is back on vLLM's own kernel (a kept weight's shared blocked copy too)
        for holder in (*self.model.modules(), *self.model.parameters()):
            holder.__dict__.pop("_rayrl_blocked", None)
        # Layer-wise reload restores a layer that received nothing (the tied LM head)
        # from its old tensors, which unties it; point it at the fresh shared weight
        # again and redo its post-load processing (on CPU that repacks the GEMM weight
        # the logits are computed with; elsewhere it is a no-op for plain weights).
        for alias, source in self.worker._rayrl_aliases:
            module_name, _, attr = alias.rpartition(".")
            module = self.model.get_submodule(module_name)
            setattr(module, attr, self.model.get_parameter(source))
            method = getattr(module, "quant_method", None)
            if method is not None:
                method.process_weights_after_loading(module)


class DirectLoad:
    """Weights placed where the running model keeps them, for a model whose every received
    weight belongs to an unquantized layer that is not sharded.

    A GEMM layer (vLLM fuses q, k and v into `qkv_proj`, gate and up into `gate_up_proj`)
    is rebuilt once all its parts have arrived: the learner sends a block's weights in
    checkpoint order, so the parts sit back to back in the received bucket and are the
    fused weight without a copy. Where the layer keeps its weight (GPU), that is copied
    into it in place (CUDA graphs hold its address); where vLLM packed it for its CPU
    kernel and dropped it, the layer is handed the received tensor and packs from it.
    Either way the layer's own post-load processing runs, as after a checkpoint load;
    a layer on the blocked kernel (`use_blocked_kernel`) instead keeps the received
    `BLOCKED` tensor as the weight it computes from.
    Other weights (embeddings, norms) are copied into the model's tensors (or, from shared
    buckets, taken as they are), and an LM head computing from one (tied to the embedding)
    is processed again as soon as that has arrived, while the rest of the sync is on its
    way; an input embedding only looks rows up, so its kernel is left alone.

    Use `DirectLoad.plan(model, spec)` (None where this does not apply), then per sync
    `start()`, `load(bucket)` for each bucket, `finish()`.
    """

    path = "direct"

    def __init__(self, gemm: dict, plain: dict, holders: dict):
        self.gemm = gemm  # sent name -> (layer, "weight" or "bias", part, parts, shape)
        self.plain = plain  # sent name -> the model's tensor
        self.holders = holders  # sent plain name -> layers to process after a copy

    @classmethod
    def plan(cls, model: torch.nn.Module, spec: weight_sync.WeightSpec) -> DirectLoad | None:
        from vllm.model_executor.layers.linear import UnquantizedLinearMethod
        from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

        packed = getattr(model, "packed_modules_mapping", {})
        gemm, needed = {}, {}
        for name, layer in model.named_modules():
            if not isinstance(getattr(layer, "quant_method", None), UnquantizedLinearMethod):
                continue
            parent, _, leaf = name.rpartition(".")
            parts = [f"{parent}.{p}" if parent else p for p in packed.get(leaf, [leaf])]
            sizes = list(getattr(layer, "output_partition_sizes", [layer.output_size_per_partition]))
            if getattr(layer, "tp_size", 1) != 1 or len(sizes) != len(parts):
                return None
            kinds = ["weight"] + (["bias"] if getattr(layer, "bias", None) is not None else [])
            needed[layer] = {f"{p}.{kind}" for p in parts for kind in kinds}
            for kind in kinds:
                for i, p in enumerate(parts):
                    shape = (sizes[i], layer.input_size_per_partition) if kind == "weight" else (sizes[i],)
                    gemm[f"{p}.{kind}"] = (layer, kind, i, len(parts), shape)
        params = dict(model.named_parameters(remove_duplicate=False))
        # an embedding's tensor -> the layers that compute logits with it (an input
        # embedding just looks rows up: its kernel needs no processing after a load)
        lookups = {id(m) for m in _input_embeddings(model)}
        holders: dict[int, list] = {}
        embeddings: set[int] = set()
        for layer in model.modules():
            if isinstance(getattr(layer, "quant_method", None), UnquantizedEmbeddingMethod):
                for t in layer._parameters.values():
                    if t is not None:
                        embeddings.add(id(t))
                        if id(layer) not in lookups:
                            holders.setdefault(id(t), []).append(layer)
        plain, plain_holders, sent = {}, {}, {t.name for t in spec}
        for t in spec:
            if t.name in gemm:
                if t.shape != gemm[t.name][4]:
                    return None
                continue
            target = params.get(t.name)
            if target is None or tuple(target.shape) != t.shape:
                return None
            owner = model.get_submodule(t.name.rpartition(".")[0])
            if getattr(owner, "quant_method", None) is not None and id(target) not in embeddings:
                return None
            plain[t.name] = target
            plain_holders[t.name] = holders.get(id(target), [])
        # a fused layer must receive all its parts (a LoRA learner sends whole blocks)
        touched = {gemm[n][0] for n in sent if n in gemm}
        if any(not needed[layer] <= sent for layer in touched):
            return None
        return cls({n: v for n, v in gemm.items() if n in sent}, plain, plain_holders)

    def start(self, spec: weight_sync.WeightSpec, keep: bool = False) -> DirectLoad:
        """Begin a sync of `spec`'s weights. `keep`: the received tensors stay as they are
        until the sync after next (`weight_sync.SharedBuckets`), so plain weights are
        taken as they are instead of copied."""
        self.keep = keep
        self.blocked = {t.name for t in spec if t.layout == weight_sync.BLOCKED}
        # fingerprints of plain weights, taken from the model's tensor once it is placed
        self.fingerprinted = set(weight_sync.fingerprint_names(spec))
        self.prints: dict[str, int] = {}
        self.arrived: dict = {}  # (layer, kind) -> {part index: tensor}
        # layers holding plain weights -> how many of them are still to arrive; each is
        # processed once its last one has, while later buckets are still on the way
        self.waiting: dict = {}
        for name in self.plain:
            for layer in self.holders[name]:
                self.waiting[layer] = self.waiting.get(layer, 0) + 1
        self.complete: dict = {}  # layer -> kinds still missing
        self.seconds = {"copy_s": 0.0, "process_s": 0.0}
        self.reblocked: set[int] = set()  # data_ptr of the blocked copies redone
        for layer, kind, *_ in self.gemm.values():
            self.complete.setdefault(layer, set()).add(kind)
        return self

    def load(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        for name, tensor in bucket:
            if name in self.plain:
                t = time.perf_counter()
                held = self.plain[name]
                if self.keep and tensor.dtype == held.dtype and held.device.type == "cpu":
                    held.data = tensor
                    held._rayrl_received = True  # a view of what arrived (see LayerwiseLoad)
                else:
                    held.data.copy_(tensor)
                self.seconds["copy_s"] += time.perf_counter() - t
                if name in self.fingerprinted:
                    self.prints[name] = weight_sync.checksum(held.detach())
                for layer in self.holders[name]:
                    self.waiting[layer] -= 1
                    if not self.waiting[layer] and not self._reblock(layer):
                        self._process(layer)
                continue
            layer, kind, i, count, _ = self.gemm[name]
            parts = self.arrived.setdefault((layer, kind), {})
            parts[i] = (name in self.blocked, tensor)
            if len(parts) == count:
                self._place(layer, kind, [parts[k] for k in range(count)])
                del self.arrived[(layer, kind)]
                self.complete[layer].discard(kind)
                if not self.complete[layer]:
                    self._process(layer)

    def finish(self) -> None:
        missing = [layer for layer, kinds in self.complete.items() if kinds]
        missing += [layer for layer, count in self.waiting.items() if count]
        if missing:
            raise RuntimeError(f"weight sync ended with {len(missing)} layers not fully received")

    def _reblock(self, layer: torch.nn.Module) -> bool:
        """Re-block the copy a layer on the blocked kernel keeps of its row-major weight
        (an LM head sharing the embedding), once per copy; False for any other layer."""
        blocked = getattr(layer, "_rayrl_blocked", None)
        if blocked is None:
            return False
        if blocked.data_ptr() not in self.reblocked:
            t = time.perf_counter()
            weight_sync.to_blocked(layer.weight, blocked.view(-1))
            self.reblocked.add(blocked.data_ptr())
            self.seconds["process_s"] += time.perf_counter() - t
        return True

    def _process(self, layer: torch.nn.Module) -> None:
        if hasattr(layer, "_rayrl_blocked"):  # computes from what `_place` handed it
            return
        t = time.perf_counter()
        layer.quant_method.process_weights_after_loading(layer)
        self.seconds["process_s"] += time.perf_counter() - t

    def _place(self, layer: torch.nn.Module, kind: str, parts: list[tuple[bool, torch.Tensor]]) -> None:
        """Hand a layer its weight or bias from its received parts ((blocked?, tensor) each)."""
        on_blocked_kernel = kind == "weight" and hasattr(layer, "_rayrl_blocked")
        if on_blocked_kernel and all(blocked for blocked, _ in parts):
            # the blocked layout packs 32-row blocks, and every part is whole blocks:
            # the parts back to back are the fused weight's blocked layout
            layer._rayrl_blocked = _joined([t for _, t in parts])
            return
        value = _joined([weight_sync.from_blocked(t) if blocked else t for blocked, t in parts])
        if on_blocked_kernel:
            t = time.perf_counter()
            layer._rayrl_blocked = weight_sync.to_blocked(value, torch.empty_like(value).view(-1))
            self.seconds["process_s"] += time.perf_counter() - t
            return
        held = getattr(layer, kind)
        if held.numel() == 0:  # packed for the CPU kernel and dropped: packs from `value`
            setattr(layer, kind, torch.nn.Parameter(value, requires_grad=False))
        else:
            held.data.copy_(value.view(held.shape))


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts stacked along their first dimension: a view where they lie back to back
    in one buffer (as received), else a copy."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    base = first._base if first._base is not None else first
    end = first.data_ptr()
    for p in parts:
        if (
            p.data_ptr() != end
            or not p.is_contiguous()
            or (p._base if p._base is not None else p) is not base
        ):
            return torch.cat(parts)
        end += p.numel() * p.element_size()
    rows = sum(p.shape[0] for p in parts)
    offset = (first.data_ptr() - base.data_ptr()) // first.element_size()
    return base.reshape(-1)[offset : offset + rows * first[0].numel()].view(rows, *first.shape[1:])


def _input_embeddings(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The vocabulary embeddings that only look rows up: not an LM head (by class, or
    reached as `lm_head`). vLLM's load packs a GEMM kernel for them too, which nothing
    calls."""
    from vllm.model_executor.layers.vocab_parallel_embedding import (
        ParallelLMHead,
        VocabParallelEmbedding,
    )

    heads = {id(m) for n, m in model.named_modules(remove_duplicate=False) if n.endswith("lm_head")}
    return [
        m
        for m in model.modules()
        if isinstance(m, VocabParallelEmbedding) and not isinstance(m, ParallelLMHead) and id(m) not in heads
    ]


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
        if hasattr(module, "_rayrl_blocked"):
            out["+".join(members)] = weight_sync.from_blocked(module._rayrl_blocked)
        elif weight.numel() > 0:
            out["+".join(members)] = weight
        elif hasattr(module, "cpu_linear"):
            eye = torch.eye(module.input_size_per_partition, dtype=weight.dtype, device=weight.device)
            out["+".join(members)] = module.cpu_linear(eye, weight, None).t()
    return out


def blocked_kernel_available() -> bool:
    """vLLM-CPU's AMX GEMM kernel on a blocked weight (`weight_packed_linear`) is built
    and this CPU has AMX tiles (the kernel's own condition)."""
    import vllm._custom_ops  # noqa: F401  (registers torch.ops._C)
    from vllm.platforms import current_platform

    return (
        current_platform.is_cpu()
        and torch.cpu._is_amx_tile_supported()
        and hasattr(torch.ops._C, "convert_weight_packed")
        and hasattr(torch.ops._C, "weight_packed_linear")
    )


@torch.no_grad()
def use_blocked_kernel(layer: torch.nn.Module, keep_weight: bool = False) -> bool:
    """Switch an unquantized CPU GEMM layer without bias to vLLM's AMX kernel on a
    `BLOCKED` copy of its weight (vLLM packs weights over 1 MiB for oneDNN instead, whose
    packed copy must be rebuilt after every load; measured on 2 cores, the AMX kernel
    generates as fast). The copy is made here and checked once against the kernel's own
    packing; returns False, leaving the layer as it was, where that does not hold.

    Args:
        keep_weight: the layer keeps its row-major weight (an embedding that is also the
            LM head); layers that share that tensor share one blocked copy.
    """
    from vllm import _custom_ops as ops

    if hasattr(layer, "_rayrl_blocked"):
        return True
    if getattr(layer, "bias", None) is not None or not hasattr(layer, "cpu_linear"):
        return False
    weight = layer.weight
    if weight.numel() == 0:  # dropped after packing: read it back through the kernel (exact)
        eye = torch.eye(layer.input_size_per_partition, dtype=weight.dtype)
        weight = layer.cpu_linear(eye, weight, None).t().contiguous()
    if not weight_sync.blockable(tuple(weight.shape), str(weight.dtype).removeprefix("torch.")):
        return False
    shared = getattr(weight, "_rayrl_blocked", None) if keep_weight else None
    blocked = (
        shared if shared is not None else weight_sync.to_blocked(weight, torch.empty_like(weight).view(-1))
    )
    if shared is None and not torch.equal(blocked, torch.ops._C.convert_weight_packed(weight)):
        return False  # another layout in this vLLM build
    if keep_weight:
        weight._rayrl_blocked = blocked
    else:
        layer.weight = torch.nn.Parameter(torch.empty(0, dtype=weight.dtype), requires_grad=False)
    rows = weight.shape[0]
    layer._rayrl_blocked = blocked
    layer.cpu_linear = lambda x, _weight, bias: ops.weight_packed_linear_cpu(
        x, layer._rayrl_blocked, rows, bias
    )
    return True
