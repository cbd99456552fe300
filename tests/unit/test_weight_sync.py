"""Weight transport between two real processes over gloo: bucketed broadcast, or shared memory."""

import multiprocessing as mp

import pytest
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
    # a block's weights (which an engine may fuse) are never split between buckets
    block = [
        TensorSpec("model.layers.0.self_attn.q_proj.weight", (10,), "float32"),
        TensorSpec("model.layers.0.self_attn.k_proj.weight", (10,), "float32"),
        TensorSpec("model.layers.0.self_attn.v_proj.weight", (10,), "float32"),
        TensorSpec("model.layers.0.mlp.up_proj.weight", (10,), "float32"),
    ]
    assert plan_buckets(block, bucket_bytes=50) == [[0, 1, 2], [3]]


def test_the_blocked_layout_puts_column_pairs_of_32_row_blocks_side_by_side():
    """`BLOCKED` element by element: entry (r, c) of rows block b sits at
    [b, c // 2, r % 32, c % 2] of a [N/32, K/2, 32, 2] array."""
    torch.manual_seed(0)
    w = torch.randn(96, 10)
    blocked = weight_sync.to_blocked(w, torch.empty(96 * 10, dtype=torch.bfloat16))
    grid = blocked.reshape(3, 5, 32, 2)
    for r, c in [(0, 0), (0, 1), (1, 0), (31, 9), (32, 0), (45, 7), (95, 9)]:
        assert grid[r // 32, c // 2, r % 32, c % 2] == w[r, c].to(torch.bfloat16)
    assert torch.equal(weight_sync.from_blocked(blocked), w.to(torch.bfloat16))
    # parts that are whole blocks, blocked one by one and laid back to back, are the
    # blocked layout of the fused weight (q, k, v into vLLM's qkv_proj)
    q, k, v = torch.randn(64, 10), torch.randn(32, 10), torch.randn(32, 10)
    parts = [weight_sync.to_blocked(t, torch.empty(t.numel(), dtype=torch.bfloat16)) for t in (q, k, v)]
    fused = weight_sync.to_blocked(torch.cat([q, k, v]), torch.empty(128 * 10, dtype=torch.bfloat16))
    assert torch.equal(torch.cat(parts), fused)


def test_weights_travel_blocked_only_where_every_engine_worker_takes_them():
    spec = [
        TensorSpec("a.weight", (64, 8), "bfloat16"),
        TensorSpec("b.weight", (64, 8), "bfloat16"),
        TensorSpec("c.weight", (48, 8), "bfloat16"),  # not whole 32-row blocks
        TensorSpec("d.weight", (64, 8), "float32"),  # the kernel reads 16-bit weights
        TensorSpec("norm.weight", (8,), "bfloat16"),
    ]
    agreed = weight_sync.with_blocked(spec, [{"a.weight", "b.weight", "c.weight", "d.weight"}, {"a.weight"}])
    assert [t.layout for t in agreed] == ["blocked", "plain", "plain", "plain", "plain"]
    assert [t.layout for t in weight_sync.with_blocked(spec, [])] == ["plain"] * 5
    assert from_wire(to_wire(agreed)) == agreed
    assert from_wire([["x", [2], "bfloat16"]]) == [TensorSpec("x", (2,), "bfloat16", "plain")]


def test_the_blocked_layout_is_the_one_vllms_amx_kernel_packs():
    """Checked against the engine's own packing where vLLM-CPU built it (the engine also
    checks this before it switches a layer, see `vllm_ext.use_blocked_kernel`)."""
    import pytest

    ops = pytest.importorskip("vllm._custom_ops")
    if not hasattr(torch.ops._C, "convert_weight_packed"):
        pytest.skip(f"this vLLM build ({ops.__name__}) has no AMX GEMM kernel")
    torch.manual_seed(0)
    for n, k in [(960, 576), (576, 1536), (64, 64)]:
        w = torch.randn(n, k).to(torch.bfloat16)
        mine = weight_sync.to_blocked(w, torch.empty(n * k, dtype=torch.bfloat16))
        assert torch.equal(mine, torch.ops._C.convert_weight_packed(w)), (n, k)


def test_rendezvous_ports_come_from_outside_the_kernels_ephemeral_range():
    """A port from the ephemeral range can be taken by any outgoing connection between the
    draw and rank 0's bind (a run failed so with EADDRINUSE); these are not handed out."""
    import socket

    low = weight_sync._ephemeral_low()
    ports = {weight_sync.free_port() for _ in range(20)}
    assert all(20000 <= p < low for p in ports) and len(ports) > 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))  # free indeed


