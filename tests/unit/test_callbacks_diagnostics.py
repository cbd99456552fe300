"""Callbacks, health diagnostics and automatic adjustment on recorded metric sequences.

The rows have the keys and magnitudes of `RayPPOTrainer._metrics`; `RecordingTrainer`
implements the trainer interface the callbacks use (stop, adjust, learning rate, KL
coefficient) and `drive` calls the hooks the way the training loop does.
"""

from __future__ import annotations

import logging
import math
import re
import subprocess
import sys

import pytest

from rayrl.config import ConfigError
from rayrl.training import (
    AutoAdjust,
    AutoAdjustConfig,
    Callback,
    CallbackList,
    DiagnosticsMonitor,
    DiagnosticsThresholds,
    EarlyStopping,
    HealthStatus,
)


class RecordingTrainer:
    """The trainer interface of `rayrl.training.TrainerControl`, recording every call."""

    def __init__(self, learning_rate: float = 5e-6, kl_coef: float = 0.001):
        self.learning_rate = learning_rate
        self.kl_coef = kl_coef
        self.stop_reason: str | None = None
        self.changes: list[dict] = []

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason

    def adjust(
        self, reason: str, *, learning_rate: float | None = None, kl_coef: float | None = None
    ) -> dict:
        change: dict = {"step": len(self.changes), "reason": reason}
        if learning_rate is not None:
            change["learning_rate"] = [self.learning_rate, learning_rate]
            self.learning_rate = learning_rate
        if kl_coef is not None:
            change["kl_coef"] = [self.kl_coef, kl_coef]
            self.kl_coef = kl_coef
        self.changes.append(change)
        return change


def drive(callbacks, rows, trainer=None):
    """Run `rows` through the hooks as `RayPPOTrainer.fit` does; returns (trainer, rows seen)."""
    trainer = trainer or RecordingTrainer()
    hooks = CallbackList(callbacks)
    hooks.on_train_begin(trainer)
    seen = []
    for row in rows:
        seen.append(row)
        hooks.on_step_end(trainer, row)
        if trainer.stop_reason is not None:
            break
    hooks.on_train_end(trainer, seen)
    return trainer, seen


def row(step: int, **overrides) -> dict:
    """One GRPO metrics row with healthy values; small deterministic wobble like a real run."""
    wobble = math.sin(step * 1.7)
    base = {
        "step": step,
        "epoch": step,
        "reward_mean": 0.3,
        "reward_std": 0.16 + 0.02 * wobble,
        "success": 0.3,
        "episodes": 64,
        "env_errors": 0,
        "callback_errors": 0,
        "learning_rate": 5e-6,
        "tokens_per_s": 1800.0,
        "total_loss": 0.012 + 0.004 * wobble,
        "policy_loss": 0.011 + 0.004 * wobble,
        "kl": 0.001,
        "kl_coef": 0.001,
        "clip_frac": 0.02 + 0.005 * wobble,
        "entropy": 1.2,
        "grad_norm": 0.8 + 0.15 * wobble,
        "logprob_gap": 0.01,
        "advantage_std": 0.9,
        "weight_version": step,
        "time_rollout": 3.1,
        "time_update": 1.4,
    }
    base.update(overrides)
    return base


def healthy_run(n: int = 40) -> list[dict]:
    """Reward rises from 0.2 to 0.8, KL creeps from 0.0005 to 0.004, entropy eases from 1.3 to 1.0."""
    return [
        row(
            i,
            reward_mean=0.2 + 0.6 * i / n,
            success=0.2 + 0.6 * i / n,
            kl=0.0005 + 0.0035 * i / n,
            entropy=1.3 - 0.3 * i / n,
        )
        for i in range(1, n + 1)
    ]


def health(rows, **thresholds):
    return DiagnosticsMonitor.from_history(rows, DiagnosticsThresholds(**thresholds)).get_health_status()


# ---- DiagnosticsMonitor ------------------------------------------------------------


