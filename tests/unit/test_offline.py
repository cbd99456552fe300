"""Seed 003's offline path without actors: action episodes, the per-action reward weights and
their loss against float64 references, and trajectories as training rows with the real
SmolLM2 tokenizer."""

from __future__ import annotations

import asyncio
import random
import re

import numpy as np
import pytest
import torch

from rayrl.agent.actions import ActionResult, format_action, parse_action, take_action
from rayrl.algorithms.rwr import compute_rwr_loss, reward_weights
from rayrl.config import EnvironmentConfig
from rayrl.core.environment import BaseAgent, BaseEnvironment
from rayrl.envs.action_math import ActionMathEnvironment
from rayrl.offline.transcripts import build_dataset


# ---- seed 003, "Adapt to Your Domain", steps 1-3 as the seed writes them ------------------
def calculate_domain_reward(action: str) -> float:
    return {"action1": 1.0, "action2": 2.0, "action3": 3.0}.get(action, -1.0)


class YourEnvironment(BaseEnvironment):
    def get_valid_actions(self) -> list[str]:
        # Define your domain-specific actions
        return ["action1", "action2", "action3"]

    def step(self, action: str, params: str = None) -> ActionResult:
        # Implement action logic and rewards
        reward = calculate_domain_reward(action)
        observation, done = f"did {action}({params})", action == "action3"
        info = {"success": done and params == "final"}
        return ActionResult(observation, reward, done, info)


class YourAgent(BaseAgent):
    def select_action(self, state, valid_actions):
        # Add domain-specific intelligence
        best_action = valid_actions[min(state["step"], len(valid_actions) - 1)]
        action_params = "final" if best_action == "action3" else None
        return best_action, action_params


def test_the_seeds_environment_and_agent_snippets_collect_trajectories():
    env, agent = YourEnvironment(), YourAgent()
    problems = ["problem1", "problem2", "problem3"]
    trajectories = []
    for problem in problems:
        episode = asyncio.run(agent.run_episode(env, problem))
        if episode["success"]:
            trajectories.append(episode)
    assert len(trajectories) == 3
    first = trajectories[0]
    assert first["problem"] == "problem1" and first["observation"] == "problem1"  # the default reset
    assert [(s["action"], s["params"], s["reward"]) for s in first["actions"]] == [
        ("action1", None, 1.0),
        ("action2", None, 2.0),
        ("action3", "final", 3.0),
    ]
    assert first["total_reward"] == 6.0 and first["done"] and first["steps"] == 3


def test_an_episode_that_breaks_keeps_its_steps_and_says_why():
    class Flaky(YourEnvironment):
        def step(self, action, params=None):
            if action == "action2":
                raise RuntimeError("backend down")
            return super().step(action, params)

    episode = asyncio.run(YourAgent().run_episode(Flaky(), "p"))
    assert episode["steps"] == 1 and not episode["success"]
    assert episode["error"] == "RuntimeError: backend down"


def test_an_async_agent_plays_rayrls_text_environment():
    class Solver(BaseAgent):
        async def select_action(self, state, valid_actions):
            if valid_actions[0] == "state_answer":
                return "state_answer", "x = " + re.search(r"x = (-?\d+)", state["observation"]).group(1)
            return valid_actions[0], None

    env = ActionMathEnvironment(EnvironmentConfig(max_turns=6))
    episode = asyncio.run(Solver().run_episode(env, "Solve for x: 3x + 7 = 16"))
    assert [s["action"] for s in episode["actions"]] == [
        "identify_operation",
        "subtract_terms",
        "divide_terms",
        "state_answer",
    ]
    assert [s["reward"] for s in episode["actions"]] == [1.5, 2.0, 2.0, 3.0] and episode["success"]


def test_take_action_uses_whichever_step_the_environment_has():
    seed_env = YourEnvironment()
    seed_env.reset("p")
    assert take_action(seed_env, "action3", "final") == ActionResult(
        "did action3(final)", 3.0, True, {"success": True}
    )
    text_env = ActionMathEnvironment()
    text_env.reset({"a": 3, "b": 7, "c": 16})
    result = take_action(text_env, "state_answer", "x = 3")  # sent as "Action: state_answer(x = 3)"
    assert result.reward == 3.0 and result.done and result.info["correct"]

    class Broken(YourEnvironment):
        def step(self, action, params=None):
            return "only an observation"

    with pytest.raises(TypeError, match="must return"):
        take_action(Broken(), "action1")


