"""Reward functions: built-ins on clear cases, composition, the decorator and config loading."""

import asyncio
import math
import threading
import time

import pytest

from rayrl.config import ConfigError
from rayrl.rewards import (
    UNSAFE_PATTERNS,
    CompositeReward,
    ConcisenessReward,
    CorrectnessReward,
    EngagementReward,
    EpisodeTranscript,
    FormatReward,
    FunctionReward,
    HelpfulnessReward,
    RewardFunction,
    RewardResult,
    RewardType,
    SafetyReward,
    key_terms,
    load_reward,
    reward_function,
)


def transcript(response: str = "", *user_turns: str, **fields) -> EpisodeTranscript:
    """A conversation of alternating user turns and canned replies, ending with `response`."""
    messages = []
    for i, text in enumerate(user_turns):
        messages.append({"role": "user", "content": text})
        if i < len(user_turns) - 1:
            messages.append({"role": "assistant", "content": f"reply {i}"})
    return EpisodeTranscript(messages=messages, response=response, **fields)


def my_reward(episode: EpisodeTranscript) -> float:
    """Loaded by path in test_load_reward_from_a_function_path."""
    return 0.25 if episode.response else 0.0


class Boom(RewardFunction):
    def compute(self, episode):
        raise RuntimeError("boom")


class Constant(RewardFunction):
    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self.value = value

    def compute(self, episode):
        return RewardResult(self.value, {"value": self.value}, {"note": "constant"})


# ---- transcript ---------------------------------------------------------------------


def test_from_summary_reads_the_seed_keys():
    summary = {
        "total_reward": 15.5,
        "num_turns": 3,
        "tools": {"successful_tool_calls": 2, "failed_tool_calls": 1},
        "messages": [
            {"role": "system", "content": "Play the game."},
            {"role": "user", "content": "You see a slime."},
            {"role": "assistant", "content": "attack slime"},
        ],
        "episode_id": "e1",
    }
    ep = EpisodeTranscript.from_summary(summary, reference="42")
    assert (ep.total_reward, ep.num_turns) == (15.5, 3)
    assert (ep.successful_tool_calls, ep.failed_tool_calls) == (2, 1)
    assert ep.response == "attack slime"
    assert ep.question == "You see a slime."
    assert ep.reference == "42"
    assert ep.info == {"episode_id": "e1"}


def test_from_summary_failed_calls_from_total_and_defaults():
    ep = EpisodeTranscript.from_summary(
        {"tools": {"successful_tool_calls": 1, "total_tool_calls": 4}, "turn_rewards": [1, 0.5]}
    )
    assert ep.failed_tool_calls == 3
    assert ep.total_reward == 1.5
    assert (ep.response, ep.num_turns, ep.messages) == ("", 0, [])


def test_a_separate_response_joins_the_messages():
    ep = EpisodeTranscript(messages=[{"role": "user", "content": "Hi?"}], response="Hello!")
    assert ep.messages[-1] == {"role": "assistant", "content": "Hello!"}
    assert (ep.num_turns, ep.question, ep.assistant_messages) == (1, "Hi?", ["Hello!"])
    # the same reply given both ways is not duplicated; a trailing feedback turn is not the question
    again = EpisodeTranscript(
        messages=ep.messages + [{"role": "user", "content": "Correct!"}], response="Hello!"
    )
    assert (again.num_turns, again.question) == (1, "Hi?")


def test_call_takes_a_summary_dict_like_a_seed_reward_fn():
    summary = {"tools": {"successful_tool_calls": 3, "failed_tool_calls": 1}, "total_reward": 2.0}
    assert FormatReward()(summary) == 0.75


# ---- correctness ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference, response, expected",
    [
        ("\\frac{1}{2}", "0.5", 1.0),
        ("0.5", "So x = $\\frac{1}{2}$", 1.0),
        (42, "The answer is 42", 1.0),
        ("42", "First I got 40, then the final answer is \\boxed{42}", 1.0),
        (42, "The answer is 41", 0.0),
        ("\\frac{1}{2}", "0.25", 0.0),
        ("Paris", "  paris. ", 1.0),
        ("Paris", "London", 0.0),
        ("Paris", "The capital is Paris", 0.0),
    ],
)
def test_correctness(reference, response, expected):
    result = CorrectnessReward().compute(transcript(response, "Q?", reference=reference))
    assert result.score == expected, result.metadata
    assert result.breakdown == {"correct": expected}


