"""Training health read from the metrics rows, step by step.

`DiagnosticsMonitor` is a callback that only watches: it keeps the few numbers it
needs from every row and, on request, judges the recent steps against
`DiagnosticsThresholds`. The judgement is HEALTHY, WARNING or CRITICAL with one
reason per finding, each naming the metric, its value and the threshold, so a
reader can check the call against the metrics log.

Why these signals: GRPO learns only from reward differences inside a group, so a
batch whose rewards are all equal (reward_std ~ 0) teaches nothing; gradient norm
spikes and non-finite losses come before a diverged policy; a KL to the reference
that keeps growing means the policy is leaving the region the reward was checked
in; a high clip fraction means most of the batch is clipped away; a collapsed
entropy means the policy no longer explores. Each check reads only keys that are
present, so PPO rows (value_loss, no group rewards) and GRPO rows both work.

The status describes the last `window` steps, so a run that recovers goes back to
HEALTHY; non-finite values earlier in the run stay visible as a WARNING.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rayrl.config import ConfigError
from rayrl.training.callbacks import Callback, TrainerControl, row_value

logger = logging.getLogger(__name__)

# Every key a check reads; a row's other keys are not kept.
_KEYS = (
    "reward_mean",
    "reward_std",
    "grad_norm",
    "kl",
    "clip_frac",
    "entropy",
    "total_loss",
    "policy_loss",
    "value_loss",
)
# Keys that must stay finite; a NaN in any of them means the update itself broke.
_MUST_BE_FINITE = ("total_loss", "policy_loss", "value_loss", "grad_norm", "kl", "entropy", "reward_mean")


class HealthStatus(str, Enum):
    """How a run is doing, from best to worst; `str()` gives the bare word."""

    HEALTHY = "HEALTHY"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"

    def __str__(self) -> str:
        return self.value

    @property
    def severity(self) -> int:
        """0 for HEALTHY, 1 for WARNING, 2 for CRITICAL."""
        return list(HealthStatus).index(self)


@dataclass(frozen=True)
class DiagnosticsThresholds:
    """Where `DiagnosticsMonitor` draws the lines. Defaults suit per-token metrics of LLM RL."""

    window: int = 20
    """Recent steps the status describes; findings older than this no longer count."""

    smoothing_steps: int = 3
    """kl, clip_frac and entropy are judged on the median of this many last steps, so a
    single noisy step does not flip the status."""

    min_reward_std: float = 1e-3
    """reward_std at or below this means the batch's episodes all scored alike: GRPO's
    group-relative advantages are then zero and the step teaches nothing."""

    low_diversity_warning_steps: int = 5
    """Steps in a row with reward_std <= min_reward_std before a WARNING; a few such
    batches happen when a task is all solved or all failed."""

    low_diversity_critical_steps: int = 15
    """Steps in a row with reward_std <= min_reward_std before CRITICAL: the run is
    spending compute without a learning signal."""

    grad_spike_factor: float = 10.0
    """A grad_norm above this many times the median of the previous `window` norms is a
    spike. Norms vary by 2-3x between healthy steps; 10x does not happen by chance."""

    min_history: int = 5
    """Finite grad_norm values needed before spikes and the stability score are judged."""

    min_gradient_stability: float = 0.3
    """Gradient stability (1 - coefficient of variation of grad_norm over the window)
    below this is a WARNING: the norm's spread is over 70% of its mean."""

    kl_warning: float = 0.1
    """Per-token KL to the reference above this is a WARNING. Healthy runs with a small
    kl_coef stay around 0.001-0.05."""

    kl_critical: float = 1.0
    """Per-token KL above this is CRITICAL: the policy has left the reference behind."""

    clip_frac_warning: float = 0.3
    """A clip fraction above this is a WARNING: most tokens get no gradient because the
    update moved their ratio out of the clip range; lower the learning rate."""

    entropy_baseline_steps: int = 3
    """The first this-many finite entropy values are averaged into the starting entropy."""

    entropy_collapse_fraction: float = 0.2
    """Entropy below this fraction of its starting value is a WARNING (collapse, or a task
    the policy has fully learnt: check reward_mean)."""

    entropy_floor: float = 0.01
    """Entropy per token (nats) below this is a WARNING whatever the start: sampling is
    then near greedy and groups stop differing."""

    def __post_init__(self) -> None:
        for key in (
            "window",
            "smoothing_steps",
            "low_diversity_warning_steps",
            "low_diversity_critical_steps",
            "min_history",
            "entropy_baseline_steps",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"DiagnosticsThresholds.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("min_reward_std", "kl_warning", "kl_critical", "clip_frac_warning", "entropy_floor"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"DiagnosticsThresholds.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("min_gradient_stability", "entropy_collapse_fraction"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(
                    f"DiagnosticsThresholds.{key} must be between 0 and 1, got {getattr(self, key)}"
                )
        if not self.grad_spike_factor > 1:
            raise ConfigError(
                f"DiagnosticsThresholds.grad_spike_factor must be > 1, got {self.grad_spike_factor}"
            )
        if self.low_diversity_critical_steps < self.low_diversity_warning_steps:
            raise ConfigError(
                "DiagnosticsThresholds.low_diversity_critical_steps "
                f"({self.low_diversity_critical_steps}) must be >= low_diversity_warning_steps "
                f"({self.low_diversity_warning_steps})"
            )
        if self.kl_critical < self.kl_warning:
            raise ConfigError(
                f"DiagnosticsThresholds.kl_critical ({self.kl_critical}) must be >= kl_warning "
                f"({self.kl_warning})"
            )


@dataclass(frozen=True)
class HealthIssue:
    """One finding.

    Args:
        status: WARNING or CRITICAL.
        metric: the metrics-row key it is about.
        value: the value judged (None when the finding is a count).
        threshold: the line it crossed.
        message: one sentence naming the metric, the value and the threshold.
    """

    status: HealthStatus
    metric: str
    value: float | None
    threshold: float | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class TrainingHealth:
    """A judgement of the recent steps, returned by `DiagnosticsMonitor.get_health_status`.

    Args:
        status: the worst status among `issues`; HEALTHY when there are none.
        issues: the findings, worst first.
        reasons: one line per finding; with no steps recorded yet, a line saying so.
        metrics: the numbers judged: steps, reward_mean, reward_diversity (mean reward_std
            over the window), low_diversity_steps, grad_norm, gradient_stability (in [0, 1]),
            grad_spikes, kl, clip_frac, entropy, entropy_ratio (to the starting entropy),
            nonfinite_steps; None where the rows do not carry the metric.
    """

    status: HealthStatus
    issues: list[HealthIssue] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float | int | None] = field(default_factory=dict)


class DiagnosticsMonitor(Callback):
    """A callback that tracks training health from the metrics rows.

    Pass it in `callbacks=[...]` and read `get_health_status()` or `report()` during or
    after training; it logs a warning each time the status gets worse. It never steers
    the run (see `AutoAdjust` for that).

    Args:
        thresholds: where the lines are drawn; defaults documented on `DiagnosticsThresholds`.
    """

    def __init__(self, thresholds: DiagnosticsThresholds | None = None):
        self.thresholds = thresholds or DiagnosticsThresholds()
        self._reset()

    @classmethod
    def from_history(
        cls, rows: Iterable[dict[str, Any]], thresholds: DiagnosticsThresholds | None = None
    ) -> DiagnosticsMonitor:
        """A monitor that has seen `rows`, e.g. a finished run's metrics log.

        Args:
            rows: metrics rows in step order.
            thresholds: as for the constructor.
        """
        monitor = cls(thresholds)
        for row in rows:
            monitor._record(row)
        monitor._last_status = monitor.get_health_status().status
        return monitor

    def _reset(self) -> None:
        self._rows: list[dict[str, float | None]] = []
        self._steps: list[int] = []
        self._grad_history: list[float] = []
        # (row index, grad_norm, median it was compared with)
        self._spikes: list[tuple[int, float, float]] = []
        self._entropy_start: list[float] = []
        self._entropy_seen = 0
        self._low_diversity_run = 0
        self._last_reward_std: float | None = None
        # metric -> indexes of rows where it was NaN or infinite
        self._nonfinite: dict[str, list[int]] = {}
        self._nonfinite_rows = 0
        self._last_status = HealthStatus.HEALTHY

    # ---- hooks ----------------------------------------------------------------
    def on_train_begin(self, trainer: TrainerControl) -> None:
        """Forget any previous run."""
        self._reset()

    def on_step_end(self, trainer: TrainerControl, row: dict[str, Any]) -> None:
        """Record the row and log when the status gets worse (or recovers)."""
        self._record(row)
        health = self.get_health_status()
        if health.status != self._last_status:
            step = self._steps[-1]
            if health.status.severity > self._last_status.severity:
                logger.warning(
                    "training health %s at step %d: %s", health.status, step, "; ".join(health.reasons)
                )
            else:
                logger.info("training health back to %s at step %d", health.status, step)
            self._last_status = health.status

    def on_train_end(self, trainer: TrainerControl, history: list[dict[str, Any]]) -> None:
        """Log the final report."""
        logger.info("%s", self.report())

    # ---- recording ------------------------------------------------------------
    def _record(self, row: dict[str, Any]) -> None:
        t = self.thresholds
        values = {key: row_value(row, key) for key in _KEYS}
        index = len(self._rows)
        self._rows.append(values)
        step = row.get("step")
        self._steps.append(step if isinstance(step, int) and not isinstance(step, bool) else index + 1)

        bad = [key for key in _MUST_BE_FINITE if _is_nonfinite(values[key])]
        for key in bad:
            self._nonfinite.setdefault(key, []).append(index)
        self._nonfinite_rows += bool(bad)

        std = values["reward_std"]
        if std is not None:  # a row without reward_std neither breaks nor extends a run of flat batches
            self._last_reward_std = std
            self._low_diversity_run = self._low_diversity_run + 1 if std <= t.min_reward_std else 0

        grad = values["grad_norm"]
        if grad is not None and math.isfinite(grad):
            previous = self._grad_history[-t.window :]
            if len(previous) >= t.min_history:
                median = statistics.median(previous)
                if median > 0 and grad > t.grad_spike_factor * median:
                    self._spikes.append((index, grad, median))
            self._grad_history.append(grad)

        entropy = values["entropy"]
        if entropy is not None and math.isfinite(entropy):
            self._entropy_seen += 1
            if len(self._entropy_start) < t.entropy_baseline_steps:
                self._entropy_start.append(entropy)

    # ---- judgement -------------------------------------------------------------
    def get_health_status(self) -> TrainingHealth:
        """Judge the last `thresholds.window` steps.

        With no steps recorded the status is HEALTHY, with the reason "no training steps
        recorded yet" and every metric None.
        """
        n = len(self._rows)
        metrics: dict[str, float | int | None] = {
            "steps": n,
            "reward_mean": None,
            "reward_diversity": None,
            "low_diversity_steps": self._low_diversity_run,
            "grad_norm": None,
            "gradient_stability": None,
            "grad_spikes": 0,
            "kl": None,
            "clip_frac": None,
            "entropy": None,
            "entropy_ratio": None,
            "nonfinite_steps": 0,
        }
        if n == 0:
            return TrainingHealth(HealthStatus.HEALTHY, [], ["no training steps recorded yet"], metrics)
        first_recent = max(0, n - self.thresholds.window)
        issues: list[HealthIssue] = []
        issues += self._check_finite(first_recent, metrics)
        issues += self._check_reward_diversity(first_recent, metrics)
        issues += self._check_gradients(first_recent, metrics)
        issues += self._check_kl_and_clipping(metrics)
        issues += self._check_entropy(metrics)
        issues.sort(key=lambda issue: -issue.status.severity)
        status = issues[0].status if issues else HealthStatus.HEALTHY
        return TrainingHealth(status, issues, [issue.message for issue in issues], metrics)

    def report(self) -> str:
        """A few lines for a log or a console: the status, the two headline numbers, the findings."""
        health = self.get_health_status()
        lines = [f"Training health: {health.status}"]
        if not health.metrics["steps"]:
            return "\n".join([*lines, "- No training steps recorded yet"])
        flagged = {issue.metric for issue in health.issues}
        diversity = health.metrics["reward_diversity"]
        if diversity is not None:
            low = "reward_std" in flagged or diversity <= self.thresholds.min_reward_std
            lines.append(f"- Reward diversity: {diversity:.3f} ({'low' if low else 'good'})")
        stability = health.metrics["gradient_stability"]
        if stability is not None:
            label = "unstable" if "grad_norm" in flagged else "stable"
            lines.append(f"- Gradient stability: {stability:.3f} ({label})")
        lines += [f"- {issue.status}: {issue.message}" for issue in health.issues]
        if not health.issues:
            lines.append("- No major issues detected")
        return "\n".join(lines)

    def _recent(self, key: str, first: int) -> list[float]:
        return [v for row in self._rows[first:] if (v := row[key]) is not None and math.isfinite(v)]

    def _last_finite(self, key: str, count: int) -> list[float]:
        # Walk back from the end: the run may be long, and only the last few values matter.
        values: list[float] = []
        for row in reversed(self._rows):
            if len(values) == count:
                break
            if (v := row[key]) is not None and math.isfinite(v):
                values.append(v)
        return values[::-1]

    def _smoothed(self, key: str) -> float | None:
        values = self._last_finite(key, self.thresholds.smoothing_steps)
        return statistics.median(values) if values else None

    def _check_finite(self, first: int, metrics: dict) -> list[HealthIssue]:
        issues = []
        for key in _MUST_BE_FINITE:
            bad = self._nonfinite.get(key)
            if not bad:
                continue
            last = bad[-1]
            value = self._rows[last][key]
            recent = sum(i >= first for i in bad)
            if recent:
                issues.append(
                    HealthIssue(
                        HealthStatus.CRITICAL,
                        key,
                        value,
                        None,
                        f"{key} is {value} at step {self._steps[last]} (must be finite; "
                        f"{recent} of the last {len(self._rows) - first} steps)",
                    )
                )
            else:
                issues.append(
                    HealthIssue(
                        HealthStatus.WARNING,
                        key,
                        value,
                        None,
                        f"{key} was {value} at {len(bad)} earlier step(s), last at step "
                        f"{self._steps[last]} (must be finite; finite in the last {self.thresholds.window} steps)",
                    )
                )
        metrics["nonfinite_steps"] = self._nonfinite_rows
        return issues

    def _check_reward_diversity(self, first: int, metrics: dict) -> list[HealthIssue]:
        t = self.thresholds
        rewards = self._last_finite("reward_mean", 1)
        metrics["reward_mean"] = rewards[-1] if rewards else None
        stds = self._recent("reward_std", first)
        metrics["reward_diversity"] = statistics.fmean(stds) if stds else None
        run = self._low_diversity_run
        if run < t.low_diversity_warning_steps:
            return []
        critical = run >= t.low_diversity_critical_steps
        limit = t.low_diversity_critical_steps if critical else t.low_diversity_warning_steps
        return [
            HealthIssue(
                HealthStatus.CRITICAL if critical else HealthStatus.WARNING,
                "reward_std",
                self._last_reward_std,
                t.min_reward_std,
                f"reward_std <= {t.min_reward_std:g} (last {self._last_reward_std:.3g}) for the last {run} steps "
                f"({'critical' if critical else 'warning'} at {limit}): episodes score alike, "
                "so group-relative advantages are zero",
            )
        ]

    def _check_gradients(self, first: int, metrics: dict) -> list[HealthIssue]:
        t = self.thresholds
        grads = self._recent("grad_norm", first)
        if not grads:
            return []
        metrics["grad_norm"] = grads[-1]
        issues = []
        if len(grads) >= 2:
            mean = statistics.fmean(grads)
            cv = statistics.pstdev(grads) / mean if mean > 0 else 0.0
            stability = min(1.0, max(0.0, 1.0 - cv))
            metrics["gradient_stability"] = stability
            spiked = any(s[0] >= first for s in self._spikes)
            # A spike drags the score down too; report it once, as the spike.
            if len(grads) >= t.min_history and stability < t.min_gradient_stability and not spiked:
                issues.append(
                    HealthIssue(
                        HealthStatus.WARNING,
                        "grad_norm",
                        stability,
                        t.min_gradient_stability,
                        f"gradient stability {stability:.3f} below {t.min_gradient_stability:g} "
                        f"(grad_norm mean {mean:.3g}, std {statistics.pstdev(grads):.3g} over {len(grads)} steps)",
                    )
                )
        spikes = [s for s in self._spikes if s[0] >= first]
        metrics["grad_spikes"] = len(spikes)
        if spikes:
            index, value, median = max(spikes, key=lambda s: s[1] / s[2])
            issues.append(
                HealthIssue(
                    HealthStatus.WARNING,
                    "grad_norm",
                    value,
                    t.grad_spike_factor * median,
                    f"grad_norm {value:.3g} at step {self._steps[index]} is {value / median:.1f}x the running "
                    f"median {median:.3g} (spike above {t.grad_spike_factor:g}x; "
                    f"{len(spikes)} spike(s) in the last {len(self._rows) - first} steps)",
                )
            )
        return issues

    def _check_kl_and_clipping(self, metrics: dict) -> list[HealthIssue]:
        t = self.thresholds
        issues = []
        kl = metrics["kl"] = self._smoothed("kl")
        if kl is not None and kl > t.kl_warning:
            critical = kl > t.kl_critical
            limit = t.kl_critical if critical else t.kl_warning
            issues.append(
                HealthIssue(
                    HealthStatus.CRITICAL if critical else HealthStatus.WARNING,
                    "kl",
                    kl,
                    limit,
                    f"kl {kl:.3g} above the {'critical' if critical else 'warning'} threshold {limit:g} "
                    f"(median of the last {t.smoothing_steps} steps)",
                )
            )
        clip = metrics["clip_frac"] = self._smoothed("clip_frac")
        if clip is not None and clip > t.clip_frac_warning:
            issues.append(
                HealthIssue(
                    HealthStatus.WARNING,
                    "clip_frac",
                    clip,
                    t.clip_frac_warning,
                    f"clip_frac {clip:.3g} above {t.clip_frac_warning:g} "
                    f"(median of the last {t.smoothing_steps} steps): updates move too far per step",
                )
            )
        return issues

    def _check_entropy(self, metrics: dict) -> list[HealthIssue]:
        t = self.thresholds
        entropy = metrics["entropy"] = self._smoothed("entropy")
        if entropy is None:
            return []
        start = statistics.fmean(self._entropy_start)
        # Until the baseline is complete the current value is part of it; no ratio yet.
        if self._entropy_seen > t.entropy_baseline_steps and start > 0:
            metrics["entropy_ratio"] = entropy / start
        if entropy < t.entropy_floor:
            return [
                HealthIssue(
                    HealthStatus.WARNING,
                    "entropy",
                    entropy,
                    t.entropy_floor,
                    f"entropy {entropy:.3g} below the floor {t.entropy_floor:g} "
                    "(sampling is near greedy; collapsed or fully learnt, check reward_mean)",
                )
            ]
        ratio = metrics["entropy_ratio"]
        if ratio is not None and ratio < t.entropy_collapse_fraction:
            return [
                HealthIssue(
                    HealthStatus.WARNING,
                    "entropy",
                    entropy,
                    t.entropy_collapse_fraction * start,
                    f"entropy {entropy:.3g} fell below {t.entropy_collapse_fraction:g}x its starting value "
                    f"{start:.3g} (threshold {t.entropy_collapse_fraction * start:.3g}; collapsed or fully "
                    "learnt, check reward_mean)",
                )
            ]
        return []


def _is_nonfinite(value: float | None) -> bool:
    return value is not None and not math.isfinite(value)
