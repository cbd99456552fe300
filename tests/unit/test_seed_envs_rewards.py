"""Seed 002's environment and reward code, pasted as its guide writes it, played for real.

Only the import path differs from the user's code (`rayrl.envs.conversation`,
`rayrl.rewards`). Episodes are played with hand-written replies, and rewards score
the conversations those episodes produce.
"""

from __future__ import annotations

import asyncio
import copy
import random

import cloudpickle
import pytest

from rayrl.agent.conversation import ConversationTurn
from rayrl.config import ConfigError
from rayrl.envs.conversation import ConversationEnvironment, TaskEnvironment
from rayrl.rewards import (
    CompositeReward,
    ConcisenessReward,
    CorrectnessReward,
    EngagementReward,
    EpisodeTranscript,
    FunctionReward,
    HelpfulnessReward,
    RewardFunction,
    RewardResult,
    RewardType,
    SafetyReward,
    as_transcript,
    ascore_turns,
    episode_context,
    reward_function,
    score_turns,
    transcript_from_turns,
)

# ---- the guide's code, as written (import path changed) -------------------------------

scenarios = [
    {
        "id": "customer_support",
        "topic": "technical_help",
        "context": "User has a technical problem",
        "user_responses": [
            "My device isn't working properly.",
            "I've tried restarting it.",
            "That didn't help either.",
            "Okay, I'll try that solution.",
        ],
    }
]

tasks = [
    {
        "description": "Help user plan a vacation",
        "goal": "Create a complete vacation plan",
        "required_actions": [
            {"name": "destination", "keywords": ["where", "destination", "place"]},
            {"name": "budget", "keywords": ["cost", "budget", "price"]},
            {"name": "activities", "keywords": ["do", "activities", "attractions"]},
            {"name": "schedule", "keywords": ["when", "dates", "time"]},
        ],
    }
]


def success_criteria(turns, context):
    completed = len(context.get("completed_actions", []))
    required = len(context.get("required_actions", []))
    return completed >= required


class CustomReward(RewardFunction):
    async def compute_reward(self, turns, context=None):
        assistant_turns = [t for t in turns if t.role == "assistant"]

        # Custom scoring logic
        total_score = 0.0
        breakdown = {}

        for i, turn in enumerate(assistant_turns):
            score = self.evaluate_turn(turn.content)
            total_score += score
            breakdown[f"turn_{i}"] = score

        avg_score = total_score / max(1, len(assistant_turns))

        return RewardResult(
            score=avg_score, breakdown=breakdown, metadata={"num_turns": len(assistant_turns)}
        )

    def evaluate_turn(self, content):
        # Custom evaluation logic
        return len(content) / 100.0  # Simple example


@reward_function(weight=0.5, reward_type=RewardType.IMMEDIATE)
async def creativity_reward(turns, context=None):
    """Reward creative responses"""
    creative_words = ["creative", "innovative", "unique", "original"]

    assistant_content = " ".join(turn.content for turn in turns if turn.role == "assistant").lower()

    creativity_score = sum(0.1 for word in creative_words if word in assistant_content)

    return min(creativity_score, 1.0)


# ---- helpers -------------------------------------------------------------------------------


def play(env, replies):
    """Reset `env`, play `replies`; returns (messages, step results)."""
    messages = [{"role": "user", "content": env.reset()}]
    results = []
    for reply in replies:
        obs, reward, done, info = env.step(reply)
        messages.append({"role": "assistant", "content": reply})
        results.append((obs, reward, done, info))
        if done:
            break
        messages.append({"role": "user", "content": obs})
    return messages, results


PARTY = [
    {"role": "user", "content": "Give me an idea for a birthday party."},
    {"role": "assistant", "content": "A picnic in the park with games."},
    {"role": "user", "content": "Something more unusual?"},
    {"role": "assistant", "content": "A creative costume night where guests come as a movie."},
]


# ---- conversation environment ----------------------------------------------------------------