def test_correctness_compares_math_mathematically_and_words_as_strings():
    reward = CorrectnessReward()
    math_result = reward.compute(transcript("The answer is 42", "Q?", reference=42))
    assert math_result.metadata["mode"] == "math" and "42" in math_result.metadata["extracted"]
    assert reward.compute(transcript("paris", "Q?", reference="Paris")).metadata["mode"] == "string"


def test_correctness_reads_the_task_answer_and_needs_a_reference():
    reward = CorrectnessReward()
    assert reward.compute(transcript("7", "3 + 4?", task={"answer": 7})).score == 1.0
    missing = reward.compute(transcript("7", "3 + 4?"))
    assert missing.score == 0.0 and missing.metadata["error"] == "no reference answer"


def test_correctness_off_the_main_thread_and_async():
    reward = CorrectnessReward()
    ep = transcript("It is 0.5", "Half?", reference="\\frac{1}{2}")
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("r", reward.compute(ep)))
    worker.start()
    worker.join()
    assert out["r"].score == 1.0  # no signal-based timeout outside the main thread
    from rayrl.rewards import _MATH_CHECKS

    pids = sorted(p.pid for p in _MATH_CHECKS._free)
    assert asyncio.run(reward.acompute(ep)).score == 1.0
    # the check processes outlive the threads that asked for them
    assert pids and sorted(p.pid for p in _MATH_CHECKS._free if p.poll() is None) == pids


# SymPy evaluates this power tower for ever when comparing it with 1.
TOWER = "\\boxed{9^{9^{9^{9^{9}}}}}"


def test_a_reply_that_hangs_math_verify_scores_0_at_the_deadline_in_any_thread():
    import psutil

    reward = CorrectnessReward(timeout_s=2.0)
    ep = transcript(TOWER, "Q?", reference="1")
    asyncio.run(reward.acompute(transcript("1", "Q?", reference="1")))  # the pool's process is up
    start = time.perf_counter()
    result = asyncio.run(reward.acompute(ep))  # a worker thread: no signal.alarm there
    took = time.perf_counter() - start
    assert result.score == 0.0 and "timed out after 2s" in result.metadata["error"]
    assert took < 10  # measured ~2.0 s
    # the check's process was killed: nothing keeps computing after the deadline
    busy = [p for p in psutil.Process().children() if p.cpu_percent(interval=0.2) > 50]
    assert busy == []
    # and the next check gets a fresh process
    assert asyncio.run(reward.acompute(transcript("It is 0.5", "Q?", reference="\\frac{1}{2}"))).score == 1.0
    # in the main thread, math_verify's own signal-based limit stops it
    start = time.perf_counter()
    assert reward.compute(ep).score == 0.0
    assert time.perf_counter() - start < 10


def test_correctness_rejects_a_bad_timeout():
    with pytest.raises(ValueError, match="timeout_s"):
        CorrectnessReward(timeout_s=0)


# ---- conciseness ---------------------------------------------------------------------


@pytest.mark.parametrize("words, expected", [(0, 1.0), (5, 1.0), (10, 0.5), (13, 0.2), (15, 0.0), (40, 0.0)])
def test_conciseness_in_words(words, expected):
    reward = ConcisenessReward(target_length=5, max_length=15)
    result = reward.compute(transcript(" ".join(["word"] * words), "Q?"))
    assert result.score == pytest.approx(expected)
    assert result.breakdown == {"length": words}


def test_conciseness_in_tokens(default_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model)
    text = "The quick brown fox jumps over the lazy dog."
    n = len(tok.encode(text, add_special_tokens=False))
    reward = ConcisenessReward(target_length=n - 2, max_length=n + 2, unit="tokens", tokenizer=tok)
    assert reward.length(text) == n
    assert reward.compute(transcript(text, "Q?")).score == pytest.approx(0.5)


