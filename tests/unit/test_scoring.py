"""The scoring stage on real pyarrow batches: token rewards, KL in reward, filters, columns."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from rayrl.actors.modeling import trainable_values, with_token_columns
from rayrl.actors.scoring import score_batch
from rayrl.config import TrainingConfig


def batch(rewards=(1.0, 0.0, 0.5, 0.5), groups=(0, 0, 1, 1)):
    # prompt tokens (mask 0), generated tokens (1), a feedback turn (0), more generated (1)
    masks = [[0, 0, 1, 1, 0, 1], [0, 1, 1], [0, 0, 0, 1, 1, 1, 1], [0, 1]]
    return pa.table(
        {
            "input_ids": pa.array([list(range(len(m))) for m in masks], type=pa.list_(pa.int32())),
            "loss_mask": pa.array(masks, type=pa.list_(pa.int8())),
            "rollout_logprobs": pa.array([[-0.5 * x for x in m] for m in masks], type=pa.list_(pa.float32())),
            "reward": pa.array(rewards, type=pa.float64()),
            "group": pa.array(groups, type=pa.int64()),
        }
    )


def test_token_columns_round_trip_and_stay_aligned_after_filtering():
    b = batch()
    flat = np.arange(1, 11, dtype=np.float32)  # 3 + 2 + 4 + 1 trainable tokens
    table = with_token_columns(b, {"x": flat})
    assert table.column("x").to_pylist()[0] == [0, 0, 1, 2, 0, 3]
    np.testing.assert_array_equal(trainable_values(table, "x"), flat)
    kept = table.filter(pa.array([False, True, True, False]))
    np.testing.assert_array_equal(trainable_values(kept, "x"), [4, 5, 6, 7, 8, 9])
    with pytest.raises(ValueError, match="trainable tokens"):
        with_token_columns(b, {"x": flat[:3]})


def test_grpo_scores_broadcast_over_each_episodes_tokens():
    table, metrics = score_batch(batch(), None, None, TrainingConfig(adv_estimator="grpo", kl_coef=0))
    adv = trainable_values(table, "advantages")
    a = 0.5 / (np.sqrt(0.5) + 1e-6)
    np.testing.assert_allclose(adv, [a, a, a, -a, -a, 0, 0, 0, 0, 0], rtol=1e-5)
    assert metrics["kept_episodes"] == 4 and metrics["filtered_episodes"] == 0
    assert "ref_logprobs" not in table.column_names


def test_filter_groups_drops_all_equal_groups():
    cfg = TrainingConfig(adv_estimator="rloo", filter_groups=True, kl_coef=0)
    table, metrics = score_batch(batch(), None, None, cfg)
    assert table.num_rows == 2 and table.column("group").to_pylist() == [0, 0]
    np.testing.assert_allclose(trainable_values(table, "advantages"), [1, 1, 1, -1, -1])
    assert metrics["filtered_episodes"] == 2


def test_kl_in_reward_with_gae_returns_and_values():
    cfg = TrainingConfig(adv_estimator="gae", kl_mode="reward", kl_coef=0.1, kl_estimator="k1", lam=1.0)
    b = batch()
    n = 10
    ref = trainable_values(b, "rollout_logprobs") - 0.2  # policy - ref = +0.2 on every token
    values = np.zeros(n, dtype=np.float32)
    table, metrics = score_batch(b, ref, values, cfg)
    assert metrics["kl_reward"] == pytest.approx(0.2, rel=1e-5)
    returns = trainable_values(table, "returns")
    # gamma = lam = 1, zero values: return = reward-to-go = episode reward - 0.02 per remaining token
    want = [
        1 - 0.06,
        1 - 0.04,
        1 - 0.02,
        -0.04,
        -0.02,
        0.5 - 0.08,
        0.5 - 0.06,
        0.5 - 0.04,
        0.5 - 0.02,
        0.5 - 0.02,
    ]
    np.testing.assert_allclose(returns, want, rtol=1e-5)
    np.testing.assert_allclose(trainable_values(table, "old_values"), values)
    np.testing.assert_allclose(trainable_values(table, "ref_logprobs"), ref)
    adv = torch.from_numpy(trainable_values(table, "advantages")).double()
    assert float(adv.mean()) == pytest.approx(0.0, abs=1e-6)  # whitened


def test_reward_norm_whitens_episode_rewards_first():
    cfg = TrainingConfig(adv_estimator="reinforce_pp", reward_norm=True, kl_coef=0)
    table, _ = score_batch(batch(rewards=(10.0, 0.0, 5.0, 5.0)), None, None, cfg)
    table_small, _ = score_batch(batch(rewards=(1.0, 0.0, 0.5, 0.5)), None, None, cfg)
    np.testing.assert_allclose(
        trainable_values(table, "advantages"), trainable_values(table_small, "advantages"), rtol=1e-5
    )


def test_turn_rewards_land_on_the_last_token_of_their_own_turn():
    """Row 0 has two turns (tokens 2-3, then 5); row 2 one turn. A reward given to the
    first turn reaches that turn's tokens and not the second turn's under reinforce_pp
    (return-to-go, gamma=1), unlike an episode reward on the last token."""
    b = batch(rewards=(0.0, 0.0, 0.0, 0.0)).append_column(
        "turn_rewards", pa.array([[1.0, 0.0], [], [0.5], []], type=pa.list_(pa.float64()))
    )
    cfg = TrainingConfig(adv_estimator="reinforce_pp", kl_coef=0)
    table, _ = score_batch(b, None, None, cfg)
    returns = table.column("returns").to_pylist()
    assert returns[0][2:4] == [1.0, 1.0] and returns[0][5] == 0.0  # turn 1 credited, turn 2 not
    assert returns[2][3:] == [0.5] * 4
    # the same total as an episode reward credits both turns
    table_ep, _ = score_batch(batch(rewards=(1.0, 0.0, 0.5, 0.0)), None, None, cfg)
    assert table_ep.column("returns").to_pylist()[0][5] == 1.0
    # group estimators compare the rows' totals (turn rewards included)
    table_g, _ = score_batch(b, None, None, TrainingConfig(adv_estimator="grpo", kl_coef=0))
    adv = table_g.column("advantages").to_pylist()
    assert adv[0][2] > 0 > adv[1][1]
