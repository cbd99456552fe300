"""Token capture of OpenAI-client episodes, with the real SmolLM2 tokenizer and chat template."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from rayrl.agent.capture import HistoryRewritten, TokenCapture
from rayrl.agent.chat_tokens import ChatTokens
from rayrl.agent.parsers import read_tool_calls

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def chat(default_model):
    return ChatTokens(AutoTokenizer.from_pretrained(default_model))


def reply(chat, text):
    """What an engine would return for `text`: its ids and an end-of-sequence token."""
    return chat.encode(text) + [chat.tokenizer.eos_token_id]


def test_a_continued_conversation_keeps_the_reply_ids_and_tokenises_only_new_messages(chat):
    capture = TokenCapture(chat)
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    first = capture.prompt(messages)
    assert first == chat.prompt_ids(messages)
    # ids a fresh tokenisation of the decoded text would not give back: " 5" split in two
    odd = (
        chat.encode("The answer is") + chat.encode(" ")[:1] + chat.encode("5") + [chat.tokenizer.eos_token_id]
    )
    message = capture.record(odd, [-0.5] * len(odd), 3, "stop")
    assert message == {"role": "assistant", "content": chat.tokenizer.decode(odd, skip_special_tokens=True)}
    messages += [message, {"role": "user", "content": "Are you sure?"}]
    second = capture.prompt(messages)
    assert second[: len(first) + len(odd)] == first + odd  # the engine's ids, not re-tokenised text
    second_reply = reply(chat, "Yes.")
    capture.record(second_reply, [-0.1] * len(second_reply), 4, "stop")
    (segment,) = capture.segments
    assert segment.ids == second + second_reply
    assert segment.mask == [0] * len(first) + [1] * len(odd) + [0] * (len(second) - len(first) - len(odd)) + [
        1
    ] * len(second_reply)
    assert [v for v, m in zip(segment.versions, segment.mask, strict=True) if m] == [3] * len(odd) + [
        4
    ] * len(second_reply)
    # the observation tokens are exactly the template's text between the turns
    rendered = chat.render(messages + [{"role": "assistant", "content": "Yes."}], False)
    assert chat.tokenizer.decode(segment.ids) == rendered.rstrip("\n")
    assert capture.rewrites == 0 and segment.turns == 2


def test_rewritten_history_starts_a_new_segment_or_is_refused(chat):
    for mode in ("split", "refuse"):
        capture = TokenCapture(chat, on_rewrite=mode)
        messages = [{"role": "user", "content": "What is 2 + 3?"}]
        capture.prompt(messages)
        text = reply(chat, "6")
        message = capture.record(text, [0.0] * len(text), 0, "stop")
        edited = [
            {"role": "user", "content": "What is 2 + 3? Think."},
            message,
            {"role": "user", "content": "Again"},
        ]
        if mode == "refuse":
            with pytest.raises(HistoryRewritten, match="history rewritten"):
                capture.prompt(edited)
            continue
        ids = capture.prompt(edited)
        assert ids == chat.prompt_ids(edited) and len(capture.segments) == 2 and capture.rewrites == 1
    # an agent that changed the reply it was given rewrote history too
    capture = TokenCapture(chat)
    capture.prompt([{"role": "user", "content": "Hi"}])
    capture.record(reply(chat, "Hello!"), [0.0] * 4, 0, "stop")
    capture.prompt(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "?"},
        ]
    )
    assert capture.rewrites == 1


def test_tool_calls_go_out_in_openai_format_and_come_back_without_a_rewrite(chat):
    capture = TokenCapture(chat)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 3."}]
    prompt = chat.tokenizer.decode(capture.prompt(messages, TOOLS))
    assert '"name": "add"' in prompt and "<tool_call>" in prompt and "Be brief." in prompt
    text = 'Sure.\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    ids = reply(chat, text)
    message = capture.record(ids, [0.0] * len(ids), 1, "stop", ["add"])
    assert message["content"] == "Sure."
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "add"
    assert json.loads(call["function"]["arguments"]) == {"a": 2, "b": 3}
    # the openai package sends the message back with extra null fields
    echoed = {**message, "refusal": None, "function_call": None, "audio": None}
    tool_turn = {"role": "tool", "tool_call_id": call["id"], "content": "5"}
    follow = capture.prompt(messages + [echoed, tool_turn], TOOLS)
    assert capture.rewrites == 0 and follow[: len(capture.segments[0].ids)] == capture.segments[0].ids
    assert chat.tokenizer.decode(follow).endswith("<|im_start|>tool\n5<|im_end|>\n<|im_start|>assistant\n")
    assert capture.prompt(messages + [echoed, tool_turn], TOOLS) == follow  # asked again: same prompt
    answer = reply(chat, "5")
    final = capture.record(answer, [0.0] * len(answer), 1, "stop", ["add"])
    # the next request with other tools: a new segment
    capture.prompt(messages + [echoed, tool_turn, final, {"role": "user", "content": "And 4?"}], None)
    assert capture.rewrites == 1 and len(capture.segments) == 2


def test_malformed_messages_are_a_clear_error(chat):
    capture = TokenCapture(chat)
    for bad, match in [
        ([], "non-empty"),
        ([{"content": "x"}], "role"),
        ([{"role": "user", "content": 3}], "string"),
    ]:
        with pytest.raises(ValueError, match=match):
            capture.prompt(bad)


def test_read_tool_calls_takes_known_names_and_leaves_the_rest():
    text = (
        'a <tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call> b '
        '<tool_call>{"name": "rm", "arguments": {}}</tool_call> <tool_call>{broken</tool_call>'
    )
    calls, rest = read_tool_calls(text, {"add"})
    assert calls == [("add", {"a": 1})]
    assert rest.startswith("a  b <tool_call>") and "broken" in rest
    assert read_tool_calls("no calls", {"add"}) == ([], "no calls")
