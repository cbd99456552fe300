"""The trained roles' numerics on each device, against float64 on the CPU.

Every test runs on the CPU in the default suite and again on CUDA where there is one
(`pytest -m gpu tests/unit/test_on_device.py`). It needs only torch, transformers, numpy,
pyarrow and pydantic: no Ray, vLLM or DeepSpeed, so it runs on a bare GPU machine with
those three small packages beside torch. The roles are plain classes, so the learner and
the reference run here as objects, exactly as their Ray actors run them.
"""

import numpy as np
import pyarrow as pa
import pytest
import torch

from rayrl.actors import modeling
from rayrl.algorithms import AdvantageInputs, compute_advantages, compute_policy_loss, kl_penalty

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory) -> str:
    """A random two-layer Llama (no tokenizer: the roles take token ids)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("models") / "small-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def rollout_table(num_groups=2, group_size=3, seed=0) -> pa.Table:
    """Groups of rows that share a prompt, with advantages and engine log-probs."""
    rng = np.random.default_rng(seed)
    ids, masks, adv, behaviour = [], [], [], []
    for _ in range(num_groups):
        prompt = rng.integers(3, 512, int(rng.integers(4, 8))).tolist()
        for _ in range(group_size):
            n = int(rng.integers(3, 9))
            ids.append(prompt + rng.integers(3, 512, n).tolist())
            masks.append([0] * len(prompt) + [1] * n)
            a = float(rng.normal())
            adv.append([0.0] * len(prompt) + [a] * n)
            behaviour.append([0.0] * len(prompt) + (-6.0 + 0.1 * rng.normal(size=n)).tolist())
    return pa.table(
        {
            "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
            "loss_mask": pa.array(masks, type=pa.list_(pa.int8())),
            "advantages": pa.array(adv, type=pa.list_(pa.float32())),
            "rollout_logprobs": pa.array(behaviour, type=pa.list_(pa.float32())),
        }
    )


def float64_logprobs(path: str, table: pa.Table) -> torch.Tensor:
    """A plain Hugging Face forward in float64: log-softmax of the full logits, read at
    each trained token, row by row."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)
    out = []
    for ids, mask in zip(
        table.column("input_ids").to_pylist(), table.column("loss_mask").to_pylist(), strict=True
    ):
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits, -1)
        out += [logp[t - 1, ids[t]] for t in range(1, len(ids)) if mask[t]]
    return torch.stack(out)


def test_estimators_and_losses_on_the_device_match_float64(device):
    rng = np.random.default_rng(0)
    rewards = torch.zeros(6, 5, dtype=torch.float64)
    rewards[:, -1] = torch.from_numpy(rng.uniform(size=6))
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[2, 3:] = False
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    ref64, _ = compute_advantages("grpo", AdvantageInputs(rewards, mask, groups, None, 1.0, 1.0))
    got, _ = compute_advantages(
        "grpo",
        AdvantageInputs(rewards.float().to(device), mask.to(device), groups.to(device), None, 1.0, 1.0),
    )
    assert got.device.type == device.type
    torch.testing.assert_close(got.cpu().double(), ref64, rtol=1e-5, atol=1e-5)

    lp = torch.from_numpy(rng.normal(-2.0, 0.5, 40))
    old = lp + torch.from_numpy(rng.normal(0.0, 0.3, 40))
    ref_lp = lp + torch.from_numpy(rng.normal(0.0, 0.1, 40))
    adv = torch.from_numpy(rng.normal(size=40))
    loss64, clip64 = compute_policy_loss(lp, old, adv, 0.2, 0.28, 3.0)
    loss, clipped = compute_policy_loss(*(t.float().to(device) for t in (lp, old, adv)), 0.2, 0.28, 3.0)
    torch.testing.assert_close(loss.cpu().double(), loss64, rtol=1e-5, atol=1e-5)
    assert torch.equal(clipped.cpu(), clip64)
    for estimator in ("k1", "k2", "k3"):
        kl = kl_penalty(lp.float().to(device), ref_lp.float().to(device), estimator)
        torch.testing.assert_close(kl.cpu().double(), kl_penalty(lp, ref_lp, estimator), rtol=1e-4, atol=1e-6)


