"""rayrl benchmark: time to a run's first batch of tasks from a 100-row and a 1-million-row
JSONL file, read through Ray Data (`rayrl.data.DataTasks`) on a local Ray whose CPUs a
placement group holds (as a run's roles do), and rows per second after that.

    .venv/bin/python bench/bench_data.py [--rows 100 1000000] [--batch 16] [--draw 20000]

The peer row reads the same big file with plain Python (`json.loads` per line) to its
end, which is what a reader that loads the dataset before training pays.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def write(path: Path, rows: int) -> None:
    with path.open("w") as f:
        for i in range(rows):
            f.write(
                json.dumps({"question": f"What is {i} + {i % 97}?", "answer": i + i % 97, "id": i}) + "\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 1_000_000])
    parser.add_argument("--batch", type=int, default=16, help="tasks in the first batch (a step's draw)")
    parser.add_argument("--draw", type=int, default=20_000, help="rows drawn after the first batch")
    args = parser.parse_args()

    import ray
    from ray.util.placement_group import placement_group

    from rayrl.config import DataConfig
    from rayrl.data import DataTasks

    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    held = placement_group([{"CPU": 1}] * 4)  # every CPU, as a run's roles hold them
    ray.get(held.ready())
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        warm = Path(scratch) / "warm.jsonl"  # Ray Data's first dataset in a process starts its stats actor
        write(warm, 10)
        cfg = DataConfig(train_files=[str(warm)], prompt_key="question")
        DataTasks(cfg, cfg.train_files, seed=0, model_path=None).first(1)
        for n in args.rows:
            path = Path(scratch) / f"rows_{n}.jsonl"
            write(path, n)
            size_mb = path.stat().st_size / 1e6
            cfg = DataConfig(train_files=[str(path)], prompt_key="question")
            t0 = time.perf_counter()
            tasks = DataTasks(cfg, cfg.train_files, seed=0, model_path=None)
            tasks.draw(args.batch)
            first = time.perf_counter() - t0
            drawn = min(args.draw, n)
            t1 = time.perf_counter()
            tasks.draw(drawn)
            rate = drawn / (time.perf_counter() - t1)
            tasks.close()
            results.append(
                {
                    "reader": "rayrl.data (Ray Data)",
                    "rows": n,
                    "MB": size_mb,
                    "first_batch_s": first,
                    "rows_per_s": rate,
                }
            )
        big = Path(scratch) / f"rows_{max(args.rows)}.jsonl"
        t0 = time.perf_counter()
        with big.open() as f:
            loaded = [json.loads(line) for line in f]
        whole = time.perf_counter() - t0
        results.append(
            {
                "reader": "plain json.loads of the whole file (peer)",
                "rows": len(loaded),
                "MB": big.stat().st_size / 1e6,
                "first_batch_s": whole,
                "rows_per_s": len(loaded) / whole,
            }
        )
    ray.shutdown()
    print("| " + " | ".join(results[0]) + " |")
    print("|" + "---|" * len(results[0]))
    for r in results:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()