def test_healthy_run_is_healthy_and_reports_like_the_summary():
    monitor = DiagnosticsMonitor()
    drive([monitor], healthy_run())
    status = monitor.get_health_status()
    assert status.status is HealthStatus.HEALTHY
    assert status.reasons == [] and status.issues == []
    assert 0.14 < status.metrics["reward_diversity"] < 0.18
    assert 0.8 < status.metrics["gradient_stability"] <= 1.0
    assert status.metrics["kl"] == pytest.approx(0.004, rel=0.05)
    assert status.metrics["steps"] == 40
    assert re.fullmatch(
        r"Training health: HEALTHY\n"
        r"- Reward diversity: 0\.\d{3} \(good\)\n"
        r"- Gradient stability: 0\.\d{3} \(stable\)\n"
        r"- No major issues detected",
        monitor.report(),
    )


def test_status_prints_the_bare_word():
    assert str(HealthStatus.CRITICAL) == "CRITICAL"
    assert f"{HealthStatus.WARNING}" == "WARNING"
    assert HealthStatus.HEALTHY.name == "HEALTHY"
    assert HealthStatus.HEALTHY.severity < HealthStatus.WARNING.severity < HealthStatus.CRITICAL.severity


def test_no_steps_yet_is_healthy_with_a_reason():
    monitor = DiagnosticsMonitor()
    status = monitor.get_health_status()
    assert status.status is HealthStatus.HEALTHY
    assert status.reasons == ["no training steps recorded yet"]
    assert status.metrics["steps"] == 0 and status.metrics["reward_diversity"] is None
    assert monitor.report() == "Training health: HEALTHY\n- No training steps recorded yet"


def test_rows_with_few_keys_do_not_break_the_checks():
    ppo_rows = [{"step": i, "reward_mean": 0.1 * i, "value_loss": 0.5, "grad_norm": 1.0} for i in range(1, 9)]
    status = health(ppo_rows)
    assert status.status is HealthStatus.HEALTHY
    assert status.metrics["reward_diversity"] is None and status.metrics["kl"] is None
    assert status.metrics["gradient_stability"] == pytest.approx(1.0)
    assert health([{"step": 1}, {"step": 2, "kl": "n/a"}]).status is HealthStatus.HEALTHY


def test_reward_std_zero_for_ten_steps_warns_and_for_longer_is_critical():
    flat = [row(i, reward_std=0.0, reward_mean=1.0) for i in range(11, 21)]
    status = health(healthy_run(10) + flat)
    assert status.status is HealthStatus.WARNING
    (issue,) = status.issues
    assert issue.metric == "reward_std" and issue.threshold == 1e-3
    assert "reward_std <= 0.001" in issue.message and "10 steps" in issue.message
    assert "(low)" in DiagnosticsMonitor.from_history(healthy_run(10) + flat).report()

    longer = [row(i, reward_std=0.0) for i in range(11, 27)]
    assert health(healthy_run(10) + longer).status is HealthStatus.CRITICAL


def test_a_few_flat_batches_and_rows_without_reward_std_do_not_warn():
    rows = healthy_run(10) + [row(i, reward_std=0.0) for i in range(11, 15)] + healthy_run(20)[14:]
    assert health(rows).status is HealthStatus.HEALTHY
    # A row without reward_std (e.g. an evaluation row) neither breaks nor extends the run.
    rows = [row(i, reward_std=0.0) for i in range(1, 4)] + [{"step": 4}] + [row(5, reward_std=0.0)]
    assert health(rows).metrics["low_diversity_steps"] == 4


def test_entropy_collapse_warns_and_a_gentle_decline_does_not():
    collapse = [row(i, entropy=1.5 * 0.85**i) for i in range(1, 21)]  # 1.3 -> 0.06
    status = health(collapse)
    assert status.status is HealthStatus.WARNING
    (issue,) = status.issues
    assert issue.metric == "entropy" and "0.2x its starting value" in issue.message
    assert status.metrics["entropy_ratio"] < 0.2

    gentle = [row(i, entropy=1.5 - 0.05 * i) for i in range(1, 21)]  # 1.45 -> 0.5, a third of the start
    assert health(gentle).status is HealthStatus.HEALTHY

    floor = [row(i, entropy=0.005) for i in range(1, 6)]
    (issue,) = health(floor).issues
    assert issue.metric == "entropy" and "floor 0.01" in issue.message