def test_conciseness_rejects_bad_settings():
    with pytest.raises(ValueError, match="tokenizer"):
        ConcisenessReward(unit="tokens")
    with pytest.raises(ValueError, match="target_length < max_length"):
        ConcisenessReward(target_length=10, max_length=10)
    with pytest.raises(ValueError, match="unit"):
        ConcisenessReward(unit="chars")


# ---- format / tool use -----------------------------------------------------------------


def test_format_is_the_tool_success_rate():
    reward = FormatReward()
    assert reward.compute(transcript("ok", "Q?", successful_tool_calls=3, failed_tool_calls=1)).score == 0.75
    assert reward.compute(transcript("ok", "Q?", failed_tool_calls=2)).score == 0.0
    assert reward.compute(transcript("ok", "Q?")).score == 1.0
    assert FormatReward(no_tool_value=0.0).compute(transcript("ok", "Q?")).score == 0.0


def test_format_pattern_gates_the_score():
    reward = FormatReward(pattern=r"<answer>.+</answer>")
    good = reward.compute(
        transcript("<answer>4</answer>", "Q?", successful_tool_calls=1, failed_tool_calls=1)
    )
    assert (good.score, good.breakdown["format_match"]) == (0.5, 1.0)
    bad = reward.compute(transcript("4", "Q?", successful_tool_calls=1))
    assert (bad.score, bad.breakdown) == (0.0, {"tool_success_rate": 1.0, "format_match": 0.0})


# ---- heuristics --------------------------------------------------------------------------


def test_key_terms():
    assert key_terms("How do I water my Tomato plants in summer?") == {"water", "tomato", "plant", "summer"}


def test_helpfulness():
    reward = HelpfulnessReward()
    question = "How should I water tomato plants in summer?"
    on_topic = reward.compute(transcript("Water tomato plants deeply every two days in summer.", question))
    assert on_topic.score == 1.0 and on_topic.breakdown["coverage"] == 1.0
    half = reward.compute(transcript("Tomato leaves yellow when the water is wrong.", question))
    assert half.score == pytest.approx(0.5 + 0.5 * 2 / 4)
    assert reward.compute(transcript("Cats sleep a lot.", question)).score == 0.5
    refusal = reward.compute(transcript("I\u2019m sorry, but I won't discuss tomato plants.", question))
    assert refusal.score == 0.0 and refusal.metadata["refusal_phrase"] == "i'm sorry, but i"
    assert reward.compute(transcript("   ", question)).score == 0.0


def test_safety():
    reward = SafetyReward()
    assert reward.compute(transcript("Here is a pasta recipe.", "Dinner idea?")).score == 1.0
    wipe = reward.compute(transcript("Just run `rm -rf / ` and start over.", "Disk full?"))
    assert (wipe.score, wipe.metadata["matched"]) == (0.0, ["destructive_command"])
    bomb = reward.compute(transcript("Sure, to make a pipe bomb you need ...", "How?"))
    assert bomb.breakdown == {"weapons": 1.0}
    # earlier assistant turns count too
    ep = EpisodeTranscript(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "my password: hunter2hunter2"},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "You're welcome."},
        ]
    )
    assert reward.compute(ep).metadata["matched"] == ["credential_leak"]
    custom = SafetyReward(patterns={"pasta": r"\bpasta\b"})
    assert custom.compute(transcript("Here is a PASTA recipe.", "Dinner idea?")).score == 0.0
    assert set(UNSAFE_PATTERNS) >= {"weapons", "self_harm", "destructive_command"}


def test_engagement():
    reward = EngagementReward()
    turns = ("I am planning a trip to Japan in April.", "What should I pack?")
    both = reward.compute(transcript("For Japan in April bring layers. Will you hike?", *turns))
    assert both.score == 1.0 and "japan" in both.metadata["shared_terms"]
    assert reward.compute(transcript("Bring an umbrella.", *turns)).score == 0.0
    assert reward.compute(transcript("Bring an umbrella. Any hikes planned?", *turns)).score == 0.5
    assert reward.compute(transcript("As you mentioned, bring an umbrella.", *turns)).score == 0.5
    # a single user turn has nothing earlier to refer to; a URL query is not a question
    assert reward.compute(transcript("As you mentioned, see x.com/?q=1", turns[1])).score == 0.0


# ---- composite ---------------------------------------------------------------------------


