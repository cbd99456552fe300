"""Bucketed broadcast between two real processes over gloo."""

import multiprocessing as mp

import torch

from rayrl import weight_sync
from rayrl.weight_sync import TensorSpec, from_wire, plan_buckets, to_wire


def test_plan_buckets_respects_size_and_dtype():
    spec = [
        TensorSpec("a", (10,), "float32"),  # 40 B
        TensorSpec("b", (10,), "float32"),  # 40 B
        TensorSpec("c", (100,), "float32"),  # 400 B: alone
        TensorSpec("d", (4,), "bfloat16"),  # dtype change starts a bucket
        TensorSpec("e", (4,), "bfloat16"),
    ]
    assert plan_buckets(spec, bucket_bytes=100) == [[0, 1], [2], [3, 4]]
    assert from_wire(to_wire(spec)) == spec


def _receiver(port, spec_wire, queue):
    group = weight_sync.init_group("127.0.0.1", port, 1, 2, "gloo", timeout_s=60)
    got = {}
    for bucket in weight_sync.receive_buckets(group, from_wire(spec_wire), bucket_bytes=64):
        for name, t in bucket:
            got[name] = t.clone()
    queue.put({k: v.tolist() for k, v in got.items()})


def test_send_receive_across_processes():
    torch.manual_seed(0)
    named = [("w1", torch.randn(3, 4)), ("w2", torch.randn(7)), ("w3", torch.randn(2, 2))]
    spec = [TensorSpec(n, tuple(t.shape), "bfloat16") for n, t in named]
    port = weight_sync.free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_receiver, args=(port, to_wire(spec), queue))
    proc.start()
    group = weight_sync.init_group("127.0.0.1", port, 0, 2, "gloo", timeout_s=60)
    sent = weight_sync.send_weights(group, named, spec, bucket_bytes=64)
    got = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert sent == sum(t.numel() for _, t in named) * 2  # bf16 on the wire
    for name, t in named:
        expected = t.to(torch.bfloat16).float()
        assert torch.equal(torch.tensor(got[name]).float(), expected), name