@pytest.mark.parametrize(
    ("text", "valid", "expected"),
    [
        ("Action: subtract_terms", ["subtract_terms"], ("subtract_terms", None, True)),
        ("  Action: state_answer(x = -3)\n", None, ("state_answer", "x = -3", True)),
        ("Action: divide_terms", ["subtract_terms"], ("divide_terms", None, False)),  # not valid now
        ("I think\nAction: divide_terms(5x = 10)\nthen more", None, ("divide_terms", "5x = 10", False)),
        ("let us subtract_terms now", ["subtract_terms", "state_answer"], ("subtract_terms", "now", False)),
        ("no idea", ["subtract_terms"], (None, None, False)),
        ("", None, (None, None, False)),
    ],
)
def test_parse_action_reads_the_action_line_and_says_whether_it_was_well_formed(text, valid, expected):
    assert parse_action(text, valid) == expected


def test_format_and_parse_round_trip():
    for action, params in [("a_b", None), ("state_answer", "x = 3"), ("go", "(1, 2)")]:
        name, got, ok = parse_action(format_action(action, params))
        assert (name, got, ok) == (action, params, True)


# ---- reward-weighted regression against float64 references ---------------------------
def test_reward_weights_against_the_formula():
    rng = np.random.default_rng(0)
    r = rng.normal(size=37) * 3
    for temperature, cap in [(1.0, 20.0), (0.5, 5.0), (4.0, 1.5)]:
        raw = [min(np.exp((x - np.mean(r)) / temperature), cap) for x in r]
        expected = np.array(raw) / np.mean(raw)
        np.testing.assert_allclose(reward_weights(r, temperature, cap), expected, rtol=1e-12)
    # an explicit baseline, ranking kept, mean 1
    w = reward_weights([1.5, 2.0, 2.0, 3.0, -0.5], baseline=0.0)
    assert np.isclose(w.mean(), 1.0) and w[3] > w[1] == w[2] > w[0] > w[4]
    assert reward_weights([]).size == 0
    with pytest.raises(ValueError, match="temperature"):
        reward_weights([1.0], temperature=0)
    with pytest.raises(ValueError, match="finite"):
        reward_weights([1.0, float("nan")])


def test_rwr_loss_and_gradient_against_weighted_log_likelihood():
    torch.manual_seed(0)
    logits = torch.randn(6, 11, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 11, (6,))
    weights = torch.tensor([0.2, 0.2, 1.5, 1.5, 1.5, 3.0], dtype=torch.float64, requires_grad=True)
    lp = torch.log_softmax(logits, -1)[torch.arange(6), tokens]
    loss, clipped = compute_rwr_loss(lp, weights)
    loss.sum().backward()
    # reference: d/dlogits of -sum_i w_i log softmax(logits_i)[t_i] = w_i * (softmax_i - onehot_i)
    p = torch.softmax(logits.detach(), -1)
    onehot = torch.nn.functional.one_hot(tokens, 11).double()
    expected = weights.detach()[:, None] * (p - onehot)
    torch.testing.assert_close(logits.grad, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss.detach(), -(weights.detach() * lp.detach()))
    assert weights.grad is None and clipped.sum() == 0  # no gradient into the weights


# ---- trajectories as rows -------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(default_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model)


def solved_episode(problem: str, slip: bool = False) -> dict:
    class Solver(BaseAgent):
        def __init__(self):
            super().__init__(8)
            self.slipped = not slip

        def select_action(self, state, valid_actions):
            if not self.slipped:
                self.slipped = True
                return "divide_terms", None  # out of order: -0.5
            if valid_actions[0] == "state_answer":
                return "state_answer", "x = " + re.search(r"x = (-?\d+)", state["observation"]).group(1)
            return valid_actions[0], None

    return asyncio.run(Solver().run_episode(ActionMathEnvironment(EnvironmentConfig(max_turns=8)), problem))


