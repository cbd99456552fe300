"""Callbacks: small observers of the training loop that may steer it.

The trainer calls three hooks on every callback: once before the first step, once
after each step with that step's metrics row, and once at the end with all rows.
Callbacks see plain dicts and a narrow trainer interface (`TrainerControl`: stop,
adjust, read the learning rate and KL coefficient), so they are pure Python and
are tested on recorded metric sequences without Ray or a model.

A monitoring callback must never end a run it was meant to watch: `CallbackList`
catches what a callback raises, logs and counts it, and switches off a callback
that keeps failing instead of failing the step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

from rayrl.config import ConfigError

logger = logging.getLogger(__name__)


class TrainerControl(Protocol):
    """What a callback may read from and ask of the trainer (`RayPPOTrainer` implements it)."""

    @property
    def learning_rate(self) -> float:
        """The learning rate the next update uses."""
        ...

    @property
    def kl_coef(self) -> float:
        """The KL coefficient the next update uses."""
        ...

    def request_stop(self, reason: str) -> None:
        """End training after the current step; `reason` is logged."""
        ...

    def adjust(
        self, reason: str, *, learning_rate: float | None = None, kl_coef: float | None = None
    ) -> dict:
        """Change the learning rate and/or KL coefficient from the next update on."""
        ...


def row_value(row: Mapping[str, Any], key: str) -> float | None:
    """The number under `key` in a metrics row, or None when it is absent or not a number.

    NaN and infinities are returned as they are: callers that watch for a broken
    run need to see them.

    Args:
        row: one metrics row.
        key: the metric's name.
    """
    value = row.get(key)
    # bool is an int subclass, but a flag is not a measurement.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class Callback:
    """Base class of training callbacks: every hook is a no-op, override the ones you need.

    Hooks run on the driver, between steps, so a slow hook delays the next rollout.
    """

    def on_train_begin(self, trainer: TrainerControl) -> None:
        """Called once, after the trainer has set up its workers and before the first step.

        Args:
            trainer: the running trainer; reset any per-run state here so one callback
                object can watch several runs.
        """

    def on_step_end(self, trainer: TrainerControl, row: dict[str, Any]) -> None:
        """Called after every training step, once its metrics are logged.

        Args:
            trainer: the running trainer; `trainer.request_stop(...)` ends the run after
                this step, `trainer.adjust(...)` changes the next update.
            row: that step's metrics, the same dict written to the run's metrics log:
                `step` (1-based), rollout stats (`reward_mean`, `reward_std`, `success`,
                `env_errors`, `tokens_per_s`, ...), update stats (`total_loss`,
                `policy_loss`, `kl`, `kl_coef`, `clip_frac`, `entropy`, `grad_norm`,
                `logprob_gap`, `advantage_std`; `value_loss` with a critic) and timings
                (`time_*`). Which keys are present depends on the algorithm, so read them
                with `row.get` or `row_value`.
        """

    def on_train_end(self, trainer: TrainerControl, history: list[dict[str, Any]]) -> None:
        """Called once after the last step (also after an early stop), before the trainer returns.

        Args:
            trainer: the trainer, its workers still running.
            history: every step's metrics row, in order.
        """


class CallbackList:
    """Runs the hooks of several callbacks in order, isolating their failures.

    A callback that raises is logged with its traceback and counted in `errors`;
    the other callbacks and the training step go on. After `max_consecutive_failures`
    failures in a row (any hooks) it is disabled for the rest of the run.

    Args:
        callbacks: the callbacks, run in this order.
        max_consecutive_failures: failures in a row after which a callback is disabled.
    """

    def __init__(self, callbacks: Iterable[Callback] = (), max_consecutive_failures: int = 3):
        if max_consecutive_failures < 1:
            raise ConfigError(f"max_consecutive_failures must be >= 1, got {max_consecutive_failures}")
        self.callbacks: tuple[Callback, ...] = tuple(callbacks)
        self.max_consecutive_failures = max_consecutive_failures
        self.names: list[str] = _unique_names(list(self.callbacks))
        self.errors: dict[str, int] = dict.fromkeys(self.names, 0)
        """Failures so far per callback name (the class name, `_2`, `_3` for repeats)."""
        self.disabled: set[str] = set()
        """Names of callbacks switched off after failing too often in a row."""
        self._in_a_row: dict[str, int] = dict.fromkeys(self.names, 0)

    @property
    def total_errors(self) -> int:
        """Failures of all callbacks so far (the metrics row's `callback_errors`)."""
        return sum(self.errors.values())

    def __len__(self) -> int:
        return len(self.callbacks)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: failure counts, and the `state_dict()` of every callback
        that has one (JSON-serialisable), so a resumed run's callbacks go on where they were."""
        return {
            "errors": dict(self.errors),
            "disabled": sorted(self.disabled),
            "callbacks": {
                name: cb.state_dict()
                for name, cb in zip(self.names, self.callbacks, strict=True)
                if callable(getattr(cb, "state_dict", None))
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` (callbacks matched by name; unknown names are ignored)."""
        for name, count in state.get("errors", {}).items():
            if name in self.errors:
                self.errors[name] = int(count)
        self.disabled |= {n for n in state.get("disabled", []) if n in self.errors}
        for name, cb in zip(self.names, self.callbacks, strict=True):
            saved = state.get("callbacks", {}).get(name)
            if saved is not None and callable(getattr(cb, "load_state_dict", None)):
                cb.load_state_dict(saved)

    def on_train_begin(self, trainer: TrainerControl) -> None:
        """Run every enabled callback's `on_train_begin`."""
        self._call("on_train_begin", trainer)

    def on_step_end(self, trainer: TrainerControl, row: dict[str, Any]) -> None:
        """Run every enabled callback's `on_step_end`."""
        self._call("on_step_end", trainer, row)

    def on_train_end(self, trainer: TrainerControl, history: list[dict[str, Any]]) -> None:
        """Run every enabled callback's `on_train_end`."""
        self._call("on_train_end", trainer, history)

    def _call(self, hook: str, *args: Any) -> None:
        for name, callback in zip(self.names, self.callbacks, strict=True):
            if name in self.disabled:
                continue
            method = getattr(callback, hook, None)
            if method is None:  # duck-typed callbacks need not implement every hook
                continue
            try:
                method(*args)
            except Exception:  # noqa: BLE001 - a callback must not end the run it watches
                self.errors[name] += 1
                self._in_a_row[name] += 1
                logger.warning("callback %s failed in %s", name, hook, exc_info=True)
                if self._in_a_row[name] >= self.max_consecutive_failures:
                    self.disabled.add(name)
                    logger.warning(
                        "callback %s disabled after %d failures in a row", name, self._in_a_row[name]
                    )
            else:
                self._in_a_row[name] = 0


def _unique_names(callbacks: list[Callback]) -> list[str]:
    names: list[str] = []
    for callback in callbacks:
        base = type(callback).__name__
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


class StopAtReward(Callback):
    """Stop training once the mean reward of the last `window` steps reaches `threshold`
    (`training.stop_at_reward`): a run to a target, as benchmarks time it.

    Args:
        threshold: the rolling mean of `reward_mean` that ends the run.
        window: steps in the rolling mean (>= 1).
    """

    def __init__(self, threshold: float, window: int = 3):
        if window < 1:
            raise ConfigError(f"StopAtReward.window must be >= 1, got {window}")
        self.threshold, self.window = threshold, window
        self.rewards: list[float] = []

    def on_step_end(self, trainer: TrainerControl, row: dict[str, Any]) -> None:
        self.rewards = (self.rewards + [float(row["reward_mean"])])[-self.window :]
        mean = sum(self.rewards) / len(self.rewards)
        if len(self.rewards) == self.window and mean >= self.threshold:
            trainer.request_stop(f"rolling-{self.window} reward {mean:.3f} >= {self.threshold:g}")

    def state_dict(self) -> dict[str, Any]:
        return {"rewards": list(self.rewards)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rewards = [float(r) for r in state.get("rewards", [])]


class EarlyStopping(Callback):
    """Stop training when a metric has stopped improving.

    A step improves on the best value so far when it beats it by more than
    `min_delta` (higher for mode "max", lower for "min"). After `patience` steps
    without improvement the callback asks the trainer to stop. A NaN counts as no
    improvement. A row without the metric is skipped, with one warning per run
    naming the metric, so a misspelt key is found without crashing the run.

    Args:
        metric: the metrics-row key to watch, e.g. "reward_mean" or "success".
        patience: steps without improvement before stopping (>= 1).
        mode: "max" when higher is better, "min" when lower is better.
        min_delta: how much a value must beat the best one to count as better (>= 0).
    """

    def __init__(
        self,
        metric: str = "reward_mean",
        patience: int = 10,
        mode: Literal["max", "min"] = "max",
        min_delta: float = 0.0,
    ):
        if patience < 1:
            raise ConfigError(f"EarlyStopping.patience must be >= 1, got {patience}")
        if mode not in ("max", "min"):
            raise ConfigError(f"EarlyStopping.mode must be 'max' or 'min', got {mode!r}")
        if not min_delta >= 0:  # also rejects NaN
            raise ConfigError(f"EarlyStopping.min_delta must be >= 0, got {min_delta}")
        self.metric = metric
        self.patience = patience
        self.mode = mode
        self.min_delta = float(min_delta)
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        """Best value seen this run."""
        self.best_step: int | None = None
        """Step of the best value."""
        self.wait = 0
        """Steps since the last improvement."""
        self.stopped_step: int | None = None
        """Step at which a stop was requested, None while running."""
        self._steps = 0
        self._warned_missing = False

    def on_train_begin(self, trainer: TrainerControl) -> None:
        """Forget the previous run's best value."""
        self._reset()

    def state_dict(self) -> dict[str, Any]:
        """Best value, its step and the wait so far (kept in checkpoints)."""
        return {"best": self.best, "best_step": self.best_step, "wait": self.wait, "steps": self._steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()` (a resumed run)."""
        self.best, self.best_step = state["best"], state["best_step"]
        self.wait, self._steps = int(state["wait"]), int(state["steps"])

    def on_step_end(self, trainer: TrainerControl, row: dict[str, Any]) -> None:
        """Update the best value and request a stop once patience is used up."""
        self._steps += 1
        step = int(row.get("step", self._steps))
        value = row_value(row, self.metric)
        if value is None:
            if not self._warned_missing:
                self._warned_missing = True
                logger.warning(
                    "EarlyStopping: metric %r is not in the metrics row (keys: %s); steps without it are skipped",
                    self.metric,
                    ", ".join(sorted(row)),
                )
            return
        if self._improves(value):
            self.best, self.best_step, self.wait = value, step, 0
            return
        self.wait += 1
        if self.wait >= self.patience and self.stopped_step is None:
            self.stopped_step = step
            best = "none" if self.best is None else f"{self.best:.4g} at step {self.best_step}"
            trainer.request_stop(
                f"{self.metric} has not improved by more than {self.min_delta:g} for {self.wait} steps "
                f"(patience {self.patience}; best {best}, now {value:.4g})"
            )

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta
