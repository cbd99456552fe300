"""`rayrl serve`: the default model behind a real Ray Serve deployment on loopback, asked
with the real `openai` client (and plain HTTP for the bad requests)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.ray.test_own_agents import _demonstration
from tests.unit.test_capture import TOOLS

TOKEN = "test-token-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(ray_local, default_model):
    from rayrl.config import InferenceConfig
    from rayrl.serve import ServeConfig, deploy, shutdown

    settings = ServeConfig(port=_free_port(), token=TOKEN, max_tokens=48, max_request_bytes=64 * 1024)
    url = deploy(default_model, settings, InferenceConfig(max_model_len=1024, kv_cache_gb=1.0))
    yield url
    shutdown()


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key=TOKEN, max_retries=0)


def post(url: str, data: bytes, token: str | None = TOKEN, method: str = "POST") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def demonstration() -> list[dict]:
    """Solved examples, so that a 135M model answers with a tool call."""
    system = {"role": "system", "content": "Answer every question with a <tool_call> block only."}
    return [system, *_demonstration(), {"role": "user", "content": "What is 17 + 25?"}]


def test_chat_completion_streamed_and_whole_agree_token_for_token(client, default_model):
    from transformers import AutoTokenizer

    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat.completions.create(
        model="policy", messages=messages, temperature=0, max_tokens=24, logprobs=True
    )
    choice = whole.choices[0]
    ids = [int(t.token.split(":")[1]) for t in choice.logprobs.content]
    assert whole.usage.completion_tokens == len(ids) <= 24 and choice.message.role == "assistant"
    text = AutoTokenizer.from_pretrained(default_model).decode(ids, skip_special_tokens=True)
    assert choice.message.content == text and text.strip()
    chunks = list(
        client.chat.completions.create(
            model="policy",
            messages=messages,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == choice.message.content and len([c for c in chunks if c.choices]) > 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [choice.finish_reason]
    assert chunks[-1].usage.completion_tokens == len(ids)
    assert [m.id for m in client.models.list().data] == ["policy"]


def test_a_tool_call_round_trip_in_the_openai_format(client):
    messages = demonstration()
    first = client.chat.completions.create(
        model="policy", messages=messages, tools=TOOLS, temperature=0, max_tokens=40
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    (call,) = choice.message.tool_calls
    args = json.loads(call.function.arguments)
    assert call.function.name == "add" and call.type == "function" and set(args) == {"a", "b"}
    # streamed, the same call comes back as a tool_calls delta
    chunks = list(
        client.chat.completions.create(
            model="policy", messages=messages, tools=TOOLS, temperature=0, max_tokens=40, stream=True
        )
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [(d.function.name, json.loads(d.function.arguments)) for d in deltas] == [("add", args)]
    assert "<tool_call>" not in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # the result goes back and the model answers on
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": str(int(args["a"]) + int(args["b"]))},
    ]
    second = client.chat.completions.create(
        model="policy", messages=messages, tools=TOOLS, temperature=0, max_tokens=40
    )
    assert second.choices[0].message.content or second.choices[0].message.tool_calls


def test_solve_answers_as_a_greedy_chat_completion(server, client):
    problem = "What is 3 + 4?"
    status, body = post(server + "/solve", json.dumps({"problem": problem}).encode())
    assert status == 200 and body["solution"]
    chat = client.chat.completions.create(
        model="policy", messages=[{"role": "user", "content": problem}], temperature=0, max_tokens=48
    )
    assert body["solution"] == chat.choices[0].message.content.strip()
    status, by_query = post(server + "/solve?problem=What%20is%203%20%2B%204%3F", b"")
    assert status == 200 and by_query["solution"] == body["solution"]


def test_bad_requests_get_4xx_with_a_message_and_the_replica_stays_up(server, client):
    chat = server + "/v1/chat/completions"
    good = {"model": "policy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    cases = {
        "no token": (chat, json.dumps(good).encode(), None, "POST", 401),
        "wrong token": (chat, json.dumps(good).encode(), "nope", "POST", 401),
        "bad JSON": (chat, b"{not json", TOKEN, "POST", 400),
        "unknown model": (chat, json.dumps({**good, "model": "gpt-9"}).encode(), TOKEN, "POST", 404),
        "oversize body": (chat, json.dumps({**good, "pad": "x" * 70_000}).encode(), TOKEN, "POST", 413),
        "max_tokens < 1": (chat, json.dumps({**good, "max_tokens": -1}).encode(), TOKEN, "POST", 400),
        "no messages": (chat, json.dumps({"model": "policy"}).encode(), TOKEN, "POST", 400),
        "prompt over the context": (
            chat,
            json.dumps({**good, "messages": [{"role": "user", "content": "word " * 1200}]}).encode(),
            TOKEN,
            "POST",
            400,
        ),
        "GET on chat": (chat, None, TOKEN, "GET", 405),
        "unknown path": (server + "/v2/nothing", b"{}", TOKEN, "POST", 404),
        "solve without a problem": (server + "/solve", b"{}", TOKEN, "POST", 400),
    }
    for name, (url, data, token, method, want) in cases.items():
        status, body = post(url, data, token, method)
        assert status == want, (name, status, body)
        assert body["error"]["message"], name
    capped = client.chat.completions.create(
        model="policy", messages=[{"role": "user", "content": "Count to 500."}], max_tokens=10_000
    )
    assert capped.usage.completion_tokens <= 48  # ServeConfig.max_tokens
    with urllib.request.urlopen(server + "/health", timeout=30) as response:
        assert response.status == 200


def test_a_burst_of_64_concurrent_requests_all_succeed(server):
    from openai import AsyncOpenAI

    async def burst() -> list:
        async with AsyncOpenAI(base_url=server + "/v1", api_key=TOKEN, max_retries=0, timeout=300) as aclient:
            return await asyncio.gather(
                *(
                    aclient.chat.completions.create(
                        model="policy",
                        messages=[{"role": "user", "content": f"What is {i} + {i}?"}],
                        max_tokens=16,
                        seed=i,
                    )
                    for i in range(64)
                )
            )

    replies = asyncio.run(burst())
    assert len(replies) == 64 and all(r.choices[0].message.content for r in replies)


def test_seed_002s_agent_generates_through_the_endpoint(server):
    from rayrl import AgentConfig, MultiTurnAgent

    agent = MultiTurnAgent(
        AgentConfig(
            model_name="policy",
            endpoint=server + "/v1",
            endpoint_token=TOKEN,
            temperature=0,
            max_new_tokens=16,
        )
    )
    reply = asyncio.run(agent.generate_response([{"role": "user", "content": "Say hello."}]))
    assert reply and agent.engine is None  # no local engine was started
