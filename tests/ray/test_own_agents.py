"""The user's own agents on real engines: seed 004's queue-driven agent (registered by name,
group-level environment steps) and an agent written against the `openai` client, played
through the run's OpenAI-compatible endpoint with its exact tokens captured."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from rayrl.actors.agent_drivers import plan_agent
from rayrl.actors.agent_loop import EpisodeRunner
from rayrl.agent.async_agent import (
    Agent,
    AgentPrompt,
    BundledGenerationOutputs,
    EnvironmentService,
    GenerationConfig,
    Trajectory,
    register_agent,
    register_env,
)
from rayrl.config import AgentRunConfig, ConfigError, EnvironmentConfig, InferenceConfig
from rayrl.trainer import RayPPOTrainer
from tests.ray.test_trainer import tiny_config
from tests.unit.test_capture import TOOLS

INFERENCE = InferenceConfig(max_tokens=48, max_model_len=1024, kv_cache_gb=1, temperature=1.0)


@pytest.fixture
def engine(default_engine):
    return default_engine  # INFERENCE's engine settings


def runner_for(default_model, engine, agent: AgentRunConfig, group_size: int = 1) -> EpisodeRunner:
    """The agent loop as a plain object in this process (its agent code runs here)."""
    return EpisodeRunner(
        default_model,
        EnvironmentConfig(max_turns=3, isolation="inline"),
        INFERENCE,
        [engine],
        max_episodes=4,
        agent=plan_agent(agent),
        group_size=group_size,
    )


# ---- seed 004: a queue-driven agent ---------------------------------------------------
class CountingMathEnv(EnvironmentService):
    """Seed 004's single-step math environment: scores a whole group per call."""

    calls: list[int] = []

    async def step(self, action):
        qid, answers = action
        CountingMathEnv.calls.append(len(answers))
        answer = str(self.id2info[qid.split("@")[0]]["answer"])
        return None, [a.strip().endswith(answer) for a in answers], True, False, {}


class MathMultiTurnAgent(Agent):
    """The seed's agent: answer, and on a wrong answer get a "try again" turn. It plays one
    sample per call (its constructor takes no group_size), so the loop calls it per sample."""

    def __init__(self, tokenizer, num_turns: int = 2):
        self.tokenizer, self.num_turns = tokenizer, num_turns

    async def collect_trajectory(self, prompt: AgentPrompt, env, obs_queue, act_queue):
        token_ids, mask = list(prompt.token_ids), [0] * len(prompt.token_ids)
        logprobs = [0.0] * len(token_ids)
        versions = [-1] * len(token_ids)
        reward, turns = 0.0, 0
        for _ in range(self.num_turns):
            turns += 1
            await obs_queue.put((prompt.qid, token_ids, GenerationConfig(n=1)))
            act: BundledGenerationOutputs = await act_queue.get()
            (seq,) = act.seqs
            answers = [self.tokenizer.decode(seq.token_ids, skip_special_tokens=True)]
            _, success, *_ = await env.step((prompt.qid, answers))
            token_ids += seq.token_ids
            mask += [1] * len(seq.token_ids)
            logprobs += seq.logprobs
            versions += [seq.weight_version] * len(seq.token_ids)
            if success[0]:
                reward = 1.0
                break
            feedback = "Unfortunately your answer is wrong. Let's try again."
            feedback = "\n" + self.tokenizer.apply_chat_template(
                [dict(content=feedback, role="user")], add_generation_prompt=True, tokenize=False
            )
            feedback = self.tokenizer(feedback)["input_ids"]
            token_ids.extend(feedback)
            mask += [0] * len(feedback)
            logprobs += [0.0] * len(feedback)
            versions += [-1] * len(feedback)
        return [Trajectory(token_ids, mask, logprobs, reward, versions, num_turns=turns)]


register_agent("seed-math-multi-turn", MathMultiTurnAgent)
register_env("seed-math-single-step", CountingMathEnv)


