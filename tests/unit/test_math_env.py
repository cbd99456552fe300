import random

import pytest

from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs import environment_class, make_environment
from rayrl.envs.math_feedback import MathFeedbackEnvironment, last_integer


def test_last_integer():
    assert last_integer("35 + 21= 56") == 56
    assert last_integer("the answer is -3.") == -3
    assert last_integer("1,024") == 1024
    assert last_integer("no digits") is None


def test_feedback_turn_then_discounted_reward():
    env = MathFeedbackEnvironment(EnvironmentConfig(max_turns=3))
    obs = env.reset({"a": 3, "b": 4})
    assert obs == "What is 3 + 4?"
    obs, reward, done, info = env.step("3 + 4 = 8")
    assert (reward, done, info["correct"]) == (0.0, False, False)
    assert "wrong" in obs.lower()
    obs, reward, done, info = env.step("It is 7")
    assert (reward, done, info["correct"], info["first_try"]) == (0.5, True, True, False)
    with pytest.raises(RuntimeError):
        env.step("7")


def test_episode_ends_after_max_turns():
    env = MathFeedbackEnvironment(EnvironmentConfig(max_turns=2))
    env.reset({"a": 1, "b": 1})
    assert env.step("3")[2] is False
    assert env.step("4")[2] is True
    assert env.episode_reward == 0.0


def test_tasks_and_held_out_tasks():
    env = MathFeedbackEnvironment(EnvironmentConfig(params={"max_operand": 9}))
    rng = random.Random(0)
    train = [env.sample_task(rng) for _ in range(50)]
    held = [env.sample_eval_task(rng) for _ in range(50)]
    assert all(0 <= t["a"] <= 9 and 0 <= t["b"] <= 9 for t in train)
    assert all(10 <= t["a"] <= 99 for t in held)


def test_bad_params_name_the_key():
    with pytest.raises(ConfigError, match=r"environment\.params\.max_operand"):
        MathFeedbackEnvironment(EnvironmentConfig(params={"max_operand": "lots"}))
    with pytest.raises(ConfigError, match=r"environment\.params\.nope"):
        make_environment(EnvironmentConfig(params={"nope": 1}))


def test_environment_lookup():
    assert environment_class("math_feedback") is MathFeedbackEnvironment
    assert environment_class("rayrl.envs.math_feedback:MathFeedbackEnvironment") is MathFeedbackEnvironment
    with pytest.raises(ConfigError, match="not built in"):
        environment_class("chess")
    with pytest.raises(ConfigError, match="cannot import"):
        environment_class("no.such.module:Env")