def test_kl_runaway_warns_then_turns_critical():
    rising = healthy_run(10) + [row(i, kl=0.05 * (i - 10)) for i in range(11, 18)]  # up to 0.35
    status = health(rising)
    assert status.status is HealthStatus.WARNING
    assert status.issues[0].metric == "kl" and "threshold 0.1" in status.reasons[0]

    runaway = healthy_run(10) + [row(i, kl=1.5 + 0.1 * i) for i in range(11, 15)]
    status = health(runaway)
    assert status.status is HealthStatus.CRITICAL
    assert "critical threshold 1" in status.reasons[0]


def test_one_noisy_kl_step_does_not_flip_the_status():
    rows = healthy_run(10) + [row(11, kl=0.5), row(12, kl=0.002), row(13, kl=0.002)]
    assert health(rows).status is HealthStatus.HEALTHY


def test_high_clip_fraction_warns():
    rows = healthy_run(10) + [row(i, clip_frac=0.45) for i in range(11, 14)]
    (issue,) = health(rows).issues
    assert issue.metric == "clip_frac" and issue.value == pytest.approx(0.45) and issue.threshold == 0.3


def test_grad_norm_spike_warns_and_clears_after_the_window():
    rows = healthy_run(20) + [row(21, grad_norm=25.0)]
    status = health(rows)
    assert status.status is HealthStatus.WARNING
    spike = next(issue for issue in status.issues if "spike" in issue.message)
    assert spike.metric == "grad_norm" and spike.value == 25.0 and "step 21" in spike.message
    assert status.metrics["grad_spikes"] == 1
    assert "(unstable)" in DiagnosticsMonitor.from_history(rows).report()

    later = rows + [row(i) for i in range(22, 45)]
    assert health(later).status is HealthStatus.HEALTHY


def test_grad_norm_tripling_is_not_a_spike():
    rows = healthy_run(20) + [row(21, grad_norm=2.4)]
    assert health(rows).metrics["grad_spikes"] == 0
    assert health(rows).status is HealthStatus.HEALTHY


def test_erratic_grad_norms_lower_the_stability_score():
    # Never 10x the median, so no single spike, but the spread is near the mean.
    rows = [row(i, grad_norm=(0.2, 2.0, 0.3, 1.5)[i % 4]) for i in range(1, 21)]
    status = health(rows)
    assert status.metrics["grad_spikes"] == 0
    assert status.metrics["gradient_stability"] < 0.3
    assert any("gradient stability" in reason for reason in status.reasons)


def test_nan_loss_is_critical_then_remembered_as_a_warning():
    rows = healthy_run(12) + [row(13, total_loss=float("nan"), grad_norm=float("inf"))]
    status = health(rows)
    assert status.status is HealthStatus.CRITICAL
    assert {issue.metric for issue in status.issues} >= {"total_loss", "grad_norm"}
    assert any("total_loss is nan at step 13" in reason for reason in status.reasons)
    assert status.metrics["nonfinite_steps"] == 1

    later = health(rows + [row(i) for i in range(14, 40)])
    assert later.status is HealthStatus.WARNING
    assert any("earlier step" in reason for reason in later.reasons)


def test_monitor_logs_when_health_gets_worse(caplog):
    rows = healthy_run(10) + [row(11, total_loss=float("nan"))]
    with caplog.at_level(logging.WARNING, logger="rayrl.training.diagnostics"):
        drive([DiagnosticsMonitor()], rows)
    assert any("training health CRITICAL at step 11" in r.getMessage() for r in caplog.records)