def test_weight_buckets_pack_and_unpack_on_the_device(device):
    from rayrl import weight_sync

    class Loopback:
        """A process group of one sender and one receiver in this process: broadcasts
        are recorded while sending, then replayed into the receiver's buffers."""

        def __init__(self):
            self.sent, self.replay = [], None

        def broadcast(self, flat, root):
            if self.replay is None:
                self.sent.append(flat.clone())
            else:
                flat.copy_(self.sent[self.replay])
                self.replay += 1
            return type("Done", (), {"wait": lambda self: None})()

    torch.manual_seed(0)
    named = [
        ("embed", torch.randn(50, 16, device=device)),
        ("norm", torch.randn(16, device=device)),
        ("proj", torch.randn(16, 48, device=device)),
        ("head_bias", torch.randn(50, device=device)),
    ]
    spec = [weight_sync.TensorSpec(n, tuple(t.shape), "bfloat16") for n, t in named]
    group = Loopback()
    sent = weight_sync.send_weights(group, named, spec, bucket_bytes=2048, device=device)
    assert len(group.sent) > 1  # several buckets
    assert sent == sum(t.numel() for _, t in named) * 2
    group.replay = 0
    received = [pair for bucket in weight_sync.receive_buckets(group, spec, 2048, device) for pair in bucket]
    assert [n for n, _ in received] == [n for n, _ in named]
    for (_, got), (_, want) in zip(received, named, strict=True):
        assert got.device.type == device.type and got.dtype == torch.bfloat16
        assert torch.equal(got, want.to(torch.bfloat16))


def test_reference_logprobs_equal_a_plain_forward(small_llama, device, monkeypatch):
    from rayrl.actors.reference import ReferenceWorker
    from rayrl.config import ReferenceConfig

    monkeypatch.setattr(modeling, "pick_device", lambda: device)
    table = rollout_table()
    want = float64_logprobs(small_llama, table)
    for autocast, tol in (("float32", 1e-4), ("bfloat16", 5e-2)):
        worker = ReferenceWorker(small_llama, ReferenceConfig(autocast_dtype=autocast, micro_batch_size=4))
        got = torch.from_numpy(worker.compute_logprobs(table)).double()
        torch.testing.assert_close(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize(
    "packing, budget", [(True, None), (False, None), (True, 64)], ids=["packed", "padded", "token_budget"]
)
def test_one_learner_update_on_the_device_matches_float64(small_llama, device, packing, budget, monkeypatch):
    """One on-policy GRPO update with the torch strategy in bf16 autocast: its loss and
    gradient norm against the same objective computed in float64 on the CPU."""
    from rayrl.actors.learner import ActorLearner
    from rayrl.algorithms import aggregate_loss
    from rayrl.config import LearnerConfig, TrainingConfig

    monkeypatch.setattr(modeling, "pick_device", lambda: device)
    table = rollout_table()
    training = TrainingConfig(
        batch_size=6, group_size=3, kl_coef=0.0, learning_rate=1e-3, rollout_correction="none"
    )
    learner = ActorLearner(
        small_llama,
        training,
        LearnerConfig(
            micro_batch_size=4, autocast_dtype="bfloat16", packing=packing, max_tokens_per_pass=budget
        ),
    )
    assert next(learner.model.parameters()).device.type == device.type
    metrics = learner.update(table)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(small_llama, dtype=torch.float64)
    seqs = modeling.SequenceBatch(table)
    rows = np.arange(len(seqs))
    lp, _ = modeling.token_logprobs(model, **seqs.forward_inputs(rows, torch.device("cpu"), False))
    adv = torch.from_numpy(modeling.trainable_values(table, "advantages")).double()
    pg, _ = compute_policy_loss(lp, lp.detach(), adv, training.clip_ratio_low, training.clip_ratio_high)
    select = seqs.padded(rows, torch.device("cpu"))[2][:, 1:]
    dense = torch.zeros(select.shape, dtype=torch.float64)
    dense[select] = pg
    loss = aggregate_loss(
        dense, select, training.loss_agg_mode, num_tokens=seqs.num_tokens, num_seqs=len(seqs)
    )
    loss.backward()
    norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None))
    assert metrics["total_loss"] == pytest.approx(float(loss.detach()), abs=1e-4)
    assert metrics["grad_norm"] == pytest.approx(float(norm), rel=2e-2)


