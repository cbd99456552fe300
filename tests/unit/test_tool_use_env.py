"""The tool-driven text adventure: tool calls in, game rewards and tool statistics out."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs import make_environment

CALL = '{{"tool": "{name}", "arguments": {args}}}'


def make(max_turns=6, **params):
    return make_environment(
        EnvironmentConfig(name="text_adventure_tools", max_turns=max_turns, params=params)
    )


def test_valid_calls_play_the_game_and_are_counted():
    env = make()
    assert "Gold: 0" in env.reset()
    obs, reward, done, info = env.step(CALL.format(name="attack", args='{"enemy": "slime"}'))
    assert reward == 10.0 and "Gold: 5" in obs and info["valid_call"] and not done
    obs, reward, done, info = env.step("attack the slime")  # prose, not a tool call
    assert reward == 0.0 and "JSON" in obs and not info["valid_call"]
    obs, reward, done, info = env.step(CALL.format(name="level_up", args="{}"))
    assert reward == -1.0 and info["valid_call"]  # a valid call of a bad move
    assert info["successful_tool_calls"] == 2 and info["parse_errors"] == 1
    assert info["valid_call_rate"] == pytest.approx(2 / 3)
    assert env.episode_reward == pytest.approx(9.0)


def test_turn_limit_and_prompt():
    env = make(max_turns=2)
    assert "level_up" in env.get_prompt_prefix() and "JSON" in env.get_prompt_prefix()
    env.reset()
    assert env.step("hi")[2] is False
    assert env.step("hi")[2] is True
    with pytest.raises(RuntimeError):
        env.step("hi")


def test_react_parser_and_bad_params():
    env = make(parser="react")
    env.reset()
    obs, reward, _, info = env.step("Thought: gold\nAction: attack\nAction Input: slime")
    assert reward == 10.0 and info["valid_call"]
    with pytest.raises(ConfigError, match=r"environment\.params\.parser"):
        make(parser="xml")
    with pytest.raises(ConfigError, match=r"environment\.params"):
        make(game={"max_steps": "many"})


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_an_observation(text):
    env = make(max_turns=1)
    env.reset()
    obs, reward, done, info = env.step(text)
    assert isinstance(obs, str) and isinstance(reward, float) and done is True


def test_format_shaping_bonuses():
    env = make(valid_call_bonus=2.0, format_bonus=0.5, example='{"tool": "heal", "arguments": {}}')
    assert 'Example reply: {"tool": "heal"' in env.get_prompt_prefix()
    env.reset()
    _, reward, _, info = env.step(CALL.format(name="take", args='{"item": "potion"}'))
    assert reward == pytest.approx(1.0 + 2.0) and info["valid_call"]  # game +1, valid call +2
    _, reward, _, info = env.step('{"tool": "take", "arguments": {}}')  # attempt, missing argument
    assert reward == pytest.approx(0.5) and not info["valid_call"]
    _, reward, _, _ = env.step("take the potion")  # prose: no bonus
    assert reward == 0.0
    assert env.episode_reward == pytest.approx(3.5)


def test_calculator_demonstration_is_a_played_episode():
    from rayrl.envs.calculator_math import CalculatorMathEnvironment

    plain = CalculatorMathEnvironment(EnvironmentConfig(name="calculator_math"))
    assert plain.get_demonstration() == []
    env = CalculatorMathEnvironment(EnvironmentConfig(name="calculator_math", params={"demonstrations": 2}))
    demo = env.get_demonstration()
    assert [m["role"] for m in demo] == ["user", "assistant", "user", "assistant"] * 2
    assert demo[0]["content"] == "What is 12 * 34?"
    assert json.loads(demo[1]["content"])["tool"] == "calculator"
    assert demo[2]["content"] == "408" and demo[3]["content"] == "408"  # the tool's real output
    # playing the demonstration left the environment itself untouched
    first = env.reset({"a": 40, "b": 50})
    assert first == "What is 40 * 50?" and env.step("2000")[3]["correct"]
    with pytest.raises(ConfigError):
        CalculatorMathEnvironment(EnvironmentConfig(name="calculator_math", params={"demonstrations": 9}))