def test_monitor_forgets_the_previous_run_on_train_begin():
    monitor = DiagnosticsMonitor()
    drive([monitor], [row(1, total_loss=float("nan"))])
    drive([monitor], healthy_run(5))
    assert monitor.get_health_status().status is HealthStatus.HEALTHY


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"window": 0}, "window"),
        ({"kl_warning": 0.5, "kl_critical": 0.1}, "kl_critical"),
        ({"entropy_collapse_fraction": 1.5}, "entropy_collapse_fraction"),
        ({"grad_spike_factor": 1.0}, "grad_spike_factor"),
        (
            {"low_diversity_warning_steps": 10, "low_diversity_critical_steps": 5},
            "low_diversity_critical_steps",
        ),
    ],
)
def test_bad_thresholds_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"DiagnosticsThresholds.{key}"):
        DiagnosticsThresholds(**kwargs)


# ---- EarlyStopping -----------------------------------------------------------------


def plateau(rise: int, flat: int) -> list[dict]:
    """Reward rises for `rise` steps, then stays just below its best for `flat` steps."""
    rows = [row(i, reward_mean=0.1 * i) for i in range(1, rise + 1)]
    return rows + [row(rise + i, reward_mean=0.1 * rise - 0.01 * (i % 2)) for i in range(1, flat + 1)]


def test_early_stopping_stops_after_patience_steps_without_improvement():
    stopper = EarlyStopping(patience=5)
    trainer, seen = drive([stopper], plateau(rise=8, flat=20))
    assert len(seen) == 13 and stopper.stopped_step == 13
    assert stopper.best == pytest.approx(0.8) and stopper.best_step == 8
    assert "reward_mean" in trainer.stop_reason and "5 steps" in trainer.stop_reason


def test_early_stopping_keeps_going_while_improving_and_with_patience_left():
    trainer, seen = drive([EarlyStopping(patience=5)], plateau(rise=8, flat=4))
    assert trainer.stop_reason is None and len(seen) == 12
    trainer, _ = drive([EarlyStopping(patience=50)], healthy_run(40))
    assert trainer.stop_reason is None


def test_early_stopping_min_delta_and_min_mode():
    creeping = [row(i, reward_mean=0.5 + 0.0001 * i) for i in range(1, 20)]
    trainer, seen = drive([EarlyStopping(patience=3, min_delta=0.01)], creeping)
    assert len(seen) == 4  # the first row sets the best; tiny gains do not count

    losses = [row(i, total_loss=1.0 / i) for i in range(1, 10)] + [
        row(i, total_loss=0.5) for i in range(10, 20)
    ]
    trainer, seen = drive([EarlyStopping(metric="total_loss", mode="min", patience=4)], losses)
    assert len(seen) == 13 and "total_loss" in trainer.stop_reason


def test_early_stopping_counts_nan_as_no_improvement():
    rows = [row(1, reward_mean=0.5)] + [row(i, reward_mean=float("nan")) for i in range(2, 10)]
    trainer, seen = drive([EarlyStopping(patience=3)], rows)
    assert len(seen) == 4 and trainer.stop_reason is not None


def test_early_stopping_on_a_missing_metric_warns_once_and_never_stops(caplog):
    with caplog.at_level(logging.WARNING, logger="rayrl.training.callbacks"):
        trainer, seen = drive([EarlyStopping(metric="reward_meen", patience=2)], healthy_run(10))
    assert trainer.stop_reason is None and len(seen) == 10
    warnings = [r.getMessage() for r in caplog.records if "reward_meen" in r.getMessage()]
    assert len(warnings) == 1 and "reward_mean" in warnings[0]  # lists the keys that are there


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"patience": 0}, "patience"), ({"mode": "up"}, "mode"), ({"min_delta": -1}, "min_delta")],
)
def test_early_stopping_rejects_bad_settings(kwargs, key):
    with pytest.raises(ConfigError, match=f"EarlyStopping.{key}"):
        EarlyStopping(**kwargs)


# ---- AutoAdjust --------------------------------------------------------------------


def test_auto_adjust_leaves_a_healthy_run_alone():
    trainer, _ = drive([AutoAdjust()], healthy_run())
    assert trainer.changes == []


def test_kl_runaway_doubles_kl_coef_with_a_reason():
    rows = healthy_run(10) + [row(i, kl=0.2) for i in range(11, 14)]
    trainer, _ = drive([AutoAdjust()], rows)
    (change,) = trainer.changes
    assert change["kl_coef"] == [0.001, 0.002] and "learning_rate" not in change
    assert "kl 0.2 above 0.1 for 3 steps" in change["reason"]


