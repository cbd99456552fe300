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


def _grouped_table():
    """Two prompts with three continuations each (one multi-turn: trained, fed back,
    trained), and a row whose prompt is its own."""
    rng = np.random.default_rng(1)
    rows, masks = [], []
    for prompt_len in (5, 7):
        prompt = rng.integers(3, 1000, prompt_len).tolist()
        for n in (2, 4, 6):
            rows.append(prompt + rng.integers(3, 1000, n).tolist())
            masks.append([0] * prompt_len + [1] * n)
    rows[1] = rows[1] + [11, 12, 13, 14]  # feedback turn (not trained), then a trained answer
    masks[1] = masks[1][:-1] + [1, 0, 0, 1, 1]
    rows[1], masks[1] = rows[1][:-1], masks[1][:-1]
    rows.append([9, 8, 7, 6, 5, 4])
    masks.append([0, 0, 1, 1, 1, 1])
    return pa.table(
        {
            "input_ids": pa.array(rows, type=pa.list_(pa.int32())),
            "loss_mask": pa.array(masks, type=pa.list_(pa.int8())),
        }
    )


def test_a_packed_pass_holds_each_prompt_once_and_keeps_groups_together():
    batch = modeling.SequenceBatch(_grouped_table())
    rows = np.array([3, 0, 6, 4, 1, 5, 2])
    assert [r.tolist() for r in batch.micro_batches(rows, 3, packing=True)] == [[3, 4, 5], [0, 1, 2], [6]]
    packed = batch.packed(np.array([0, 1, 2, 6]), torch.device("cpu"))
    # a packed row per prompt: rows 0-2 after their shared 5-token prompt, row 6 after its own
    first = 5 + sum(int(batch.lengths[r]) - 5 for r in (0, 1, 2))
    assert packed["input_ids"].shape == (2, first)
    second = 2 + int(batch.lengths[6]) - 2
    assert packed["attention_mask"][1, 0, second:, :second].sum() == 0  # padding sees no token
    assert len(packed["predictor"]) == int(batch.token_counts[[0, 1, 2, 6]].sum())
    mask = packed["attention_mask"][0, 0]
    first_row_start = 5  # row 0's continuation follows the shared prompt
    second_row_start = 5 + 2
    assert mask[second_row_start, :5].all()  # row 1 sees the shared prompt
    assert not mask[second_row_start, first_row_start : first_row_start + 2].any()  # but not row 0


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("budget", [1, 12, 20, 40, 10_000])
def test_micro_batches_by_token_budget(packing, budget):
    """Each pass holds as many rows as keep its tokens, as computed (rows x width,
    padding included), within the budget: the next row would have broken it."""
    batch = modeling.SequenceBatch(_grouped_table())
    rows = np.array([3, 0, 6, 4, 1, 5, 2])
    cuts = batch.micro_batches(rows, 2, packing=packing, max_tokens=budget)
    assert sorted(np.concatenate(cuts).tolist()) == sorted(rows.tolist())
    assert np.concatenate(cuts).tolist() == np.concatenate(batch.micro_batches(rows, 2, packing)).tolist()

    def tokens(part):
        return batch.forward_inputs(part, torch.device("cpu"), packing)["input_ids"].numel()

    for k, part in enumerate(cuts):
        assert tokens(part) <= budget or len(part) == 1
        if k + 1 < len(cuts):
            assert tokens(np.append(part, cuts[k + 1][0])) > budget
    if budget == 1:
        assert len(cuts) == len(rows)
    if budget == 10_000:
        assert len(cuts) == 1
    assert batch.micro_batches(rows[:0], 2, packing=packing, max_tokens=budget) == []


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_passes_equal_padded_ones_in_values_and_gradients(tiny_model, attention):
    from rayrl.actors.critic import ValueModel

    model = modeling.load_causal_lm(tiny_model, torch.device("cpu"), trainable=True)
    model.set_attn_implementation(attention)
    batch = modeling.SequenceBatch(_grouped_table())
    rows = np.arange(len(batch))
    weights = torch.linspace(-1.0, 1.0, batch.num_tokens)
    results = {}
    for packing in (False, True):
        model.zero_grad()
        lp, ent = modeling.token_logprobs(
            model, **batch.forward_inputs(rows, torch.device("cpu"), packing), with_entropy=True
        )
        (lp * weights).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results[packing] = (lp.detach(), ent, grads)
    (lp0, ent0, g0), (lp1, ent1, g1) = results[False], results[True]
    assert lp1.tolist() == pytest.approx(lp0.tolist(), rel=1e-5, abs=1e-5)
    assert ent1.tolist() == pytest.approx(ent0.tolist(), rel=1e-5, abs=1e-5)
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    critic = ValueModel(tiny_model)
    critic.backbone.set_attn_implementation(attention)
    with torch.no_grad():
        v0 = critic(**batch.forward_inputs(rows, torch.device("cpu"), False))
        v1 = critic(**batch.forward_inputs(rows, torch.device("cpu"), True))
    assert v1.tolist() == pytest.approx(v0.tolist(), abs=1e-5)


