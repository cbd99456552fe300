"""The built-in environments: scripted episodes, limits, bad params, arbitrary text."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs import BUILTIN_ENVIRONMENTS, make_environment
from rayrl.envs.action_math import ActionMathEnvironment, parse_action, parse_answer
from rayrl.envs.conversation import ConversationEnvironment, TaskEnvironment
from rayrl.envs.games import GuessNumberGame as GuessNumber
from rayrl.envs.gym_adapter import GymTextEnvironment
from rayrl.envs.text_adventure import TextAdventureEnvironment

SCENARIO = {
    "id": "python_help",
    "user_responses": ["Can you help me learn Python?", "Which Python projects suit beginners?", "Thanks!"],
}
TRIP = {
    "id": "trip",
    "goal": "Plan a weekend trip to Paris.",
    "success_criteria": [{"name": "budget", "keywords": ["cost", "budget"]}, "Paris", {"regex": r"day\s*\d"}],
    "forbidden": ["guarantee"],
}


def make_guess_number(max_guesses: int = 3) -> GuessNumber:
    return GuessNumber(max_guesses=max_guesses)


def cfg(name: str = "math_feedback", **kw) -> EnvironmentConfig:
    return EnvironmentConfig(name=name, **kw)


def play(env, actions):
    """(rewards, dones, last info) of `actions` played in order."""
    rewards, dones, info = [], [], {}
    for action in actions:
        _, reward, done, info = env.step(action)
        rewards.append(reward)
        dones.append(done)
    return rewards, dones, info


# ---- text adventure -------------------------------------------------------------
def test_adventure_good_episode_wins_at_level_3():
    env = TextAdventureEnvironment(cfg())
    assert "HP: 100/100" in env.reset()
    assert "level up" in env.get_prompt_prefix()
    rewards, dones, info = play(env, ["attack slime"] * 6 + ["Level_Up", "LEVEL-UP", "I level  up"])
    assert rewards == [10.0] * 6 + [20.0] * 3
    assert dones == [False] * 8 + [True]
    assert info["won"] and info["success"] and env.level == 3 and env.gold == 0
    assert env.episode_reward == 120.0
    with pytest.raises(RuntimeError):
        env.step("attack slime")


def test_adventure_bad_actions_and_potions():
    env = TextAdventureEnvironment(cfg())
    env.reset()
    rewards, _, _ = play(
        env, ["heal", "level up", "dance", "attack goblin", "take potion", "heal", "pick up a rock"]
    )
    assert rewards == [-0.5, -1.0, -0.1, -5.0, 1.0, 2.0, 0.5]
    assert env.player_hp == 100 and env.inventory == []


def test_adventure_death_and_step_limit():
    env = TextAdventureEnvironment(cfg(params={"max_steps": 20}))
    env.reset()
    _, dones, info = play(env, ["attack the goblin"] * 10)
    assert dones == [False] * 9 + [True] and info["died"] and not info["success"]
    env = TextAdventureEnvironment(cfg())
    env.reset()
    _, dones, info = play(env, ["look around"] * 10)
    assert dones == [False] * 9 + [True] and not info["died"] and not info["won"]


# ---- conversation -------------------------------------------------------------------
def test_conversation_scripted_episode():
    env = ConversationEnvironment(cfg(max_turns=5), scenarios=[SCENARIO])
    assert env.reset("python_help") == "Can you help me learn Python?"
    obs, reward, done, info = env.step("Sure, I can help you learn Python step by step.")
    # content words of the user turn: help, learn, python -> all three repeated
    assert (obs, reward, done, info["overlap"]) == (
        SCENARIO["user_responses"][1],
        pytest.approx(1.0),
        False,
        1.0,
    )
    obs, reward, done, _ = env.step("Try a weather app.")
    assert reward == pytest.approx(0.2) and not done and obs == "Thanks!"
    obs, reward, done, info = env.step("   ")
    assert (obs, reward, done, info["empty"]) == ("", -1.0, True, True)
    with pytest.raises(RuntimeError):
        env.step("hello")


def test_conversation_max_turns_and_tasks():
    env = ConversationEnvironment(cfg(max_turns=1, params={"scenarios": [SCENARIO]}))
    task = env.sample_task(random.Random(0))
    assert task["id"] == "python_help"
    env.reset(task)
    assert env.step("hi")[2] is True
    with pytest.raises(ValueError, match="unknown scenario"):
        env.reset("nope")
    with pytest.raises(ConfigError, match=r"environment\.params\.scenarios"):
        ConversationEnvironment(cfg()).sample_task(random.Random(0))


def test_conversation_bad_params():
    with pytest.raises(ConfigError, match=r"environment\.params\.scenarios\.0\.user_responses"):
        ConversationEnvironment(cfg(params={"scenarios": [{"id": "x", "user_responses": []}]}))
    with pytest.raises(ConfigError, match=r"environment\.params\.overlap_weight"):
        ConversationEnvironment(cfg(params={"overlap_weight": -1}))
    with pytest.raises(ConfigError, match=r"scenarios\.0\.id"):
        ConversationEnvironment(cfg(), scenarios=[{"user_responses": ["hi"]}])


# ---- task ---------------------------------------------------------------------------
def test_task_criteria_met_across_turns():
    env = TaskEnvironment(cfg(max_turns=4), tasks=[TRIP])
    assert env.reset("trip") == TRIP["goal"]
    obs, reward, done, info = env.step("The total cost is about 300 euros.")
    assert (reward, done, info["success"], info["met"]) == (0.0, False, False, ["budget"])
    assert "Paris" in obs and info["missing"] == ["Paris", r"day\s*\d"]
    obs, reward, done, info = env.step("Day 1: the Louvre in PARIS.")
    assert (reward, done, info["success"], info["missing"]) == (1.0, True, True, [])
    with pytest.raises(RuntimeError):
        env.step("more")


def test_task_forbidden_word_and_max_turns():
    env = TaskEnvironment(cfg(max_turns=4), tasks=[TRIP])
    env.reset("trip")
    _, reward, done, info = env.step("Paris, day 1, low cost, I guarantee it.")
    assert (reward, done, info["success"], info["violated"]) == (0.0, True, False, ["guarantee"])
    env.reset({**TRIP, "max_turns": 2})
    assert play(env, ["hmm", "well"])[1] == [False, True]
    seed_style = {
        "id": "t",
        "prompt": "Plan",
        "required_actions": [{"name": "budget", "keywords": ["budget"]}],
    }
    env.reset(seed_style)
    assert env.step("A budget of 100.")[1] == 1.0


def test_task_bad_params():
    with pytest.raises(ConfigError, match=r"environment\.params\.tasks\.0\.success_criteria\.0"):
        TaskEnvironment(
            cfg(params={"tasks": [{"id": "t", "goal": "g", "success_criteria": [{"regex": "("}]}]})
        )
    with pytest.raises(ConfigError, match=r"environment\.params\.tasks\.0"):
        TaskEnvironment(cfg(params={"tasks": [{"id": "t", "success_criteria": ["x"]}]}))
    with pytest.raises(ConfigError, match=r"environment\.params\.success_reward"):
        TaskEnvironment(cfg(params={"success_reward": "high"}))


# ---- action math ----------------------------------------------------------------
def test_action_grammar():
    assert parse_action("I will  Subtract-Terms now") == ("subtract_terms", " now")
    assert parse_action("identify operation, then divide_terms")[0] == "identify_operation"
    assert parse_action("nothing here") == (None, "")
    assert parse_answer(": the answer is x = -3.0 since 3*3") == -3.0
    assert parse_answer("(4)") == 4.0 and parse_answer("") is None


def test_action_math_good_episode():
    env = ActionMathEnvironment(cfg(max_turns=6))
    obs = env.reset({"a": 3, "b": 7, "c": 16})
    assert "3x + 7 = 16" in obs and "identify_operation" in obs
    actions = ["identify_operation", "subtract_terms", "divide_terms", "state_answer: x = 3"]
    observations = []
    for action in actions:
        observations.append(env.step(action))
    assert [o[1] for o in observations] == [1.5, 2.0, 2.0, 3.0]
    assert [o[2] for o in observations] == [False, False, False, True]
    assert observations[1][0].startswith("3x = 9") and observations[2][0].startswith("x = 3")
    assert observations[3][3]["correct"] and env.episode_reward == 8.5
    with pytest.raises(RuntimeError):
        env.step("state_answer: x = 3")


def test_action_math_bad_episode_and_limit():
    env = ActionMathEnvironment(cfg(max_turns=4))
    env.reset({"a": 2, "b": -4, "c": 6, "x": 5})
    obs, reward, done, info = env.step("divide_terms")
    assert (reward, done, info["valid"]) == (-0.5, False, False)
    assert "Valid actions: identify_operation, state_answer" in obs
    assert env.step("just vibes")[1] == -0.5
    assert env.step("state_answer: x = 4")[1:3] == (-1.0, False)
    obs, reward, done, info = env.step("State Answer: x = 5")
    assert (reward, done, info["success"]) == (3.0, True, True)
    env.reset({"a": 2, "b": 1, "c": 5})
    assert play(env, ["?"] * 4)[1] == [False, False, False, True]


def test_action_math_tasks():
    env = ActionMathEnvironment(cfg())
    rng = random.Random(0)
    for task in [env.sample_task(rng) for _ in range(50)]:
        assert 2 <= task["a"] <= 9 and 0 <= task["x"] <= 10 and 1 <= task["b"] <= 20
        assert task["a"] * task["x"] + task["b"] == task["c"]
    held = [env.sample_eval_task(rng) for _ in range(50)]
    assert all(t["b"] != 0 and t["a"] * t["x"] + t["b"] == t["c"] for t in held)
    assert any(t["x"] < 0 for t in held) and any(t["a"] > 9 for t in held)
    assert env.sample_task(random.Random(3)) == env.sample_task(random.Random(3))


def test_action_math_bad_params():
    with pytest.raises(ConfigError, match=r"environment\.params\.max_coefficient"):
        ActionMathEnvironment(cfg(params={"max_coefficient": 1}))
    with pytest.raises(ConfigError, match=r"environment\.params\.step_rewards"):
        ActionMathEnvironment(cfg(params={"step_rewards": {"guess": 1.0}}))


# ---- gymnasium adapter -----------------------------------------------------------
def test_gym_adapter_episode_with_options_and_seed():
    env = GymTextEnvironment(cfg(), env=GuessNumber())
    assert env.reset({"target": 7}).startswith("I picked a whole number from 1 to 10. You have 3 guesses.")
    obs, reward, done, info = env.step("I guess 3")
    assert (obs, reward, done, info["guess"], info["truncated"]) == (
        "No, my number is higher than 3.",
        0.0,
        False,
        3,
        False,
    )
    assert env.step("7")[1:3] == (1.0, True)
    with pytest.raises(RuntimeError):
        env.step("7")
    task = env.sample_task(random.Random(0))
    env.reset(task)
    first = env.env.target
    env.reset(task)
    assert env.env.target == first


def test_gym_adapter_truncation_is_done():
    env = GymTextEnvironment(cfg(), env=GuessNumber(max_guesses=2))
    env.reset({"target": 9})
    _, dones, info = play(env, ["1", "2"])
    assert dones == [False, True] and info["truncated"] and not info["terminated"]


def test_gym_adapter_from_params_and_bad_params():
    params = {"env": f"{__name__}:make_guess_number", "env_kwargs": {"max_guesses": 1}}
    env = make_environment(cfg("gym", params=params))
    env.reset({"target": 2})
    assert env.step("5")[2] is True
    with pytest.raises(ConfigError, match=r"environment\.params\.env"):
        GymTextEnvironment(cfg())
    with pytest.raises(ConfigError, match=r"environment\.params\.env.*cannot import"):
        GymTextEnvironment(cfg(params={"env": "no.such.module:make"}))
    with pytest.raises(ConfigError, match=r"environment\.params\.env"):
        GymTextEnvironment(cfg(params={"env": "not a path"}))
    with pytest.raises(ConfigError, match="has no reset"):
        GymTextEnvironment(cfg(), env=object())


# ---- every environment ------------------------------------------------------------
FACTORIES = {
    "text_adventure": (lambda: TextAdventureEnvironment(cfg(params={"max_steps": 5})), None),
    "conversation": (lambda: ConversationEnvironment(cfg(max_turns=3), scenarios=[SCENARIO]), "python_help"),
    "task": (lambda: TaskEnvironment(cfg(max_turns=3), tasks=[TRIP]), "trip"),
    "action_math": (lambda: ActionMathEnvironment(cfg(max_turns=5)), {"a": 3, "b": 7, "c": 16}),
    "gym": (lambda: GymTextEnvironment(cfg(), env=GuessNumber()), {"target": 4}),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
@settings(max_examples=100, deadline=None)
@given(actions=st.lists(st.text(), min_size=1, max_size=6))
def test_arbitrary_text_never_raises(name, actions):
    factory, task = FACTORIES[name]
    env = factory()
    env.reset(task)
    for action in actions:
        obs, reward, done, info = env.step(action)
        assert isinstance(obs, str) and isinstance(reward, float)
        assert isinstance(done, bool) and isinstance(info, dict)
        if done:
            break


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_async_path(name):
    factory, task = FACTORIES[name]
    env = factory()

    async def episode():
        first = await env.areset(task)
        return first, await env.astep("attack slime")

    first, (obs, reward, done, info) = asyncio.run(episode())
    assert isinstance(first, str) and isinstance(obs, str) and isinstance(reward, float)
    assert env.step_count == 1


@pytest.mark.parametrize(
    "name, cls",
    [
        ("text_adventure", TextAdventureEnvironment),
        ("conversation", ConversationEnvironment),
        ("task", TaskEnvironment),
        ("action_math", ActionMathEnvironment),
    ],
)
def test_lookup_by_name(name, cls):
    assert BUILTIN_ENVIRONMENTS[name] is cls
    assert type(make_environment(cfg(name))) is cls
    assert BUILTIN_ENVIRONMENTS["gym"] is GymTextEnvironment
