"""OpenAI request checks and the streamed-text hold-back of `rayrl serve`, with the real
SmolLM2 tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rayrl.agent.openai_format import RequestError, read_chat_request
from rayrl.serve import TOOL_MARK, ServeConfig, TextStream, cut_at

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ([1, 2], 400, "JSON object"),
        ({}, 400, "messages"),
        ({"messages": []}, 400, "messages"),
        ({"messages": USER, "n": 2}, 400, "n must be 1"),
        ({"messages": USER, "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": USER, "max_tokens": "5"}, 400, "max_tokens"),
        ({"messages": USER, "temperature": 3}, 400, "temperature"),
        ({"messages": USER, "top_p": 0}, 400, "top_p"),
        ({"messages": USER, "tools": [{"type": "function"}]}, 400, "function.name"),
        ({"messages": USER, "stream": "yes"}, 400, "stream"),
        ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"messages": USER, "seed": 1.5}, 400, "seed"),
    ],
)
def test_malformed_requests_are_4xx_with_the_field_named(body, status, words):
    with pytest.raises(RequestError, match=words) as err:
        read_chat_request(body)
    assert err.value.status == status and err.value.body()["error"]["code"] == status


def test_a_good_request_is_read_whole():
    tool = {"type": "function", "function": {"name": "add", "parameters": {}}}
    req = read_chat_request(
        {
            "messages": USER,
            "tools": [tool],
            "max_completion_tokens": 7,
            "temperature": 0,
            "stop": "END",
            "stream": True,
            "stream_options": {"include_usage": True},
            "model": "policy",
        }
    )
    assert (req.max_tokens, req.temperature, req.stop, req.stream, req.include_usage) == (
        7,
        0.0,
        ["END"],
        True,
        True,
    )
    assert req.tool_names == ["add"] and req.model == "policy"
    assert read_chat_request({"messages": USER, "tools": [tool], "tool_choice": "none"}).tools is None


@pytest.fixture(scope="module")
def tokenizer(default_model):
    return AutoTokenizer.from_pretrained(default_model)


def stream_all(tokenizer, text: str, marks: list[str]) -> tuple[str, TextStream]:
    stream = TextStream(tokenizer, marks)
    out = "".join(stream.add([i]) for i in tokenizer.encode(text, add_special_tokens=False))
    return out, stream


def test_streamed_deltas_add_up_to_the_decoded_text(tokenizer):
    text = "Sure: 12 + 30 = 42. Ünïcödé and emoji 🙂 too."
    out, _ = stream_all(tokenizer, text, [])
    assert out == text


def test_tool_calls_and_stop_strings_are_held_back(tokenizer):
    text = 'Let me add.\n<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'
    out, stream = stream_all(tokenizer, text, [TOOL_MARK])
    assert out == "Let me add.\n" and stream.rest("Let me add.\n") == ""
    out, stream = stream_all(tokenizer, "The answer is 7. END of story", ["END"])
    assert out == "The answer is 7. " and cut_at("The answer is 7. END of story", ["END"]) == out
    # a partial mark at the end waits for the tokens that decide it
    stream = TextStream(tokenizer, [TOOL_MARK])
    assert stream.add(tokenizer.encode("ok <tool", add_special_tokens=False)) == "ok "
    assert stream.rest("ok <tools are fine>") == "<tools are fine>"


def test_serve_settings_are_checked():
    from rayrl.config import ConfigError

    with pytest.raises(ConfigError, match="max_tokens"):
        ServeConfig(max_tokens=0)
    assert ServeConfig().host == "127.0.0.1"


def test_serving_a_model_that_is_not_there_is_a_clear_error(tmp_path, capsys):
    from rayrl.cli import main

    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}\n")
    assert main(["serve", str(tmp_path / "run")]) == 2
    assert "no final policy" in capsys.readouterr().err