def test_each_action_is_a_trained_turn_weighted_by_its_own_reward(tokenizer):
    episodes = [
        solved_episode("Solve for x: 3x + 7 = 16", slip=True),
        solved_episode("Solve for x: 2x + 1 = 9"),
    ]
    data = build_dataset(episodes, tokenizer, max_length=1024)
    assert len(data) == 2 and data.num_actions == 9
    assert data.actions == ["divide_terms", "identify_operation", "subtract_terms", "state_answer"]
    ids = data.table.column("input_ids").to_pylist()[0]
    mask = np.array(data.table.column("loss_mask").to_pylist()[0], bool)
    adv = np.array(data.table.column("advantages").to_pylist()[0])
    # the trained spans are exactly the action lines, each closed by the end-of-turn token
    spans, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    texts = [tokenizer.decode(ids[a:b]) for a, b in spans]
    assert texts == [
        "Action: divide_terms<|im_end|>",
        "Action: identify_operation<|im_end|>",
        "Action: subtract_terms<|im_end|>",
        "Action: divide_terms<|im_end|>",
        "Action: state_answer(x = 3)<|im_end|>",
    ]
    # what the model is shown between actions is the environment's observation
    assert "Result: divide_terms is not valid now" in tokenizer.decode(ids)
    # one weight per action, in the order of the rewards -0.5, 1.5, 2, 2, 3 (mean over all 9 actions)
    per_action = [float(adv[a]) for a, _ in spans]
    assert all(len(set(adv[a:b])) == 1 for a, b in spans) and not adv[~mask].any()
    rewards = [-0.5, 1.5, 2.0, 2.0, 3.0, 1.5, 2.0, 2.0, 3.0]
    np.testing.assert_allclose(per_action, reward_weights(rewards)[:5], rtol=1e-6)
    assert per_action[0] < 0.2 < per_action[1] < per_action[2] < per_action[4]
    # the prompt is the chat template's own rendering of the conversation so far
    prompt = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": data.system_prompt},
            {"role": "user", "content": episodes[0]["observation"]},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert tokenizer.decode(ids[: spans[0][0]]) == prompt


def test_too_long_empty_and_malformed_trajectories(tokenizer, caplog):
    ok = solved_episode("Solve for x: 3x + 7 = 16")
    empty = {**ok, "actions": []}
    data = build_dataset([ok, empty, ok], tokenizer, max_length=1024)
    assert len(data) == 2 and data.dropped_empty == 1
    data = build_dataset([ok], tokenizer, max_length=40)
    assert len(data) == 0 and data.dropped_too_long == 1
    assert "longer than max_length=40" in caplog.text
    with pytest.raises(ValueError, match="trajectory 1, step 0: needs 'action' and 'reward'"):
        build_dataset([ok, {"actions": [{"action": "a"}]}], tokenizer, 1024)
    with pytest.raises(ValueError, match="trajectory 0, step 0: reward 'high' is not a number"):
        build_dataset([{"actions": [{"action": "a", "reward": "high"}]}], tokenizer, 1024)
    with pytest.raises(ValueError, match="trajectory 0: expected a dict"):
        build_dataset(["text"], tokenizer, 1024)


def test_random_agents_collect_reproducibly():
    class Random(BaseAgent):
        def __init__(self, seed):
            super().__init__(5)
            self.rng = random.Random(seed)

        def select_action(self, state, valid_actions):
            return self.rng.choice(valid_actions), None

    env = ActionMathEnvironment(EnvironmentConfig(max_turns=5))
    a = asyncio.run(Random(1).run_episode(env, "Solve for x: 3x + 7 = 16"))
    b = asyncio.run(Random(1).run_episode(env, "Solve for x: 3x + 7 = 16"))
    assert [s["action"] for s in a["actions"]] == [s["action"] for s in b["actions"]]


def test_a_problem_the_environment_rejects_fails_alone():
    """test_inference's per-problem start: a bad problem is an episode with an error, not an
    exception that loses the other problems (no engine needed to start it)."""
    from transformers import AutoTokenizer

    from rayrl.model_store import resolve_model
    from rayrl.offline.trainer import AgenticTrainer, _quality

    trainer = AgenticTrainer.__new__(AgenticTrainer)  # only what _start reads
    trainer.actions, trainer.tokenizer = (
        None,
        AutoTokenizer.from_pretrained(resolve_model("SmolLM2-135M-Instruct")),
    )
    env = ActionMathEnvironment(EnvironmentConfig(max_turns=6))
    bad, good = (
        trainer._start("Solve for x: nothing here", env),
        trainer._start("Solve for x: 3x + 7 = 16", env),
    )
    assert bad.done and bad.error.startswith("ValueError: no equation") and bad.ids == []
    assert not good.done and good.ids and "identify_operation" in good.history[0]["content"]
    quality = _quality([bad], with_env=True)
    assert quality["results"][0]["error"] == bad.error and quality["accuracy"] == 0.0