def test_roles_pick_their_attention_kernel_and_both_give_the_same_log_probs(tiny_model):
    from rayrl.actors.critic import Critic
    from rayrl.actors.learner import ActorLearner
    from rayrl.actors.reference import ReferenceWorker
    from rayrl.config import CriticConfig, LearnerConfig, ReferenceConfig, TrainingConfig

    def kernel(model) -> str:
        return model.config._attn_implementation

    training = TrainingConfig(batch_size=4, group_size=2)
    # "auto" on CPU: eager where there is a backward pass, the fused kernel for the forward-only reference
    assert kernel(ActorLearner(tiny_model, training, LearnerConfig()).model) == "eager"
    assert kernel(Critic(tiny_model, training, CriticConfig()).model.backbone) == "eager"
    assert kernel(ReferenceWorker(tiny_model, ReferenceConfig()).model) == "sdpa"
    assert kernel(ActorLearner(tiny_model, training, LearnerConfig(attention="sdpa")).model) == "sdpa"
    assert kernel(ReferenceWorker(tiny_model, ReferenceConfig(attention="eager")).model) == "eager"
    assert modeling.attention_kernel("auto", torch.device("cuda"), trainable=True) == "sdpa"

    batch = _grouped_table()
    by_kernel = {
        attention: ReferenceWorker(tiny_model, ReferenceConfig(attention=attention, autocast_dtype="float32"))
        .compute_logprobs(batch)
        .tolist()
        for attention in ("sdpa", "eager")
    }
    assert by_kernel["eager"] == pytest.approx(by_kernel["sdpa"], abs=1e-5)


# ---- load_tokenizer: AutoTokenizer's result without its torch import ------------------
SAMPLE = [
    {"role": "system", "content": "Answer with a number."},
    {"role": "user", "content": "What is 12 + 30?  Ünïcode, tabs\tand\nlines."},
    {"role": "assistant", "content": "42"},
    {"role": "user", "content": "And 7 x 6?"},
]


@pytest.mark.parametrize("which", ["default", "tiny"])
def test_load_tokenizer_gives_what_auto_tokenizer_gives(default_model, tiny_model, which):
    from transformers import AutoTokenizer

    from rayrl.agent.chat_tokens import load_tokenizer

    path = default_model if which == "default" else tiny_model
    fast, auto = load_tokenizer(path), AutoTokenizer.from_pretrained(path)
    assert type(fast) is type(auto)
    text = auto.apply_chat_template(SAMPLE, add_generation_prompt=True, tokenize=False)
    assert fast.apply_chat_template(SAMPLE, add_generation_prompt=True, tokenize=False) == text
    assert fast(text)["input_ids"] == auto(text)["input_ids"]
    assert fast.encode(text, add_special_tokens=False) == auto.encode(text, add_special_tokens=False)
    for name in ("eos_token_id", "bos_token_id", "pad_token_id", "all_special_ids", "padding_side"):
        assert getattr(fast, name) == getattr(auto, name), name
    assert len(fast) == len(auto)


def test_the_generic_model_types_get_no_per_type_correction_in_auto_tokenizer():
    """Guards `GENERIC_TOKENIZER_MODEL_TYPES` against a transformers upgrade: AutoTokenizer
    swaps a folder's generic class only for the types in these tables."""
    from transformers.models.auto import tokenization_auto as auto

    from rayrl.agent.chat_tokens import GENERIC_TOKENIZER_MODEL_TYPES

    for model_type in GENERIC_TOKENIZER_MODEL_TYPES:
        assert model_type not in auto.MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS
        assert "Mistral" not in (auto.TOKENIZER_MAPPING_NAMES.get(model_type) or "")


def test_load_tokenizer_leaves_torch_unimported_and_falls_back_to_auto_tokenizer(default_model, tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    probe = (
        "import sys; from rayrl.agent.chat_tokens import load_tokenizer; "
        f"t = load_tokenizer({default_model!r}); print(type(t).__name__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["TokenizersBackend", "False"]

    # a folder that names another class goes through AutoTokenizer, which honours it
    other = tmp_path / "other"
    shutil.copytree(default_model, other, ignore=shutil.ignore_patterns("*.safetensors"))
    settings = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**settings, "tokenizer_class": "GPT2Tokenizer"}))
    from rayrl.agent.chat_tokens import load_tokenizer

    assert type(load_tokenizer(other)).__name__ == "GPT2Tokenizer"


@pytest.mark.parametrize("packing", [False, True])
def test_scoring_passes_cut_by_tokens_give_the_same_logprobs(tiny_model, packing):
    model = modeling.load_causal_lm(tiny_model, torch.device("cpu"), trainable=False)
    batch = modeling.SequenceBatch(_grouped_table())
    forward = modeling.TokenLogprobs(model)
    cpu = torch.device("cpu")
    by_rows = modeling.batch_logprobs(forward, batch, 2, cpu, "float32", packing=packing)
    by_tokens = modeling.batch_logprobs(forward, batch, 2, cpu, "float32", packing=packing, max_tokens=12)
    assert len(batch.micro_batches(np.arange(len(batch)), 2, packing, 12)) != 4
    np.testing.assert_allclose(by_tokens, by_rows, rtol=1e-5, atol=1e-6)
