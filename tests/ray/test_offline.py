"""Seed 003's offline path on real actors: trajectories from an agent, LoRA fine-tuning with
per-action reward weights on rayrl's learner, the trained weights in the vLLM engine, and
the inference-quality metrics of the policy playing held-out problems."""

from __future__ import annotations

import asyncio
import json
import random
import re

import pytest

from rayrl.config import EnvironmentConfig
from rayrl.core.environment import BaseAgent
from rayrl.core.trainer import AgenticTrainer
from rayrl.envs.action_math import ActionMathEnvironment, equation_text


class Solver(BaseAgent):
    def select_action(self, state, valid_actions):
        if valid_actions[0] == "state_answer":
            return "state_answer", "x = " + re.search(r"x = (-?\d+)", state["observation"]).group(1)
        return valid_actions[0], None


def problems(n: int, seed: int, held_out: bool = False) -> list[str]:
    env, rng = ActionMathEnvironment(), random.Random(seed)
    draw = env.sample_eval_task if held_out else env.sample_task
    return [f"Solve for x: {equation_text(draw(rng))}" for _ in range(n)]


@pytest.mark.timeout(600)
def test_the_seeds_training_pipeline_learns_the_action_format(ray_local, tmp_path):
    env = ActionMathEnvironment(EnvironmentConfig(max_turns=6))
    agent = Solver(max_steps=6)

    async def main():
        # seed 003, "Step 3: Generate Training Data" and "Step 4: Train and Test"
        trajectories = []
        for problem in problems(8, seed=0):
            episode = await agent.run_episode(env, problem)
            if episode["success"]:
                trajectories.append(episode)
        trainer = AgenticTrainer(
            "SmolLM2-135M-Instruct",
            training_config={"batch_size": 4, "learning_rate": 2e-3, "epochs": 3},
            env=env,
            run_dir=tmp_path,
        )
        try:
            model, tokenizer, device = trainer.setup_model()
            dataset = trainer.prepare_training_data(trajectories)
            before = trainer.test_inference(test_problems[:3], max_actions=1)
            losses = await trainer.train(dataset)
            results = trainer.test_inference(test_problems)
            reply = model.generate(test_problems[0], max_tokens=8)  # the seed's endpoint's call
            assert isinstance(reply, str) and reply.strip()
            return trajectories, model, device, dataset, before, losses, results, trainer.ppo.run.path
        finally:
            trainer.close()

    test_problems = problems(6, seed=1, held_out=True)
    trajectories, model, device, dataset, before, losses, results, run = asyncio.run(main())

    assert len(trajectories) == 8 and device == "cpu"
    # LoRA r=8 on q_proj and v_proj of SmolLM2-135M: 30 layers x 8 x (576 + 576 + 576 + 192)
    assert model.trainable_parameters == 30 * 8 * (576 + 576 + 576 + 192)
    assert 0.003 < model.trainable_share < 0.004
    assert len(dataset) == 8 and dataset.num_actions == 32
    assert len(losses) == 3 * 2  # epochs x steps per epoch
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < 0.3 * first, losses
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["loss"] for row in lines] == pytest.approx(losses)

    # the base model does not write actions; the trained one solves held-out equations
    assert before["structure_score"] < 0.5 and before["accuracy"] == 0.0
    assert results["structure_score"] >= 0.9, results["results"]
    assert results["accuracy"] >= 0.8 and results["completion_rate"] >= results["accuracy"]
    assert 4.0 <= results["action_count"] <= 6.0
    assert results["mean_reward"] > 4  # of at most 8.5 a problem
    solved = next(r for r in results["results"] if r["success"])
    assert solved["actions"][0] == "Action: identify_operation"
    assert re.fullmatch(r"Action: state_answer\(x = -?\d+\)", solved["actions"][-1])