def _receiver(port, spec_wire, queue, sends=1):
    """Rank 1: receives `sends` syncs; per sync, what arrived, and whether what the
    previous sync handed out (not copied) still reads as it was then."""
    group = weight_sync.init_group("127.0.0.1", port, 1, 2, "gloo", timeout_s=60)
    shared = weight_sync.share_memory(group, 1, None)  # attaches where rank 0 offers
    queue.put(shared is not None)
    spec, held, before = from_wire(spec_wire), {}, {}
    for _ in range(sends):
        got = {}
        for bucket in weight_sync.receive_buckets(group, spec, bucket_bytes=64, shared=shared):
            got.update(bucket)
        intact = all(torch.equal(held[n], before[n]) for n in held)
        held, before = got, {n: t.clone() for n, t in got.items()}
        queue.put(({k: v.tolist() for k, v in got.items()}, intact))


def _start_receiver(spec, sends):
    """Rank 1 (`_receiver`) in a new process, and rank 0's side of the group."""
    port = weight_sync.free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_receiver, args=(port, to_wire(spec), queue, sends))
    proc.start()
    return proc, queue, weight_sync.init_group("127.0.0.1", port, 0, 2, "gloo", timeout_s=60)


def _named(seed):
    torch.manual_seed(seed)
    return [
        ("w1", torch.randn(3, 4)),
        ("w2", torch.randn(7)),
        ("w3", torch.randn(2, 2)),
        ("w4", torch.randn(32, 4)),
    ]


@pytest.mark.parametrize("share", [False, True], ids=["broadcast", "shared-memory"])
def test_send_receive_across_processes(share):
    """Three syncs from rank 0 to rank 1, through the socket or through memory both map;
    what a sync placed stays as it was while the next one arrives."""
    named = _named(0)
    spec = [TensorSpec(n, tuple(t.shape), "bfloat16") for n, t in named]
    spec[3] = TensorSpec("w4", (32, 4), "bfloat16", weight_sync.BLOCKED)  # arrives in the kernel's layout
    proc, queue, group = _start_receiver(spec, sends=3)
    shared = weight_sync.share_memory(group, 0, spec if share else None)
    assert (shared is not None) == share and queue.get(timeout=60) == share
    for seed in range(3):
        named = _named(seed)
        prints = dict.fromkeys(["w1", "w4"])
        sent = weight_sync.send_weights(group, named, spec, bucket_bytes=64, checksums=prints, shared=shared)
        got, intact = queue.get(timeout=60)
        assert sent == sum(t.numel() for _, t in named) * 2  # bf16 on the wire
        assert intact
        for name, t in named:
            expected = t.to(torch.bfloat16)
            if name == "w4":
                expected = weight_sync.to_blocked(t, torch.empty(t.numel(), dtype=torch.bfloat16))
            assert torch.equal(torch.tensor(got[name]).float(), expected.float()), name
            if name in prints:
                assert prints[name] == weight_sync.checksum(expected)
    proc.join(timeout=60)
    assert proc.exitcode == 0


def test_a_sender_without_shared_memory_falls_back_to_the_broadcast(monkeypatch):
    """Where the memory cannot be created, both sides agree on the broadcast instead of
    one of them waiting for the other."""

    def no_memfd(*args):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(weight_sync.os, "memfd_create", no_memfd)
    named = _named(0)
    spec = [TensorSpec(n, tuple(t.shape), "bfloat16") for n, t in named]
    proc, queue, group = _start_receiver(spec, sends=1)
    assert weight_sync.share_memory(group, 0, spec) is None
    assert queue.get(timeout=60) is False
    weight_sync.send_weights(group, named, spec, bucket_bytes=64)
    got, _ = queue.get(timeout=60)
    assert torch.equal(torch.tensor(got["w1"]), named[0][1].to(torch.bfloat16).float())
    proc.join(timeout=60)
    assert proc.exitcode == 0


def test_shared_buckets_attach_only_to_the_memory_they_were_offered():
    spec = [TensorSpec("w", (64, 8), "bfloat16"), TensorSpec("b", (5,), "float32")]
    offer, address = weight_sync.SharedBuckets.create(spec)
    try:
        assert weight_sync.SharedBuckets.attach(address) is not None
        assert weight_sync.SharedBuckets.attach([*address[:3], *[w ^ 1 for w in address[3:]]]) is None
        assert weight_sync.SharedBuckets.attach([address[0], address[1] + 999, *address[2:]]) is None
        # the two sets of every bucket plan lie apart and inside the memory
        for bucket_bytes in (16, 1 << 20):  # two buckets either way: two dtypes
            views = [v for turn in (0, 1) for v in offer.buckets(turn, spec, bucket_bytes)]
            spans = sorted((v.data_ptr(), v.data_ptr() + v.numel() * v.element_size()) for v in views)
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
            assert spans[-1][1] <= offer.memory.data_ptr() + offer.memory.numel()
    finally:
        offer.release_address()
    assert weight_sync.SharedBuckets.attach(address) is None  # no longer reachable