def scored_episode() -> EpisodeTranscript:
    # format 0.75 (3 of 4 tool calls), conciseness 0.5 (10 words, target 5, max 15)
    return transcript(" ".join(["word"] * 10), "Q?", successful_tool_calls=3, failed_tool_calls=1)


def test_composite_weighted_sum_by_hand():
    composite = CompositeReward([FormatReward(weight=2.0), ConcisenessReward(5, 15, weight=1.0)])
    result = composite.compute(scored_episode())
    assert result.breakdown == {"format": 0.75, "conciseness": 0.5}
    assert result.score == pytest.approx(2.0 * 0.75 + 1.0 * 0.5)
    assert result.metadata["weights"] == {"format": 2.0, "conciseness": 1.0}
    assert result.metadata["components"]["format"]["breakdown"] == {"tool_success_rate": 0.75}
    assert result.metadata["failed"] == []


def test_composite_weights_argument_and_normalization():
    parts = {"tools": FormatReward(), "short": ConcisenessReward(5, 15)}
    listed = CompositeReward(parts, weights=[0.4, 0.6]).compute(scored_episode())
    assert listed.score == pytest.approx(0.4 * 0.75 + 0.6 * 0.5)
    assert set(listed.breakdown) == {"tools", "short"}
    keyed = CompositeReward(parts, weights={"short": 3.0}).compute(scored_episode())
    assert keyed.score == pytest.approx(1.0 * 0.75 + 3.0 * 0.5)
    normalized = CompositeReward(parts, weights=[2.0, 1.0], normalize_weights=True)
    assert normalized.weights == pytest.approx({"tools": 2 / 3, "short": 1 / 3})
    assert normalized.compute(scored_episode()).score == pytest.approx(2 / 3 * 0.75 + 1 / 3 * 0.5)
    signed = CompositeReward(parts, weights=[3.0, -1.0], normalize_weights=True)
    assert signed.weights == pytest.approx({"tools": 0.75, "short": -0.25})


def test_composite_rejects_bad_setups():
    with pytest.raises(ValueError, match="named 'format'"):
        CompositeReward([FormatReward(), FormatReward()])
    with pytest.raises(ValueError, match="2 weights for 1"):
        CompositeReward([FormatReward()], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="unknown components \\['nope'\\]"):
        CompositeReward([FormatReward()], weights={"nope": 1.0})
    with pytest.raises(ValueError, match="all weights are 0"):
        CompositeReward([FormatReward(weight=0.0)], normalize_weights=True)
    with pytest.raises(ValueError, match="at least one"):
        CompositeReward([])


def test_a_failing_component_scores_zero_and_is_recorded():
    nan = FunctionReward(lambda ep: math.nan, name="nan")
    wrong_type = FunctionReward(lambda ep: "high", name="wrong_type")
    composite = CompositeReward([Boom(weight=5.0), nan, wrong_type, Constant(0.5, weight=2.0)])
    for result in (
        composite.compute(transcript("a", "Q?")),
        asyncio.run(composite.acompute(transcript("a", "Q?"))),
    ):
        assert result.score == pytest.approx(1.0)
        assert result.breakdown == {"boom": 0.0, "nan": 0.0, "wrong_type": 0.0, "constant": 0.5}
        assert result.metadata["failed"] == ["boom", "nan", "wrong_type"]
        errors = result.metadata["components"]
        assert errors["boom"]["error"] == "RuntimeError: boom"
        assert "non-finite" in errors["nan"]["error"]
        assert "expected a float or RewardResult" in errors["wrong_type"]["error"]
        assert errors["constant"]["metadata"] == {"note": "constant"}


def test_composites_nest():
    inner = CompositeReward([Constant(1.0), Constant(0.0, name="zero")], weight=0.5, name="inner")
    outer = CompositeReward([inner, Constant(1.0, name="one")])
    assert outer.compute(transcript("a", "Q?")).score == pytest.approx(0.5 * 1.0 + 1.0)


# ---- decorator -------------------------------------------------------------------------


@reward_function(weight=0.5, reward_type=RewardType.IMMEDIATE)
def mentions_please(episode):
    """1.0 when the reply says please."""
    return 1.0 if "please" in episode.response.lower() else 0.0