def test_a_registered_queue_agent_plays_groups_with_one_environment_call_per_turn(default_model, engine):
    CountingMathEnv.calls.clear()
    runner = runner_for(
        default_model,
        engine,
        AgentRunConfig(name="math-multi-turn", args={"num_turns": 2}, env="math-single-step"),
        group_size=4,
    )
    tasks = [{"a": 2, "b": 3}, {"a": 10, "b": 20}]
    table, stats = asyncio.run(runner.collect(tasks, group_size=4, seed=7))
    assert table.num_rows == 8 and stats["groups"] == [0] * 4 + [1] * 4
    rows = table.to_pylist()
    for row in rows:
        trained = [i for i, m in enumerate(row["loss_mask"]) if m]
        assert trained and all(row["weight_version"][i] == 0 for i in trained)
        assert all(row["rollout_logprobs"][i] <= 0 for i in trained)
        assert row["num_turns"] in (1, 2) and row["reward"] in (0.0, 1.0, 0.5)
    # the whole group was asked in one request: the first answers share the same prompt
    first = {tuple(r["input_ids"][: r["loss_mask"].index(1)]) for r in rows[:4]}
    assert len(first) == 1
    # the seed's own agent (n=1 requests, its own env), registered by name from this module
    runner = runner_for(
        default_model,
        engine,
        AgentRunConfig(name="seed-math-multi-turn", env="seed-math-single-step"),
        group_size=4,
    )
    table, stats = asyncio.run(runner.collect(tasks, group_size=4, seed=7))
    assert table.num_rows == 8 and not stats["errors"]
    assert CountingMathEnv.calls and set(CountingMathEnv.calls) == {1}
    assert len(CountingMathEnv.calls) == sum(stats["num_turns"])


def test_an_unknown_agent_or_a_broken_one_is_a_clear_error(default_model, engine):
    with pytest.raises(ConfigError, match="no agent registered as 'nope'.*math-multi-turn"):
        plan_agent(AgentRunConfig(name="nope"))
    with pytest.raises(ConfigError, match="async function"):
        plan_agent(AgentRunConfig(function="json:dumps"))

    class Broken(Agent):
        async def collect_trajectory(self, prompt, env, obs_queue, act_queue):
            await obs_queue.put((prompt.qid, prompt.token_ids, GenerationConfig()))
            await act_queue.get()
            raise RuntimeError("agent bug")

    register_agent("broken-for-test", Broken)
    runner = runner_for(default_model, engine, AgentRunConfig(name="broken-for-test"), group_size=2)
    table, stats = asyncio.run(runner.collect([{"a": 1, "b": 1}], group_size=2))
    assert table.num_rows == 0 and stats["errors"] == ["agent failed: RuntimeError: agent bug"]


# ---- an OpenAI-client agent through the endpoint --------------------------------------
SEEN: list[dict] = []  # what the agent below saw, per request


def _demonstration() -> list[dict]:
    """Three solved examples, so that a 135M model answers with a tool call."""
    messages = []
    for i, (a, b) in enumerate([(1, 2), (5, 7), (30, 12)]):
        call = {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "add", "arguments": json.dumps({"a": a, "b": b})},
        }
        messages += [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": str(a + b)},
        ]
    return messages


async def tool_agent(client, task) -> float:
    """Three requests; a tool call gets the tool's result, anything else a user nudge."""
    messages = [{"role": "system", "content": "Answer every question with a <tool_call> block only."}]
    messages += _demonstration() + [{"role": "user", "content": f"What is {task['a']} + {task['b']}?"}]
    calls = 0
    for _ in range(3):
        response = await client.chat.completions.create(
            model="policy", messages=messages, tools=TOOLS, logprobs=True, max_tokens=40
        )
        choice = response.choices[0]
        SEEN.append(
            {
                "ids": [int(t.token.split(":")[1]) for t in choice.logprobs.content],
                "logprobs": [t.logprob for t in choice.logprobs.content],
                "tool_calls": len(choice.message.tool_calls or []),
            }
        )
        messages.append(choice.message.model_dump(exclude_none=True))
        if choice.message.tool_calls:
            for call in choice.message.tool_calls:
                args = json.loads(call.function.arguments)
                result = str(int(args.get("a", 0)) + int(args.get("b", 0)))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
                calls += 1
        else:
            messages.append({"role": "user", "content": "Use the add tool."})
    return float(calls)


def test_openai_agent_tokens_are_captured_exactly_over_three_tool_calling_turns(default_model, engine):
    SEEN.clear()
    runner = runner_for(
        default_model, engine, AgentRunConfig(function="tests.ray.test_own_agents:tool_agent")
    )
    table, stats = asyncio.run(runner.collect([{"a": 17, "b": 25}], group_size=1, seed=0))
    (row,) = table.to_pylist()
    assert stats["agent"]["requests"] == 3 and stats["agent"]["history_rewrites"] == 0
    assert row["reward"] == sum(s["tool_calls"] for s in SEEN) >= 1  # at least one real round trip
    # the trained spans are exactly the engine's ids of each reply, in order
    ids, mask = row["input_ids"], row["loss_mask"]
    spans, current = [], []
    for token, m in zip(ids, mask, strict=True):
        if m:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    spans += [current] if current else []
    assert spans == [s["ids"] for s in SEEN]
    trained_logprobs = [lp for lp, m in zip(row["rollout_logprobs"], mask, strict=True) if m]
    assert trained_logprobs == pytest.approx([lp for s in SEEN for lp in s["logprobs"]], abs=1e-6)
    assert row["num_turns"] == 3
    # and the untrained tokens are the chat template's text around them: tool results included
    text = runner.tokenizer.decode(ids)
    returned = sum(s["tool_calls"] for s in SEEN[:-1])  # results the model saw before its last reply
    assert returned >= 1 and text.count("<|im_start|>tool\n") == 3 + returned