def test_checksum_is_the_sum_of_16_bit_words_however_it_is_computed():
    torch.manual_seed(0)
    t = torch.randn(3 * (1 << 15) + 17).to(torch.bfloat16)
    words = t.view(torch.int16).tolist()
    assert weight_sync.checksum(t) == sum(words)
    assert weight_sync.checksum(t[:100]) == sum(words[:100])
    f = torch.randn(1000)
    assert weight_sync.checksum(f) == sum(f.view(torch.int32).tolist())


def test_a_fused_tensor_is_checked_against_the_sum_of_its_parts():
    torch.manual_seed(0)
    q, k, v = torch.randn(6, 4), torch.randn(2, 4), torch.randn(2, 4)
    names = ["l.q_proj.weight", "l.k_proj.weight", "l.v_proj.weight"]
    sent = weight_sync.fingerprint(zip(names, (q, k, v), strict=True), names, "bfloat16")
    fused = weight_sync.fingerprint([("qkv", torch.cat([q, k, v]))], ["qkv"], "bfloat16")["qkv"]
    assert weight_sync.expected_fingerprint(sent, "+".join(names)) == fused
    k2 = k.clone()
    k2[0, 0] += 1.0  # one changed weight in one part changes the fused checksum
    stale = weight_sync.fingerprint([("qkv", torch.cat([q, k2, v]))], ["qkv"], "bfloat16")["qkv"]
    assert weight_sync.expected_fingerprint(sent, "+".join(names)) != stale
    assert weight_sync.expected_fingerprint(sent, "l.q_proj.weight+l.o_proj.weight") is None


def test_the_canary_covers_the_norms_the_embedding_and_the_first_attention_block():
    spec = [
        TensorSpec("model.embed_tokens.weight", (10, 4), "bfloat16"),
        TensorSpec("model.layers.0.self_attn.q_proj.weight", (4, 4), "bfloat16"),
        TensorSpec("model.layers.0.self_attn.o_proj.weight", (4, 4), "bfloat16"),
        TensorSpec("model.layers.0.mlp.up_proj.weight", (8, 4), "bfloat16"),
        TensorSpec("model.layers.0.input_layernorm.weight", (4,), "bfloat16"),
        TensorSpec("model.norm.weight", (4,), "bfloat16"),
    ]
    assert weight_sync.fingerprint_names(spec) == [
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
        "model.norm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
    ]


def test_a_lora_learner_sends_only_the_blocks_that_hold_adapters(tiny_model):
    """Adapters on q and v change only the attention blocks: those travel whole (vLLM loads
    its fused qkv only once q, k and v all arrived); MLPs, norms and the embedding stay."""
    from rayrl.actors.learner import ActorLearner
    from rayrl.config import LearnerConfig, TrainingConfig

    learner = ActorLearner(
        tiny_model,
        TrainingConfig(kl_coef=0.0),
        LearnerConfig(lora_rank=4, lora_target_modules=["q_proj", "v_proj"], autocast_dtype="float32"),
    )
    names = [t.name for t in learner.weight_spec()]
    assert names == [
        f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(2) for p in ("q", "k", "v", "o")
    ]
    full = dict(learner.full_weights())
    assert set(names) < set(full)


@pytest.fixture
def keep_threads():
    """This process's torch thread count, put back after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("shared", [False, True], ids=["broadcast", "shared-memory"])
def test_a_shared_memory_sync_casts_on_half_the_threads_and_restores_them(
    tiny_model, monkeypatch, keep_threads, shared
):
    """Through shared memory the engines load on the same cores while the learner casts,
    so the learner casts with half its threads, and has them all back for the next step
    (also when the send fails)."""
    from rayrl.actors.learner import ActorLearner
    from rayrl.config import LearnerConfig, TrainingConfig

    # a learner runs in a process of its own; in this one, a vLLM engine an earlier test
    # started has replaced torch.set_num_threads with a no-op
    monkeypatch.setattr(torch, "set_num_threads", torch._C.set_num_threads)

    learner = ActorLearner(tiny_model, TrainingConfig(kl_coef=0.0), LearnerConfig(num_threads=4))
    learner._group, learner._shared = object(), (object() if shared else None)
    during = []

    def send(group, weights, spec, *args):
        during.append(torch.get_num_threads())
        if len(during) == 2:
            raise RuntimeError("engine went away")
        return 0

    monkeypatch.setattr(weight_sync, "send_weights", send)
    assert learner.broadcast_weights(1 << 20, version=1)["transport"] == (
        "shared memory" if shared else "broadcast"
    )
    with pytest.raises(RuntimeError, match="engine went away"):
        learner.broadcast_weights(1 << 20, version=2)
    assert during == ([2, 2] if shared else [4, 4])
    assert torch.get_num_threads() == 4