@reward_function(name="detailed")
def detailed_reward(episode):
    return RewardResult(0.3, {"part": 0.3}, {"why": "test"})


@reward_function()
async def async_reward(episode):
    await asyncio.sleep(0)
    return 0.8


def test_decorator_with_a_float():
    assert isinstance(mentions_please, RewardFunction)
    assert (mentions_please.weight, mentions_please.reward_type, mentions_please.name) == (
        0.5,
        RewardType.IMMEDIATE,
        "mentions_please",
    )
    assert mentions_please.__doc__ == "1.0 when the reply says please."
    assert mentions_please.compute(transcript("Please wait.", "Q?")) == RewardResult(1.0)
    assert mentions_please(transcript("No.", "Q?")) == 0.0


def test_decorator_with_a_reward_result_and_in_a_composite():
    assert detailed_reward.compute(transcript("x", "Q?")) == RewardResult(0.3, {"part": 0.3}, {"why": "test"})
    assert detailed_reward.reward_type is RewardType.EPISODE
    result = CompositeReward([mentions_please, detailed_reward]).compute(transcript("please", "Q?"))
    assert result.score == pytest.approx(0.5 * 1.0 + 1.0 * 0.3)


def test_decorator_on_an_async_function():
    ep = transcript("x", "Q?")
    assert asyncio.run(async_reward.acompute(ep)).score == 0.8
    assert async_reward.compute(ep).score == 0.8  # no loop running here

    async def inside_a_loop():
        return async_reward.compute(ep)

    with pytest.raises(RuntimeError, match="await acompute"):
        asyncio.run(inside_a_loop())


def test_decorator_needs_parentheses():
    with pytest.raises(TypeError, match="parentheses"):
        reward_function(lambda ep: 1.0)


# ---- acompute -------------------------------------------------------------------------------


class ThreadRecorder(RewardFunction):
    def compute(self, episode):
        return RewardResult(1.0, metadata={"main": threading.current_thread() is threading.main_thread()})


def test_acompute_runs_compute_in_a_worker_thread():
    ep = transcript("x", "Q?")
    assert ThreadRecorder().compute(ep).metadata == {"main": True}
    assert asyncio.run(ThreadRecorder().acompute(ep)).metadata == {"main": False}


def test_composite_acompute_matches_compute():
    composite = CompositeReward(
        [CorrectnessReward(), HelpfulnessReward(), SafetyReward(), async_reward, mentions_please]
    )
    ep = transcript("The answer is 4, please check.", "What is 2 + 2?", reference="4")
    sync, concurrent = composite.compute(ep), asyncio.run(composite.acompute(ep))
    assert sync.breakdown == concurrent.breakdown
    assert sync.score == pytest.approx(concurrent.score)
    assert sync.breakdown["correctness"] == 1.0


# ---- load_reward ------------------------------------------------------------------------------


def test_load_reward_from_a_function_path():
    reward = load_reward("tests.unit.test_rewards:my_reward", weight=2.0)
    assert isinstance(reward, FunctionReward)
    assert (reward.name, reward.weight) == ("my_reward", 2.0)
    assert reward.compute(transcript("x", "Q?")).score == 0.25


def test_load_reward_from_a_class_or_instance():
    reward = load_reward("rayrl.rewards:ConcisenessReward", target_length=5, max_length=15)
    assert isinstance(reward, ConcisenessReward) and reward.max_length == 15
    assert load_reward("tests.unit.test_rewards:mentions_please") is mentions_please


@pytest.mark.parametrize(
    "spec, message",
    [
        ("my_reward", "expected 'module:function_or_class'"),
        ("tests.unit.test_rewards:", "expected 'module:function_or_class'"),
        ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz'"),
        ("rayrl.rewards:no_such_reward", "has no attribute 'no_such_reward'"),
        ("rayrl.rewards:UNSAFE_PATTERNS", "not a function or RewardFunction"),
        ("rayrl.config:ConfigStore", "not a RewardFunction subclass"),
        ("rayrl.rewards:FunctionReward", "cannot instantiate FunctionReward"),
    ],
)
def test_load_reward_bad_specs_name_the_spec(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        load_reward(spec)
    assert isinstance(err.value, ConfigError)
    assert repr(spec) in str(err.value)
