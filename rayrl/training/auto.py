"""Automatic adjustment of the learning rate and the KL coefficient during training.

Two rules, both conservative: they only ever make the next update smaller.

- KL runaway: per-token KL above `kl_threshold` for `kl_steps` steps in a row
  multiplies kl_coef by `kl_coef_factor`, up to `max_kl_coef`. A stronger anchor
  pulls the policy back towards the reference without throwing away progress.
- Gradient trouble: a grad_norm spike (above `grad_spike_factor` x the median of
  recent norms) or a non-finite loss or gradient norm multiplies the learning rate by
  `lr_factor`, down to `min_learning_rate`. Spikes come before divergence; a
  smaller step is the usual cure.

After a change the rules wait `cooldown_steps` steps, so the effect of one change
is seen before the next. Changes go through `trainer.adjust`, which applies them
and records them, with the reason, in the run directory.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from typing import Any

from rayrl.config import ConfigError
from rayrl.training.callbacks import Callback, TrainerControl, row_value

logger = logging.getLogger(__name__)

# A non-finite value in any of these means the update broke; the learning rate is lowered.
_LOSS_KEYS = ("total_loss", "policy_loss", "value_loss", "grad_norm")


@dataclass(frozen=True)
class AutoAdjustConfig:
    """When and how far `AutoAdjust` changes the learning rate and the KL coefficient."""

    kl_threshold: float = 0.1
    """Per-token KL above this counts towards a runaway (the monitor's warning line).
    Healthy runs with a small kl_coef stay around 0.001-0.05."""

    kl_steps: int = 3
    """Steps in a row above `kl_threshold` before kl_coef is raised; one noisy step is not
    a runaway."""

    kl_coef_factor: float = 2.0
    """kl_coef is multiplied by this on a runaway."""

    max_kl_coef: float = 0.1
    """kl_coef is never raised above this: beyond it the KL term outweighs the policy
    loss and the run stops learning. A kl_coef already above it is left alone."""

    grad_spike_factor: float = 10.0
    """A grad_norm above this many times the median of the previous `grad_window` norms
    is a spike (healthy steps differ by 2-3x)."""

    grad_window: int = 20
    """How many previous grad_norm values the running median is taken over."""

    min_history: int = 5
    """Finite grad_norm values needed before spikes are judged."""

    lr_factor: float = 0.5
    """The learning rate is multiplied by this after a spike or a non-finite loss."""

    min_learning_rate: float = 1e-7
    """The learning rate is never lowered below this; below it updates barely move a
    model in bf16."""

    cooldown_steps: int = 5
    """Steps after a change during which no other change is made."""

    def __post_init__(self) -> None:
        for key in ("kl_steps", "grad_window", "min_history"):
            if getattr(self, key) < 1:
                raise ConfigError(f"AutoAdjustConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.cooldown_steps < 0:
            raise ConfigError(f"AutoAdjustConfig.cooldown_steps must be >= 0, got {self.cooldown_steps}")
        for key in ("kl_threshold", "max_kl_coef", "min_learning_rate"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"AutoAdjustConfig.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("kl_coef_factor", "grad_spike_factor"):
            if not getattr(self, key) > 1:
                raise ConfigError(f"AutoAdjustConfig.{key} must be > 1, got {getattr(self, key)}")
        if not 0 < self.lr_factor < 1:
            raise ConfigError(f"AutoAdjustConfig.lr_factor must be between 0 and 1, got {self.lr_factor}")


class AutoAdjust(Callback):
    """A callback that lowers the learning rate and raises the KL coefficient when training degrades.

    Every change is one `trainer.adjust(reason, ...)` call; the reason names the
    metric, its value and the threshold. `adjustments` keeps what `adjust` returned.

    Args:
        config: the thresholds and factors; defaults documented on `AutoAdjustConfig`.
    """

    def __init__(self, config: AutoAdjustConfig | None = None):
        self.config = config or AutoAdjustConfig()
        self._reset()

    def _reset(self) -> None:
        self.adjustments: list[dict] = []
        """What `trainer.adjust` returned for each change, in order."""
        self._kl_run = 0
        self._grads: list[float] = []
        self._cooldown = 0
        self._steps = 0
        self._warned: set[str] = set()

    def on_train_begin(self, trainer: TrainerControl) -> None:
        """Forget any previous run."""
        self._reset()

    def on_step_end(self, trainer: TrainerControl, row: dict[str, Any]) -> None:
        """Read this step's kl, grad_norm and losses; adjust when a rule fires and no cool-down runs."""
        c = self.config
        self._steps += 1
        step = row.get("step", self._steps)

        kl = row_value(row, "kl")
        if kl is not None:
            # NaN compares False, so it ends a run; a NaN loss is handled by the gradient rule.
            self._kl_run = self._kl_run + 1 if kl > c.kl_threshold else 0

        lr_reasons = [
            f"{key} is {value} at step {step} (must be finite)"
            for key in _LOSS_KEYS
            if (value := row_value(row, key)) is not None and not math.isfinite(value)
        ]
        grad = row_value(row, "grad_norm")
        if grad is not None and math.isfinite(grad):
            previous = self._grads[-c.grad_window :]
            if len(previous) >= c.min_history:
                median = statistics.median(previous)
                if median > 0 and grad > c.grad_spike_factor * median:
                    lr_reasons.append(
                        f"grad_norm {grad:.3g} at step {step} is above {c.grad_spike_factor:g}x "
                        f"the running median {median:.3g} (threshold {c.grad_spike_factor * median:.3g})"
                    )
            self._grads.append(grad)

        if self._cooldown > 0:
            self._cooldown -= 1
            return
        changes: dict[str, float] = {}
        reasons: list[str] = []
        if lr_reasons:
            lr = self._lower_learning_rate(trainer)
            if lr is not None:
                changes["learning_rate"] = lr
                reasons.append(
                    f"{'; '.join(lr_reasons)}: learning_rate {trainer.learning_rate:.3g} -> {lr:.3g}"
                )
        if self._kl_run >= c.kl_steps:
            kl_coef = self._raise_kl_coef(trainer)
            if kl_coef is not None:
                changes["kl_coef"] = kl_coef
                reasons.append(
                    f"kl {kl:.3g} above {c.kl_threshold:g} for {self._kl_run} steps in a row "
                    f"(limit {c.kl_steps}): kl_coef {trainer.kl_coef:.3g} -> {kl_coef:.3g}"
                )
        if not changes:
            return
        self.adjustments.append(trainer.adjust("; ".join(reasons), **changes))
        self._cooldown = c.cooldown_steps
        self._kl_run = 0

    def _lower_learning_rate(self, trainer: TrainerControl) -> float | None:
        c = self.config
        current = trainer.learning_rate
        if current <= c.min_learning_rate:
            self._warn_once(
                f"AutoAdjust: learning_rate {current:.3g} is already at the floor "
                f"min_learning_rate={c.min_learning_rate:g}; not lowering it further"
            )
            return None
        return max(current * c.lr_factor, c.min_learning_rate)

    def _raise_kl_coef(self, trainer: TrainerControl) -> float | None:
        c = self.config
        current = trainer.kl_coef
        if current <= 0:
            # kl_coef 0 means no reference model was set up; doubling zero changes nothing.
            self._warn_once("AutoAdjust: KL runs away but kl_coef is 0 (no reference model); cannot raise it")
            return None
        if current >= c.max_kl_coef:
            self._warn_once(
                f"AutoAdjust: kl_coef {current:.3g} is already at the cap max_kl_coef={c.max_kl_coef:g}; "
                "not raising it further"
            )
            return None
        return min(current * c.kl_coef_factor, c.max_kl_coef)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(message)