def test_conversation_environment_as_the_guide_builds_it():
    env = ConversationEnvironment(
        scenarios=scenarios, max_turns=12, persona="You are a user seeking technical support."
    )
    assert env.turn_limit() == 12
    replies = [
        "Sorry to hear that. What exactly happens when you turn the device on?",
        "Thanks. Is the firmware up to date? Updating it often fixes this.",
        "Then try a factory reset: hold the power button for 15 seconds.",
        "Great, let me know if the solution works.",
    ]
    messages, results = play(env, replies)
    assert messages[0]["content"] == "My device isn't working properly."
    assert [r[2] for r in results] == [False, False, False, True]  # the script ends first
    assert [r[0] for r in results[:3]] == scenarios[0]["user_responses"][1:]
    info = results[-1][3]
    assert info["persona"] == "You are a user seeking technical support."
    assert info["context"] == {
        "topic": "technical_help",
        "context": "User has a technical problem",
        "scenario": "customer_support",
        "persona": "You are a user seeking technical support.",
        "turn": 4,
        "max_turns": 4,
    }
    assert env.context["turn"] == 4


def test_conversation_max_turns_and_scenario_persona():
    env = ConversationEnvironment(scenarios=scenarios, max_turns=2, persona="default user")
    _, results = play(env, ["What happens exactly?", "Did you try unplugging it?", "unused"])
    assert [r[2] for r in results] == [False, True]
    own = {**scenarios[0], "id": "impatient", "persona": "An impatient user."}
    env.reset(own)
    assert env.context["persona"] == "An impatient user."
    longer = ConversationEnvironment(scenarios=[{**own, "max_turns": 3}], max_turns=2)
    assert longer.turn_limit() == 3
    with pytest.raises(ConfigError, match="max_turns"):
        ConversationEnvironment(scenarios=scenarios, max_turns=0)
    with pytest.raises(ConfigError, match="persona"):
        ConversationEnvironment(scenarios=scenarios, persona=3)


# ---- task environment ----------------------------------------------------------------------


def guide_env():
    return TaskEnvironment(tasks=tasks, success_criteria=success_criteria, max_turns=15)


def test_task_environment_succeeds_once_every_action_is_covered():
    env = guide_env()
    assert env.tasks[0].id == "task_0" and env.turn_limit() == 15
    replies = [
        "Happy to help! Where would you like to go, and which destination appeals most?",
        "Lisbon is a great place. What budget do you have? Hotels cost about 90 euros a night.",
        "When are you free? Pick your dates and I will draft the plan.",
    ]
    messages, results = play(env, replies)
    assert messages[0]["content"] == "Help user plan a vacation. Goal: Create a complete vacation plan."
    (_, r1, d1, i1), (_, r2, d2, i2), (o3, r3, d3, i3) = results
    assert i1["context"]["completed_actions"] == ["destination"]
    assert (r1, d1, i1["success"]) == (0.0, False, False)
    # "do you have" covers "do", so the second reply adds both budget and activities
    assert i2["context"]["completed_actions"] == ["destination", "budget", "activities"]
    assert i2["context"]["missing_actions"] == ["schedule"] and not d2 and r2 == 0.0
    assert (o3, r3, d3, i3["success"]) == ("Task complete.", 1.0, True, True)
    ctx = i3["context"]
    assert ctx["required_actions"] == ["destination", "budget", "activities", "schedule"]
    assert ctx["goal"] == "Create a complete vacation plan"
    assert ctx["description"] == "Help user plan a vacation"
    assert (ctx["task_id"], ctx["turn"], ctx["max_turns"]) == ("task_0", 3, 15)
    assert "success_criteria_error" not in i3


def test_task_environment_fails_after_max_turns():
    env = guide_env()
    _, results = play(env, ["Let me think about it."] * 20)
    assert len(results) == 15 and results[-1][2] and not any(r[3]["success"] for r in results)
    assert results[-1][3]["missing"] == ["destination", "budget", "activities", "schedule"]


def test_success_criteria_sees_the_turns_so_far():
    seen = []

    def enough_turns(turns, context):
        seen.append([(t.role, t.content) for t in turns])
        assert all(isinstance(t, ConversationTurn) for t in turns)
        return sum(t.role == "assistant" for t in turns) >= 2

    env = TaskEnvironment(tasks=tasks, success_criteria=enough_turns, max_turns=5)
    _, results = play(env, ["Where to?", "Anywhere warm."])
    assert [r[3]["success"] for r in results] == [False, True]
    opening = "Help user plan a vacation. Goal: Create a complete vacation plan."
    assert seen[0] == [("user", opening), ("assistant", "Where to?")]
    assert seen[1][2:] == [("user", results[0][0]), ("assistant", "Anywhere warm.")]
    # the callable decides: two replies are enough even with criteria missing
    assert results[1][1:3] == (1.0, True) and results[1][3]["missing"]
    assert env.turns[-1].reward == 1.0


