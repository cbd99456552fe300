"""How long a vLLM engine takes to load one weight sync, by loading path, in one process.

    .venv/bin/python bench/bench_sync_load.py [--repeats 3] [--dtype auto]

Builds one vLLM engine on the default model in this process, lays the model's weights
out in the buckets the learner sends (checkpoint order, perturbed so that every sync
changes them), and loads them alternately through vLLM's layer-wise reload and through
`DirectLoad`. After the first load of each path it checks that the two leave the same
weights (every GEMM read back through its kernel) and the same log-probs. Then, where the
CPU has AMX, it switches the GEMM layers to the kernel that reads blocked weights
(`inference.blocked_sync`) and loads buckets laid out that way. No Ray, no wire: the
engine's side of a sync on its own. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="auto", help="the engine's dtype (auto: as rayrl picks)")
    args = parser.parse_args()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    import torch
    from bench_grpo import print_table  # this folder is on the path when run as a script
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from vllm import EngineArgs, LLMEngine, SamplingParams
    from vllm.inputs import TokensPrompt

    from rayrl import weight_sync
    from rayrl.actors.vllm_ext import (
        DirectLoad,
        LayerwiseLoad,
        WeightSyncExtension,
        _gemm_weights,
        _shared_parameters,
    )
    from rayrl.hardware import resolve_dtype
    from rayrl.model_store import resolve_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = resolve_dtype(args.dtype, device)
    path = resolve_model("SmolLM2-135M-Instruct")
    engine = LLMEngine.from_engine_args(
        EngineArgs(model=path, dtype=dtype, max_model_len=1024, enforce_eager=True, seed=0)
    )
    worker = engine.model_executor.driver_worker.worker
    worker._rayrl_aliases = _shared_parameters(worker.model_runner.model)
    model = worker.model_runner.model

    # the learner's order and names, from a Hugging Face load of the same checkpoint
    order = [n for n, _ in AutoModelForCausalLM.from_pretrained(path).named_parameters()]
    saved = load_file(os.path.join(path, "model.safetensors"))
    spec = [weight_sync.TensorSpec(n, tuple(saved[n].shape), dtype) for n in order]
    gen = torch.Generator().manual_seed(0)

    def perturbed(scale: float) -> dict:
        out = {}
        for n in order:
            w = saved[n].float()
            out[n] = (w + scale * w.std() * torch.randn(w.shape, generator=gen)).to(
                weight_sync.torch_dtype(dtype)
            )
        return out

    def buckets(weights: dict, spec: list):
        for bucket in weight_sync.plan_buckets(spec):
            flat = torch.cat([weights[spec[i].name].reshape(-1) for i in bucket]).to(device)
            views, offset = [], 0
            for i in bucket:
                part = flat[offset : offset + spec[i].numel]
                if spec[i].layout == weight_sync.BLOCKED:
                    weight_sync.to_blocked(part.view(spec[i].shape).clone(), part)
                views.append((spec[i].name, part.view(spec[i].shape)))
                offset += spec[i].numel
            yield views

    def load(loader, weights: dict, spec: list = spec) -> float:
        staged = list(buckets(weights, spec))  # as received: the timing is the engine's load alone
        t = time.perf_counter()
        with torch.no_grad():
            for bucket in staged:
                loader.load(bucket)
            loader.finish()
        return time.perf_counter() - t

    def prompt_logprobs() -> torch.Tensor:
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0)
        engine.add_request(
            f"r{time.monotonic_ns()}", TokensPrompt(prompt_token_ids=list(range(100, 140))), params
        )
        done = []
        while engine.has_unfinished_requests():
            done += [o for o in engine.step() if o.finished]
        return torch.tensor([next(iter(d.values())).logprob for d in done[0].prompt_logprobs[1:]])

    plan = DirectLoad.plan(model, spec)
    if plan is None:
        raise SystemExit("the direct path does not apply to this model")
    weights = perturbed(0.05)
    load(LayerwiseLoad(worker, spec), weights)
    general = (prompt_logprobs(), {k: v.clone() for k, v in _gemm_weights(model, set(order)).items()})
    load(plan.start(spec), weights)
    direct = (prompt_logprobs(), _gemm_weights(model, set(order)))
    same_logprobs = torch.equal(general[0], direct[0])
    same_gemms = all(torch.equal(general[1][k], direct[1][k]) for k in general[1])

    times: dict[str, list[float]] = {"layer-wise (vLLM's general reload)": [], "direct": []}
    for _ in range(args.repeats):
        times["layer-wise (vLLM's general reload)"].append(load(LayerwiseLoad(worker, spec), weights))
        times["direct"].append(load(plan.start(spec), weights))
    blocked = weight_sync.with_blocked(
        spec, [WeightSyncExtension.rayrl_blocked_weights(worker, weight_sync.to_wire(spec))]
    )
    blocked_rows = []
    if any(t.layout == weight_sync.BLOCKED for t in blocked):
        name = "direct, GEMMs on the AMX kernel, sent blocked"
        times[name] = [load(plan.start(blocked), weights, blocked) for _ in range(args.repeats)]
        gap = (prompt_logprobs() - direct[0]).abs().max().item()
        same = all(torch.equal(direct[1][k], v) for k, v in _gemm_weights(model, set(order)).items())
        blocked_rows = [
            ("blocked: same GEMM weights as direct", str(same)),
            ("blocked: log-prob gap to direct (other kernel), max", f"{gap:.4f}"),
        ]
    size = sum(t.numel for t in spec) * weight_sync.torch_dtype(dtype).itemsize
    rows = [("weights", f"{size / 1e6:.0f} MB, {dtype}, {device}, {torch.get_num_threads()} threads")]
    for name, runs in times.items():
        med = statistics.median(runs)
        rows.append(
            (f"load, {name} (s, median of {args.repeats})", f"{med:.3f} ({size / med / 1e9:.2f} GB/s)")
        )
    rows.append(("same log-probs and GEMM weights after either", str(same_logprobs and same_gemms)))
    print_table(rows + blocked_rows)


if __name__ == "__main__":
    main()