async def rewriting_agent(client, task) -> float:
    """Asks once, then asks again with its first question edited (history rewritten)."""
    first = [{"role": "user", "content": "What is 2 + 2?"}]
    reply = await client.chat.completions.create(model="policy", messages=first, max_tokens=8)
    edited = [{"role": "user", "content": "What is 2 + 2? Be brief."}, reply.choices[0].message.model_dump()]
    await client.chat.completions.create(
        model="policy", messages=edited + [{"role": "user", "content": "Sure?"}]
    )
    return 1.0


def test_rewritten_history_is_split_or_refused_never_retokenised(default_model, engine):
    spec = "tests.ray.test_own_agents:rewriting_agent"
    runner = runner_for(default_model, engine, AgentRunConfig(function=spec))
    table, stats = asyncio.run(runner.collect([{"a": 1, "b": 1}], group_size=1))
    assert table.num_rows == 2 and stats["agent"]["history_rewrites"] == 1  # two trainable segments
    assert all(r == 1.0 for r in table.column("reward").to_pylist())
    runner = runner_for(default_model, engine, AgentRunConfig(function=spec, on_rewrite="refuse"))
    table, stats = asyncio.run(runner.collect([{"a": 1, "b": 1}], group_size=1))
    assert table.num_rows == 0 and stats["agent"]["refused"] == 1
    assert "history rewritten" in stats["errors"][0]


async def probing_agent(client, task) -> float:
    """Sends bad requests straight over HTTP, then one good one through the client."""
    base, token = str(client.base_url).rstrip("/"), client.api_key
    async with httpx.AsyncClient() as http:
        url = f"{base}/chat/completions"
        good = {"model": "policy", "messages": [{"role": "user", "content": "Hi"}]}
        statuses = {
            "no token": (await http.post(url, json=good)).status_code,
            "wrong token": (
                await http.post(url, json=good, headers={"Authorization": "Bearer x"})
            ).status_code,
            "not json": (
                await http.post(url, content=b"{", headers={"Authorization": f"Bearer {token}"})
            ).status_code,
            "no messages": (
                await http.post(url, json={"model": "p"}, headers={"Authorization": f"Bearer {token}"})
            ).status_code,
            "stream": (
                await http.post(
                    url, json={**good, "stream": True}, headers={"Authorization": f"Bearer {token}"}
                )
            ).status_code,
            "other episode": (
                await http.post(
                    url.replace("/episodes/", "/episodes/x"),
                    json=good,
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).status_code,
        }
    task["statuses"].update(statuses)
    await client.chat.completions.create(model="policy", messages=good["messages"], max_tokens=4)
    return 0.5


def test_bad_requests_get_clear_4xx_and_the_episode_goes_on(default_model, engine):
    statuses: dict = {}
    runner = runner_for(
        default_model, engine, AgentRunConfig(function="tests.ray.test_own_agents:probing_agent")
    )
    table, _ = asyncio.run(runner.collect([{"statuses": statuses}], group_size=1))
    assert statuses == {
        "no token": 401,
        "wrong token": 401,
        "not json": 400,
        "no messages": 400,
        "stream": 400,
        "other episode": 404,
    }
    assert table.num_rows == 1 and table.column("reward").to_pylist() == [0.5]
    assert runner.driver.endpoint.host == "127.0.0.1"


def test_a_queue_agent_trains_in_the_loop_by_config(ray_local, tiny_model, tmp_path):
    config = tiny_config(
        tiny_model,
        training={"num_epochs": 1, "batch_size": 8, "group_size": 4, "kl_coef": 0.0},
        learner={"micro_batch_size": 8},
        agent={"name": "math-multi-turn", "args": {"num_turns": 2}},
        checkpoint={"run_dir": str(tmp_path), "run_name": "queue", "save_final": False},
    )
    trainer = RayPPOTrainer(config)
    try:
        (metrics,) = trainer.fit()
    finally:
        trainer.cleanup()
    assert metrics["episodes"] == 8 and metrics["env_errors"] == 0
    assert metrics["response_tokens"] > 0 and metrics["weight_version"] == 1