def test_a_raising_success_criteria_counts_as_not_yet():
    def broken(turns, context):
        return context["completed_actions"][0] == 1 / 0

    env = TaskEnvironment(tasks=tasks, success_criteria=broken, max_turns=3)
    _, results = play(env, ["Where, when, budget and activities: all covered."] * 3)
    assert [r[2] for r in results] == [False, False, True]
    for _, reward, _, info in results:
        assert (reward, info["success"]) == (0.0, False)
        assert info["success_criteria_error"] == "ZeroDivisionError: division by zero"


def test_per_task_callable_and_ids():
    two = [
        {"prompt": "Name a colour.", "success_criteria": lambda turns, ctx: "blue" in turns[-1].content},
        {"id": "own", "goal": "Say hi.", "required_actions": ["hi"], "topic": "greeting"},
    ]
    env = TaskEnvironment(tasks=two, success_criteria=lambda turns, ctx: False, max_turns=2)
    assert [t.id for t in env.tasks] == ["task_0", "own"]
    assert env.reset("task_0") == "Name a colour."
    assert env.step("Blue.")[1] == 0.0  # "Blue" is not "blue": the task's own check decides
    assert env.step("blue")[1:3] == (1.0, True)
    env.reset(env.sample_task(random.Random(1)))
    assert env.task.id in ("task_0", "own")
    env.reset("own")
    assert env.context["topic"] == "greeting" and env.context["required_actions"] == ["hi"]
    assert env.step("hi there")[1] == 0.0  # the environment's check says no
    assert TaskEnvironment(tasks=two[1:]).reset() == "Say hi."


def test_task_environment_bad_arguments_name_the_key():
    with pytest.raises(ConfigError, match=r"tasks\.0\.success_criteria"):
        TaskEnvironment(tasks=[{"goal": "Plan a trip."}])
    TaskEnvironment(tasks=[{"goal": "Plan a trip."}], success_criteria=success_criteria)
    with pytest.raises(ConfigError, match="success_criteria: expected a callable"):
        TaskEnvironment(tasks=tasks, success_criteria="all")
    with pytest.raises(ConfigError, match="max_turns"):
        TaskEnvironment(tasks=tasks, max_turns=-1)
    with pytest.raises(ConfigError, match=r"tasks\.0"):
        TaskEnvironment(tasks=[{"required_actions": ["x"]}])


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda env: cloudpickle.loads(cloudpickle.dumps(env))])
def test_task_environment_survives_copies(clone):
    env = guide_env()
    env.reset()
    env.step("Where would you like to go?")
    copied = clone(env)
    assert copied.tasks == env.tasks and copied.max_turns == 15
    assert copied.success_criteria.__name__ == "success_criteria"
    _, results = play(copied, ["Where, at what cost, what to do and when?"])
    assert results[0][1:3] == (1.0, True)
    assert env.context["completed_actions"] == ["destination"]  # the original is untouched
    if clone is copy.deepcopy:
        assert copied.success_criteria is success_criteria


# ---- rewards: built-ins ------------------------------------------------------------------------


def test_builtin_rewards_as_the_guide_builds_them():
    # Individual rewards
    helpfulness = HelpfulnessReward(weight=1.0)
    safety = SafetyReward(weight=1.0)

    # Composite reward
    composite = CompositeReward(
        [HelpfulnessReward(weight=0.4), SafetyReward(weight=0.3), EngagementReward(weight=0.3)]
    )
    episode = EpisodeTranscript(messages=PARTY)
    help_score, safe_score = helpfulness(episode), safety(episode)
    engaging = EngagementReward()(episode)
    assert safe_score == 1.0 and 0.0 < help_score <= 1.0
    assert composite.compute(episode).score == pytest.approx(
        0.4 * help_score + 0.3 * safe_score + 0.3 * engaging
    )
    assert ConcisenessReward()(episode) == 1.0 and CorrectnessReward()(episode) == 0.0


def test_builtins_also_answer_compute_reward():
    turns = [ConversationTurn(**m) for m in PARTY]
    result = asyncio.run(HelpfulnessReward().compute_reward(turns))
    assert result == HelpfulnessReward().compute(EpisodeTranscript(messages=PARTY))


# ---- rewards: custom RewardFunction ----------------------------------------------------------


