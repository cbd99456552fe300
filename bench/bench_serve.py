"""rayrl benchmark: `rayrl serve` under a burst of concurrent chat requests on loopback,
against the same vLLM engine driven in-process with no HTTP or Ray Serve in between.

    .venv/bin/python bench/bench_serve.py [--target SmolLM2-135M-Instruct] [--requests 64] [--rounds 3]

Each round sends `--requests` chat completions at once (the real `openai` client, 32-token
replies, distinct prompts) and waits for all; latency is per request, from send to the
whole reply. The peer row runs the same prompts through a `RolloutWorker` (the engine
the deployment wraps) in this process, so the ratio is what serving adds.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompts(n: int, round_: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"What is {round_ * n + i} plus {i + 7}?"}] for i in range(n)]


def summarize(name: str, latencies: list[float], walls: list[float], tokens: int) -> dict:
    q = statistics.quantiles(latencies, n=20)
    return {
        "server": name,
        "requests": len(latencies),
        "p50_s": statistics.median(latencies),
        "p95_s": q[18],
        "requests_per_s": len(latencies) / sum(walls),
        "tokens_per_s": tokens / sum(walls),
    }


async def burst_serve(url: str, token: str, n: int, rounds: int, max_tokens: int) -> dict:
    from openai import AsyncOpenAI

    latencies, walls, tokens = [], [], 0
    async with AsyncOpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=600) as client:

        async def one(messages):
            t0 = time.perf_counter()
            reply = await client.chat.completions.create(
                model="policy", messages=messages, max_tokens=max_tokens, temperature=1.0
            )
            latencies.append(time.perf_counter() - t0)
            return reply.usage.completion_tokens

        await asyncio.gather(*(one(m) for m in prompts(8, 99)))  # warm-up
        latencies.clear()
        for r in range(rounds):
            t0 = time.perf_counter()
            tokens += sum(await asyncio.gather(*(one(m) for m in prompts(n, r))))
            walls.append(time.perf_counter() - t0)
    return summarize("rayrl serve (HTTP, Ray Serve)", latencies, walls, tokens)


async def burst_engine(model_path: str, inference, n: int, rounds: int, max_tokens: int) -> dict:
    import os

    from transformers import AutoTokenizer

    from rayrl.actors.rollout import RolloutWorker
    from rayrl.agent.chat_tokens import ChatTokens
    from rayrl.trainer import ACTOR_ENV

    os.environ.update(ACTOR_ENV)  # the engine settings the deployment's replica runs with

    chat = ChatTokens(AutoTokenizer.from_pretrained(model_path))
    worker = RolloutWorker(model_path, inference)
    await worker.start()
    latencies, walls, tokens = [], [], 0

    async def one(messages):
        t0 = time.perf_counter()
        gen = await worker.generate(chat.prompt_ids(messages), max_tokens, 1.0)
        latencies.append(time.perf_counter() - t0)
        return len(gen.token_ids)

    try:
        await asyncio.gather(*(one(m) for m in prompts(8, 99)))
        latencies.clear()
        for r in range(rounds):
            t0 = time.perf_counter()
            tokens += sum(await asyncio.gather(*(one(m) for m in prompts(n, r))))
            walls.append(time.perf_counter() - t0)
    finally:
        await worker.shutdown()
    return summarize("same engine in-process (peer)", latencies, walls, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target", default="SmolLM2-135M-Instruct", help="run directory, model folder or name"
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    from rayrl.serve import ServeConfig, deploy, served_policy, shutdown

    model_path, inference = served_policy(args.target)
    token = "bench"
    url = deploy(args.target, ServeConfig(port=_free_port(), token=token), inference)
    try:
        served = asyncio.run(burst_serve(url, token, args.requests, args.rounds, args.max_tokens))
    finally:
        shutdown()
        import ray

        ray.shutdown()
    peer = asyncio.run(burst_engine(model_path, inference, args.requests, args.rounds, args.max_tokens))
    rows = [served, peer]
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    print(
        f"serving / in-process requests per second: {served['requests_per_s'] / peer['requests_per_s']:.2f}"
    )


if __name__ == "__main__":
    main()
