"""Seed 003's math demo on rayrl: collect action trajectories with a scripted agent, fine-tune
LoRA adapters on them (reward-weighted per action), and compare the policy before and after
on held-out equations.

    .venv/bin/python jobs/seed_action_math/math_demo.py

The agent knows the solution steps but slips: with probability `--noise` it takes an action
that is not valid yet (reward -0.5) before the right one. Only solved episodes are kept (as
in the seed); within them the slips weigh far less than the right steps, so the policy
learns the steps, not the slips. Held-out equations have larger coefficients and negative
numbers (`ActionMathEnvironment.sample_eval_task`).

Sized for a 2-core CPU (about 10 minutes): 96 problems, 3 epochs of batches of 8, learning
rate 1e-3 (the seed's 1e-4 with batches of 1 takes ten times the steps).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from pathlib import Path

from rayrl.config import EnvironmentConfig
from rayrl.core.environment import BaseAgent
from rayrl.core.trainer import AgenticTrainer
from rayrl.envs.action_math import ActionMathEnvironment, equation_text


class MathAgent(BaseAgent):
    """Takes the valid step; with probability `noise` first an invalid one."""

    def __init__(self, noise: float, seed: int, max_steps: int = 8):
        super().__init__(max_steps)
        self.noise = noise
        self.rng = random.Random(seed)

    def select_action(self, state, valid_actions):
        step = valid_actions[0]
        if self.rng.random() < self.noise:
            return self.rng.choice(["divide_terms", "subtract_terms", "guess"]), None
        if step == "state_answer":
            x = re.search(r"x = (-?\d+)", state["observation"])
            return "state_answer", f"x = {x.group(1) if x else 0}"
        return step, None


def problems(n: int, seed: int, held_out: bool) -> list[str]:
    env, rng = ActionMathEnvironment(), random.Random(seed)
    draw = env.sample_eval_task if held_out else env.sample_task
    return [f"Solve for x: {equation_text(draw(rng))}" for _ in range(n)]


def show(name: str, r: dict) -> None:
    print(
        f"{name:>7}: accuracy {r['accuracy']:.3f}  completion {r['completion_rate']:.3f}  "
        f"structure {r['structure_score']:.3f}  actions/problem {r['action_count']:.2f}  "
        f"reward {r['mean_reward']:.2f}"
    )


async def main(args: argparse.Namespace) -> dict:
    env = ActionMathEnvironment(EnvironmentConfig(max_turns=8))
    agent = MathAgent(args.noise, args.seed)
    episodes = [await agent.run_episode(env, p) for p in problems(args.train_problems, args.seed, False)]
    trajectories = [e for e in episodes if e["success"]]
    slips = sum(s["reward"] < 0 for e in trajectories for s in e["actions"])
    print(
        f"collected {len(episodes)} episodes, kept {len(trajectories)} solved ones ({slips} slipped actions in them)"
    )

    trainer = AgenticTrainer(
        args.model,
        lora_config={"rank": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
        training_config={
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "epochs": args.epochs,
            "max_actions": 6,
            "max_new_tokens": 24,
        },
        env=env,
        run_dir=args.run_dir,
    )
    try:
        model, tokenizer, device = trainer.setup_model()
        print(
            f"model {args.model} on {device}: {model.trainable_parameters:,} of {model.total_parameters:,} "
            f"parameters trainable ({100 * model.trainable_share:.2f}%)"
        )
        dataset = trainer.prepare_training_data(trajectories)
        test = problems(args.test_problems, args.seed + 1, True)
        before = trainer.test_inference(test)
        t0 = time.perf_counter()
        losses = await trainer.train(dataset)
        train_s = time.perf_counter() - t0
        after = trainer.test_inference(test)
        k = max(1, len(losses) // 10)
        first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
        print(
            f"loss, first {k} steps -> last {k}: {first:.3f} -> {last:.3f} ({len(losses)} steps, {train_s:.0f} s)"
        )
        show("before", before)
        show("after", after)
        print("an episode after training:", json.dumps(after["results"][0], default=str))
        summary = {
            "episodes": len(episodes),
            "trajectories": len(trajectories),
            "trainable_share": model.trainable_share,
            "losses": losses,
            "loss_first": first,
            "loss_last": last,
            "train_seconds": train_s,
            "before": {k: v for k, v in before.items() if k != "results"},
            "after": {k: v for k, v in after.items() if k != "results"},
            "run": str(trainer.ppo.run.path),
        }
        Path(trainer.ppo.run.path / "demo_summary.json").write_text(json.dumps(summary, indent=1))
        return summary
    finally:
        trainer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--train-problems", type=int, default=96)
    parser.add_argument("--test-problems", type=int, default=32)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default="runs")
    asyncio.run(main(parser.parse_args()))