def test_custom_reward_from_the_guide():
    reward = CustomReward(weight=2.0)
    lengths = [len(PARTY[1]["content"]) / 100, len(PARTY[3]["content"]) / 100]
    expected = RewardResult(sum(lengths) / 2, {"turn_0": lengths[0], "turn_1": lengths[1]}, {"num_turns": 2})
    episode = EpisodeTranscript(messages=PARTY)
    assert reward.compute(episode) == expected
    assert asyncio.run(reward.acompute(episode)) == expected
    assert reward({"messages": PARTY}) == pytest.approx(expected.score)
    assert reward(PARTY) == pytest.approx(expected.score)
    assert asyncio.run(reward.compute_reward([ConversationTurn(**m) for m in PARTY])) == expected
    assert (reward.name, reward.weight, reward.reward_type) == ("custom", 2.0, RewardType.EPISODE)


def test_compute_reward_gets_the_episode_context():
    seen = {}

    class Recorder(RewardFunction):
        def compute_reward(self, turns, context=None):  # a sync one works as well
            seen.update(context)
            return 1.0 if context.get("completed_actions") else 0.0

    env = guide_env()
    messages, results = play(env, ["Where shall we go, and at what cost?"])
    summary = {  # what the agent loop hands a reward
        "messages": messages,
        "total_reward": 0.0,
        "num_turns": 1,
        "tools": {"successful_tool_calls": 2, "failed_tool_calls": 1},
        "task": env.sample_task(random.Random(0)),
        "info": results[-1][3],
    }
    assert Recorder()(summary) == 1.0
    assert seen["completed_actions"] == ["destination", "budget"]
    assert seen["goal"] == "Create a complete vacation plan"
    assert (seen["num_turns"], seen["successful_tool_calls"], seen["failed_tool_calls"]) == (1, 2, 1)
    assert seen["task"]["id"] == "task_0" and seen["total_reward"] == 0.0
    assert seen["response"] == "Where shall we go, and at what cost?"
    assert seen["info"]["missing"] == ["activities", "schedule"]
    assert asyncio.run(Recorder().acompute(as_transcript(summary))).score == 1.0


def test_context_round_trips_through_a_transcript():
    episode = EpisodeTranscript(messages=PARTY, reference="x", info={"context": {"persona": "p"}, "seed": 3})
    context = episode_context(episode)
    back = transcript_from_turns([ConversationTurn(**m) for m in PARTY], {**context, "extra": 1})
    again = episode_context(back)
    assert again.pop("info") == {"context": {"persona": "p", "extra": 1}, "seed": 3}
    context.pop("info")
    assert again == {**context, "extra": 1}


def test_a_reward_must_implement_compute_or_compute_reward():
    class Nothing(RewardFunction):
        def evaluate_turn(self, content):
            return 1.0

    with pytest.raises(TypeError, match=r"compute\(self, episode\).*compute_reward\(self, turns"):
        Nothing()


def test_a_raising_compute_reward_scores_zero_in_a_composite():
    class Broken(RewardFunction):
        async def compute_reward(self, turns, context=None):
            return self.evaluate_turn(turns[-1].content)

        def evaluate_turn(self, content):
            raise KeyError(content)

    composite = CompositeReward([Broken(weight=3.0), CustomReward(weight=1.0)])
    episode = EpisodeTranscript(messages=PARTY)
    for result in (composite.compute(episode), asyncio.run(composite.acompute(episode))):
        assert result.breakdown["broken"] == 0.0
        assert result.score == pytest.approx(CustomReward()(episode))
        assert result.metadata["failed"] == ["broken"]
        assert result.metadata["components"]["broken"]["error"].startswith("KeyError")


# ---- rewards: the decorator and per-turn scores -----------------------------------------------


def test_creativity_reward_from_the_guide():
    assert isinstance(creativity_reward, RewardFunction)
    assert (creativity_reward.name, creativity_reward.weight) == ("creativity_reward", 0.5)
    assert creativity_reward.reward_type is RewardType.IMMEDIATE and creativity_reward.call_with == "turns"
    assert creativity_reward.__doc__ == "Reward creative responses"
    assert creativity_reward.compute(EpisodeTranscript(messages=PARTY)).score == pytest.approx(0.1)
    result = asyncio.run(creativity_reward.compute_reward([ConversationTurn(**m) for m in PARTY]))
    assert result.score == pytest.approx(0.1)