def test_two_high_kl_steps_are_not_a_runaway():
    rows = healthy_run(10) + [row(11, kl=0.3), row(12, kl=0.3), row(13, kl=0.002), row(14, kl=0.3)]
    trainer, _ = drive([AutoAdjust()], rows)
    assert trainer.changes == []


def test_sustained_kl_runaway_raises_kl_coef_up_to_the_cap_with_cool_downs(caplog):
    rows = [row(i, kl=0.5) for i in range(1, 80)]
    with caplog.at_level(logging.WARNING, logger="rayrl.training.auto"):
        trainer, _ = drive([AutoAdjust()], rows)
    coefs = [c["kl_coef"][1] for c in trainer.changes]
    assert coefs == pytest.approx([0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.1])
    assert trainer.kl_coef == 0.1
    assert any("max_kl_coef" in r.getMessage() for r in caplog.records)


def test_cool_down_spaces_changes():
    rows = [row(i, kl=0.5) for i in range(1, 30)]
    auto = AutoAdjust(AutoAdjustConfig(cooldown_steps=5, kl_steps=3))
    trainer, _ = drive([auto], rows)
    # First change at step 3; then 5 cool-down steps, the KL count is already past 3 again.
    assert len(trainer.changes) == 5 and len(auto.adjustments) == 5


def test_grad_norm_spike_halves_the_learning_rate():
    rows = healthy_run(20) + [row(21, grad_norm=30.0)] + [row(i) for i in range(22, 30)]
    trainer, _ = drive([AutoAdjust()], rows)
    (change,) = trainer.changes
    assert change["learning_rate"] == [5e-6, 2.5e-6]
    assert "grad_norm 30 at step 21" in change["reason"] and "10x" in change["reason"]


def test_grad_norm_tripling_leaves_the_learning_rate():
    trainer, _ = drive([AutoAdjust()], healthy_run(20) + [row(21, grad_norm=2.4)])
    assert trainer.changes == []


def test_nan_loss_lowers_the_learning_rate_and_respects_the_floor():
    rows = healthy_run(5) + [row(6, total_loss=float("nan"))]
    trainer, _ = drive([AutoAdjust()], rows)
    (change,) = trainer.changes
    assert change["learning_rate"] == [5e-6, 2.5e-6] and "total_loss is nan at step 6" in change["reason"]

    at_floor = RecordingTrainer(learning_rate=1e-7)
    drive([AutoAdjust()], rows, at_floor)
    assert at_floor.changes == [] and at_floor.learning_rate == 1e-7


def test_spike_and_kl_runaway_together_make_one_change():
    rows = healthy_run(20) + [row(21, kl=0.3), row(22, kl=0.3), row(23, kl=0.3, grad_norm=40.0)]
    trainer, _ = drive([AutoAdjust()], rows)
    (change,) = trainer.changes
    assert change["learning_rate"] == [5e-6, 2.5e-6] and change["kl_coef"] == [0.001, 0.002]
    assert "grad_norm" in change["reason"] and "kl" in change["reason"]


def test_kl_runaway_without_a_reference_is_not_adjusted():
    trainer, _ = drive([AutoAdjust()], [row(i, kl=0.5) for i in range(1, 10)], RecordingTrainer(kl_coef=0.0))
    assert trainer.changes == []


def test_auto_adjust_config_names_the_key():
    with pytest.raises(ConfigError, match="AutoAdjustConfig.lr_factor"):
        AutoAdjustConfig(lr_factor=1.5)
    with pytest.raises(ConfigError, match="AutoAdjustConfig.kl_steps"):
        AutoAdjustConfig(kl_steps=0)


# ---- CallbackList ------------------------------------------------------------------


class Raising(Callback):
    """Fails on the steps listed in `fail_on` (every step when None)."""

    def __init__(self, fail_on: set[int] | None = None):
        self.fail_on = fail_on
        self.calls = 0

    def on_step_end(self, trainer, row):
        self.calls += 1
        if self.fail_on is None or row["step"] in self.fail_on:
            raise RuntimeError(f"broken at step {row['step']}")