def test_a_learner_that_still_is_the_reference_gives_the_update_a_reference_pass_would(
    small_llama, device, monkeypatch
):
    """The first step of a run skips the reference's pass (`RayPPOTrainer.learner_is_reference`):
    the learner takes its own log-probs as the reference's. With the k1 estimator, whose
    gradient at policy == reference is not zero, the update must equal one with the
    reference's log-probs in the batch, and differ from one without the KL term."""
    from rayrl.actors.learner import ActorLearner
    from rayrl.actors.reference import ReferenceWorker
    from rayrl.config import LearnerConfig, ReferenceConfig, TrainingConfig

    monkeypatch.setattr(modeling, "pick_device", lambda: device)
    table = rollout_table()
    training = TrainingConfig(
        batch_size=6,
        group_size=3,
        kl_coef=0.5,
        kl_estimator="k1",
        learning_rate=1e-3,
        rollout_correction="none",
    )
    reference = ReferenceWorker(small_llama, ReferenceConfig(autocast_dtype="float32", micro_batch_size=4))
    scored = modeling.with_token_columns(table, {"ref_logprobs": reference.compute_logprobs(table)})
    runs = {}
    for name, batch, own in (
        ("reference pass", scored, False),
        ("own", table, True),
        ("no KL", table, False),
    ):
        learner = ActorLearner(
            small_llama, training, LearnerConfig(micro_batch_size=4, autocast_dtype="float32")
        )
        metrics = learner.update(batch, own_reference=own)
        runs[name] = (metrics, learner.flat_parameters())
    (passed, passed_w), (own, own_w), (none, _) = runs["reference pass"], runs["own"], runs["no KL"]
    assert own["kl"] == 0.0 and passed["kl"] == pytest.approx(0.0, abs=1e-5)
    assert own["grad_norm"] == pytest.approx(passed["grad_norm"], rel=1e-4)
    np.testing.assert_allclose(own_w, passed_w, rtol=0, atol=1e-6)
    assert own["grad_norm"] != pytest.approx(none["grad_norm"], rel=1e-3)  # the KL term is in the update


@pytest.mark.parametrize("budget", [None, 64], ids=["by_rows", "token_budget"])
def test_one_critic_update_on_the_device_matches_float64(small_llama, device, budget, monkeypatch):
    """One clipped value-regression step of the critic (torch strategy, bf16 autocast):
    its value loss and gradient norm against the same objective in float64 on the CPU,
    from the same initial weights (the value head is freshly drawn)."""
    import copy

    from rayrl.actors.critic import Critic
    from rayrl.algorithms import compute_value_loss
    from rayrl.config import CriticConfig, TrainingConfig

    monkeypatch.setattr(modeling, "pick_device", lambda: device)
    table = rollout_table()
    training = TrainingConfig(batch_size=6, group_size=3, adv_estimator="gae", rollout_correction="none")
    config = CriticConfig(micro_batch_size=4, autocast_dtype="bfloat16", max_tokens_per_pass=budget)
    critic = Critic(small_llama, training, config)
    assert next(critic.model.parameters()).device.type == device.type
    reference = copy.deepcopy(critic.model).to("cpu", torch.float64)

    old_values = critic.compute_values(table)  # as the scoring stage takes them
    returns = np.random.default_rng(1).normal(size=old_values.shape).astype(np.float32)
    scored = modeling.with_token_columns(table, {"old_values": old_values, "returns": returns})
    metrics = critic.update(scored)

    seqs = modeling.SequenceBatch(scored)
    inputs = seqs.forward_inputs(np.arange(len(seqs)), torch.device("cpu"), False)
    values = reference(**inputs).double()
    assert values.shape == old_values.shape
    token_loss, _ = compute_value_loss(
        values,
        torch.from_numpy(old_values).double(),
        torch.from_numpy(returns).double(),
        CriticConfig().value_clip,
    )
    loss = token_loss.sum() / seqs.num_tokens
    loss.backward()
    norm = torch.sqrt(sum((p.grad**2).sum() for p in reference.parameters() if p.grad is not None))
    assert metrics["value_loss"] == pytest.approx(float(loss.detach()), rel=2e-2)
    assert metrics["critic_grad_norm"] == pytest.approx(float(norm), rel=2e-2)
    assert metrics["value_clip_frac"] == 0.0  # the first step starts at the old values