def test_per_turn_scores_of_an_immediate_reward():
    assert score_turns(creativity_reward, PARTY) == [0.0, pytest.approx(0.1)]
    assert asyncio.run(ascore_turns(creativity_reward, EpisodeTranscript(messages=PARTY))) == [
        0.0,
        pytest.approx(0.1),
    ]
    third = [
        *PARTY,
        {"role": "user", "content": "And a last one?"},
        {"role": "assistant", "content": "An original, innovative escape room."},
    ]
    assert score_turns(creativity_reward, {"messages": third}) == pytest.approx([0.0, 0.1, 0.3])
    assert score_turns(creativity_reward, PARTY[:1]) == []


def test_per_turn_scores_of_sync_and_transcript_rewards():
    @reward_function(reward_type=RewardType.IMMEDIATE)
    def long_reply(turns, context=None):
        return RewardResult(float(len(turns[-1].content) > 40), metadata={"turn": context["turn_index"]})

    @reward_function(reward_type=RewardType.IMMEDIATE)
    def mentions_costume(episode):
        return float("costume" in episode.response)

    assert mentions_costume.call_with == "episode"
    for reward, expected in ((long_reply, [0.0, 1.0]), (mentions_costume, [0.0, 1.0])):
        assert score_turns(reward, PARTY) == expected
        assert asyncio.run(ascore_turns(reward, PARTY)) == expected
    with pytest.raises(ValueError, match="IMMEDIATE"):
        score_turns(CustomReward(), PARTY)
    inside = asyncio.run(_score_in_a_loop())
    assert "await acompute" in inside


async def _score_in_a_loop() -> str:
    try:
        score_turns(creativity_reward, PARTY)
    except RuntimeError as err:
        return str(err)
    return ""


def test_calling_convention_read_from_the_signature():
    def by_episode(episode):
        return episode.num_turns

    def by_turns_only(turns):
        return len(turns)

    def two_positional(messages, ctx):
        return len(messages) + ctx["num_turns"]

    def episode_with_option(episode, scale=1.0):
        return scale * episode.num_turns

    episode = EpisodeTranscript(messages=PARTY)
    assert FunctionReward(by_episode)(episode) == 2
    assert FunctionReward(by_turns_only).call_with == "turns" and FunctionReward(by_turns_only)(episode) == 4
    assert FunctionReward(two_positional)(episode) == 6
    assert FunctionReward(episode_with_option).call_with == "episode"
    assert FunctionReward(lambda *a: 1.0).call_with == "episode"
    assert FunctionReward(by_turns_only, call_with="turns")(PARTY) == 4
    with pytest.raises(ValueError, match="call_with"):
        FunctionReward(by_turns_only, call_with="messages")


def test_decorated_turn_rewards_mix_in_a_composite_and_pickle():
    composite = CompositeReward([CustomReward(), creativity_reward])
    episode = EpisodeTranscript(messages=PARTY)
    expected = CustomReward()(episode) + 0.5 * 0.1
    assert composite.compute(episode).score == pytest.approx(expected)
    assert asyncio.run(composite.acompute(episode)).score == pytest.approx(expected)
    copied = cloudpickle.loads(cloudpickle.dumps(composite))
    assert copied.compute(episode).score == pytest.approx(expected)


def test_from_summary_merges_the_step_info():
    episode = EpisodeTranscript.from_summary(
        {"messages": PARTY, "info": {"success": True}, "episode_id": "e"}
    )
    assert episode.info == {"success": True, "episode_id": "e"}


def test_core_import_paths_re_export_the_rayrl_classes():
    import rayrl
    from rayrl.core import agent, environment, reward

    assert environment.TaskEnvironment is rayrl.TaskEnvironment
    assert environment.ConversationEnvironment is rayrl.ConversationEnvironment
    assert reward.RewardFunction is rayrl.RewardFunction and reward.reward_function is rayrl.reward_function
    assert agent.MultiTurnAgent is rayrl.MultiTurnAgent and agent.ToolAgent is rayrl.ToolAgent
    assert agent.load_agent_from_checkpoint is rayrl.load_agent_from_checkpoint


def test_a_compute_that_returns_a_plain_number_scores_everywhere():
    import asyncio

    from rayrl.rewards import EpisodeTranscript, RewardFunction

    class Length(RewardFunction):
        def compute(self, episode):
            return len(episode.response) / 10

    reward = Length()
    summary = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert reward(summary) == 0.5
    assert asyncio.run(reward.acompute(EpisodeTranscript.from_summary(summary))).score == 0.5