class Counting(Callback):
    def __init__(self):
        self.steps = 0
        self.ended = False

    def on_step_end(self, trainer, row):
        self.steps += 1

    def on_train_end(self, trainer, history):
        self.ended = True


def test_a_raising_callback_is_counted_then_disabled_and_training_goes_on(caplog):
    broken, counting = Raising(), Counting()
    hooks = CallbackList([broken, counting])
    trainer = RecordingTrainer()
    with caplog.at_level(logging.WARNING, logger="rayrl.training.callbacks"):
        for r in healthy_run(10):
            hooks.on_step_end(trainer, r)
        hooks.on_train_end(trainer, [])
    assert counting.steps == 10 and counting.ended
    assert broken.calls == 3
    assert hooks.errors == {"Raising": 3, "Counting": 0} and hooks.total_errors == 3
    assert hooks.disabled == {"Raising"}
    messages = [r.getMessage() for r in caplog.records]
    assert any("disabled after 3 failures in a row" in m for m in messages)
    assert any(r.exc_info for r in caplog.records)  # the traceback is logged


def test_failures_that_are_not_in_a_row_do_not_disable():
    broken = Raising(fail_on={2, 3, 5, 6, 8})
    hooks = CallbackList([broken])
    for r in healthy_run(10):
        hooks.on_step_end(RecordingTrainer(), r)
    assert hooks.errors["Raising"] == 5 and hooks.disabled == set() and broken.calls == 10


def test_callback_names_are_unique_and_partial_callbacks_work():
    class OnlyStepEnd:
        def __init__(self):
            self.rows = []

        def on_step_end(self, trainer, row):
            self.rows.append(row["step"])

    partial = OnlyStepEnd()
    hooks = CallbackList([EarlyStopping(), EarlyStopping(), partial])
    assert hooks.names == ["EarlyStopping", "EarlyStopping_2", "OnlyStepEnd"]
    drive([partial], healthy_run(3))
    assert partial.rows == [1, 2, 3]


def test_monitor_early_stopping_and_auto_adjust_together():
    rows = healthy_run(20) + [row(21, reward_mean=0.8, grad_norm=30.0)] + plateau(1, 40)[1:]
    for i, r in enumerate(rows[21:], start=22):
        r.update(step=i, reward_mean=0.7)
    monitor = DiagnosticsMonitor()
    trainer, seen = drive([monitor, EarlyStopping(patience=10), AutoAdjust()], rows)
    assert trainer.stop_reason is not None and len(seen) < len(rows)
    assert [c["learning_rate"][1] for c in trainer.changes] == [2.5e-6]
    assert monitor.get_health_status().metrics["steps"] == len(seen)


def test_the_callback_layer_imports_without_ray_or_torch():
    code = (
        "import sys, rayrl.training; print(sorted(m for m in ('ray', 'torch', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_stop_at_reward_ends_the_run_when_the_rolling_mean_reaches_the_target():
    from rayrl.config import ConfigStore
    from rayrl.training.callbacks import StopAtReward

    rewards = [0.5, 0.95, 0.95, 0.85, 0.92, 0.93, 0.99]
    stop = StopAtReward(0.9)
    trainer, seen = drive([stop], [{"step": i + 1, "reward_mean": r} for i, r in enumerate(rewards)])
    # rolling-3 means: -, -, 0.80, 0.917 -> stop after step 4 (one high step alone is not enough)
    assert len(seen) == 4 and trainer.stop_reason == "rolling-3 reward 0.917 >= 0.9"
    resumed = StopAtReward(0.9)
    resumed.load_state_dict(stop.state_dict())
    assert resumed.rewards == [0.95, 0.95, 0.85]
    with pytest.raises(ConfigError):
        StopAtReward(0.9, window=0)
    assert ConfigStore.from_dict({"training": {"stop_at_reward": 0.9}}).training.stop_at_reward == 0.9
