"""Token bookkeeping with the real SmolLM2 tokenizer and chat template."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from rayrl.actors import modeling
from rayrl.actors.agent_loop import EpisodeRunner
from rayrl.config import EnvironmentConfig, InferenceConfig


@pytest.fixture(scope="module")
def runner(default_model):
    return EpisodeRunner(default_model, EnvironmentConfig(), InferenceConfig(), engines=[])


@pytest.mark.parametrize("ended_with_eos", [True, False])
def test_feedback_ids_match_the_chat_template(runner, ended_with_eos):
    tok = runner.tokenizer
    ids, messages = runner.prompt_ids("What is 2 + 2?")
    answer = tok.encode("2 + 2 = 5", add_special_tokens=False)
    if ended_with_eos:
        answer = answer + [tok.eos_token_id]
    feedback = runner.user_turn_ids(messages, "Wrong. Try again.", ended_with_eos)
    full = ids + answer + feedback
    expected = tok.apply_chat_template(
        messages
        + [{"role": "assistant", "content": "2 + 2 = 5"}, {"role": "user", "content": "Wrong. Try again."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert tok.decode(full) == expected
    assert full == tok.encode(expected, add_special_tokens=False)


def test_system_prompt_comes_from_the_environment(runner):
    ids, messages = runner.prompt_ids("What is 1 + 1?")
    assert messages[0] == {"role": "system", "content": "Solve the arithmetic problem."}
    assert "SmolLM" not in runner.tokenizer.decode(ids)


def test_token_logprobs_match_a_full_log_softmax(tiny_model):
    model = modeling.load_causal_lm(tiny_model, torch.device("cpu"), trainable=False)
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 9))
    attn = torch.ones_like(ids)
    attn[1, 7:] = 0  # right padding
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, 4:] = True
    mask[1, 3:7] = True
    lp, ent = modeling.token_logprobs(model, ids, attn, mask, with_entropy=True)
    full = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits.float(), -1)
    expected = [full[b, t - 1, ids[b, t]].item() for b in range(2) for t in range(9) if mask[b, t]]
    assert lp.tolist() == pytest.approx(expected, abs=1e-5)
    assert (ent > 0).all()


def test_sequence_batch_flat_order():
    table = pa.table(
        {
            "input_ids": pa.array([[1, 2, 3, 4], [5, 6], [7, 8, 9]], type=pa.list_(pa.int32())),
            "loss_mask": pa.array([[0, 0, 1, 1], [0, 1], [0, 1, 1]], type=pa.list_(pa.int8())),
        }
    )
    batch = modeling.SequenceBatch(table)
    assert batch.num_tokens == 5
    assert batch.flat_index(np.array([2, 0])).tolist() == [3, 4, 0, 1]
    ids, attn, mask = batch.padded(np.array([1, 0]), torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 0, 0], [1, 2, 3, 4]]
    assert attn.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert [len(m) for m in batch.micro_batches(np.arange(3), 2)] == [2, 1]
