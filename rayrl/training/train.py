"""One call from an agent and an environment to a trained agent.

`train(agent, environment, ...)` builds a full config from a named profile, the
agent's own settings (model, system prompt, sampling) and the caller's overrides,
runs `RayPPOTrainer` (the same trainer as `rayrl train`), saves the policy and
points the agent at it, so the agent that comes back generates with the trained
weights. A `ToolAgent`'s tools take part in training: replies that call a tool get
its result as the next turn, other replies go to the environment.

Profiles are presets of existing config keys; `PROFILES` holds them and the
README's "Training profiles" section says what each sets and why.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rayrl.config import ConfigError, ConfigStore

logger = logging.getLogger(__name__)

PROFILES: dict[str, dict[str, Any]] = {
    # Small, KL-anchored steps: for a first run on a new task, or a policy that must not drift.
    "conservative": {
        "training.learning_rate": 1e-6,
        "training.kl_coef": 0.02,
        "training.clip_ratio_low": 0.1,
        "training.clip_ratio_high": 0.1,
        "learner.max_grad_norm": 0.5,
        "training.group_size": 8,
        "training.batch_size": 16,
        "inference.temperature": 0.8,
    },
    # The defaults of the built-in jobs: what the default math job learns with.
    "balanced": {
        "training.learning_rate": 5e-6,
        "training.kl_coef": 0.001,
        "training.clip_ratio_low": 0.2,
        "training.clip_ratio_high": 0.2,
        "learner.max_grad_norm": 1.0,
        "training.group_size": 4,
        "training.batch_size": 16,
    },
    # Fast movement: larger steps, no KL anchor, clip-higher, groups without signal dropped.
    "aggressive": {
        "training.learning_rate": 2e-5,
        "training.kl_coef": 0.0,
        "training.clip_ratio_low": 0.2,
        "training.clip_ratio_high": 0.28,
        "learner.max_grad_norm": 1.0,
        "training.group_size": 4,
        "training.batch_size": 16,
        "training.filter_groups": True,
        "inference.temperature": 1.0,
    },
}

# Flat names other frameworks use for keys rayrl keeps in a section.
_ALIASES = {
    "num_generations": "training.group_size",
    "num_iterations": "training.num_epochs",
    "beta": "training.kl_coef",
    "temperature": "inference.temperature",
    "max_new_tokens": "inference.max_tokens",
    "max_completion_length": "inference.max_tokens",
}
# Keys of `config_overrides` that configure callbacks rather than the config.
_CALLBACK_KEYS = ("early_stopping", "patience", "early_stopping_metric")


def profile_overrides(profile: str) -> dict[str, Any]:
    """The dotted config keys a profile sets.

    Raises:
        ConfigError: `profile` is not one of `PROFILES`.
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown training profile {profile!r}; choose one of {sorted(PROFILES)}")
    return dict(PROFILES[profile])


def _dotted_key(key: str, fields: Mapping[str, list[str]]) -> str:
    if "." in key:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    owners = fields.get(key, [])
    if "training" in owners:  # learning_rate, max_grad_norm: the policy's, not the critic's
        return f"training.{key}"
    if len(owners) == 1:
        return f"{owners[0]}.{key}"
    if owners:
        raise ConfigError(
            f"config_overrides key {key!r} is ambiguous: write one of {[f'{s}.{key}' for s in owners]}"
        )
    raise ConfigError(
        f"config_overrides: unknown key {key!r} (use a dotted key such as training.learning_rate)"
    )


def _section_fields() -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for section, info in ConfigStore.model_fields.items():
        for name in info.annotation.model_fields:  # type: ignore[union-attr]
            fields.setdefault(name, []).append(section)
    return fields


def build_config(
    agent: Any = None,
    num_episodes: int | None = None,
    profile: str = "balanced",
    config_overrides: Mapping[str, Any] | None = None,
    base: ConfigStore | None = None,
) -> tuple[ConfigStore, dict[str, Any]]:
    """The run's config and the callback settings found among the overrides.

    Order: `base` (default config), the profile, the agent's settings, the overrides.
    `num_episodes` becomes `training.num_epochs` = episodes / batch size, rounded up.

    Args:
        agent: an agent whose `config` has model_name, system_prompt, temperature,
            max_new_tokens, top_p, max_model_len (any of them may be missing).
        num_episodes: episodes to play in all (None: the config's num_epochs).
        profile: a name in `PROFILES`.
        config_overrides: dotted keys (`training.learning_rate`), bare field names
            (`learning_rate`: the `training` section's when it has one, else the one
            section that has it), a few common aliases
            (`num_generations`), and `early_stopping` / `patience` /
            `early_stopping_metric` for the early-stopping callback.
        base: the config to start from.
    """
    data = (base or ConfigStore()).to_dict()
    flat = profile_overrides(profile)
    settings = getattr(agent, "config", None)
    for key, attr in (
        ("model.model_name", "model_name"),
        ("environment.system_prompt", "system_prompt"),
        ("inference.temperature", "temperature"),
        ("inference.max_tokens", "max_new_tokens"),
        ("inference.top_p", "top_p"),
        ("inference.max_model_len", "max_model_len"),
    ):
        value = getattr(settings, attr, None)
        if value is not None:
            flat[key] = value
    callback_settings: dict[str, Any] = {}
    fields = _section_fields()
    for key, value in (config_overrides or {}).items():
        if key in _CALLBACK_KEYS:
            callback_settings[key] = value
        else:
            flat[_dotted_key(key, fields)] = value
    for key, value in flat.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"config_overrides: unknown section in {key!r}")
            node = node[part]
        node[leaf] = value
    config = ConfigStore.from_dict(data)
    if num_episodes is not None:
        if num_episodes < 1:
            raise ConfigError(f"num_episodes must be >= 1, got {num_episodes}")
        t = config.training
        config.training.num_epochs = max(1, math.ceil(num_episodes / t.batch_size))
    return config, callback_settings


def _callbacks(settings: Mapping[str, Any], callbacks: Sequence[Any] | None) -> list[Any]:
    from rayrl.training.callbacks import EarlyStopping

    out = list(callbacks or [])
    if settings.get("early_stopping"):
        out.append(
            EarlyStopping(
                metric=settings.get("early_stopping_metric", "reward_mean"),
                patience=int(settings.get("patience", 10)),
            )
        )
    return out


def _train_blocking(
    agent: Any,
    environment: Any,
    config: ConfigStore,
    reward_fn: Callable | None,
    callbacks: list[Any],
    save_path: str | None,
) -> tuple[str, list[dict[str, Any]]]:
    from rayrl.trainer import RayPPOTrainer

    tool_manager = None
    make_manager = getattr(agent, "tool_manager", None)
    if callable(make_manager):
        # the tools need the instance they act on; a reply without a call is the answer
        if environment is None or isinstance(environment, type):
            from rayrl.envs.source import EnvironmentSource

            environment = EnvironmentSource(config.environment, environment)()
        tool_manager = make_manager(
            environment=environment,
            max_turns=environment.turn_limit(),
            answers_to_environment=True,
        )
    trainer = RayPPOTrainer(
        config, environment=environment, reward_fn=reward_fn, tool_manager=tool_manager, callbacks=callbacks
    )
    try:
        history = trainer.fit()
        path = save_path or trainer.run.checkpoint_path("final")
        if save_path is not None or not config.checkpoint.save_final:
            trainer.save_checkpoint(str(Path(path).expanduser().resolve()))
        return str(Path(path).expanduser().resolve()), history
    finally:
        trainer.cleanup()


async def train(
    agent: Any,
    environment: Any = None,
    num_episodes: int | None = None,
    profile: str = "balanced",
    config_overrides: Mapping[str, Any] | None = None,
    callbacks: Sequence[Any] | None = None,
    save_path: str | None = None,
    reward_fn: Callable | None = None,
    config: ConfigStore | None = None,
) -> Any:
    """Train `agent` on `environment` and return it, now generating with the trained policy.

    Args:
        agent: a `MultiTurnAgent` (or `ToolAgent`, whose tools take part in training).
        environment: an environment instance (deep-copied per episode, so its scenarios
            or tasks reach training) or class; None uses `config.environment.name`.
        num_episodes: episodes to play in all (None: the profile's `num_epochs`).
        profile: "conservative", "balanced" or "aggressive" (see `PROFILES`).
        config_overrides: config keys to set on top of the profile (see `build_config`).
        callbacks: `rayrl.training.Callback` objects (`DiagnosticsMonitor`, `EarlyStopping`, ...).
        save_path: folder for the trained policy (Hugging Face format) and `agent.json`;
            default the run directory's `final/`.
        reward_fn: a `RewardFunction` or `summary -> float` replacing the environment's reward.
        config: the config to start from (default: `ConfigStore()`).
    """
    cfg, callback_settings = build_config(agent, num_episodes, profile, config_overrides, config)
    all_callbacks = _callbacks(callback_settings, callbacks)
    path, _ = await asyncio.to_thread(
        _train_blocking, agent, environment, cfg, reward_fn, all_callbacks, save_path
    )
    if hasattr(agent, "config"):
        from rayrl.agents import save_agent_config

        save_agent_config(agent.config, path)
    if hasattr(agent, "load_weights_from"):
        await _maybe_await(agent.load_weights_from(path))
    logger.info("trained agent saved to %s", path)
    return agent


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


def train_sync(*args: Any, **kwargs: Any) -> Any:
    """`train` for scripts that are not async (runs it to completion)."""
    return asyncio.run(train(*args, **kwargs))


class AutoTrainer:
    """`train` with early stopping and automatic adjustment switched on.

    Args:
        auto_adjust: add `AutoAdjust` (halve the learning rate on gradient spikes or a
            non-finite loss, double the KL coefficient when KL runs away; each change
            logged with its reason to `<run>/adjustments.jsonl`).
        early_stopping: add `EarlyStopping` on `metric`.
        patience: steps without improvement before stopping.
        metric: the metrics-row key early stopping watches (higher is better).
        profile: the training profile.
    """

    def __init__(
        self,
        auto_adjust: bool = True,
        early_stopping: bool = True,
        patience: int = 10,
        metric: str = "reward_mean",
        profile: str = "balanced",
    ):
        profile_overrides(profile)  # an unknown profile fails here, not after the cluster starts
        self.auto_adjust = auto_adjust
        self.early_stopping = early_stopping
        self.patience = patience
        self.metric = metric
        self.profile = profile

    def callbacks(self) -> list[Any]:
        """The callbacks this trainer adds."""
        from rayrl.training.auto import AutoAdjust
        from rayrl.training.callbacks import EarlyStopping

        out: list[Any] = []
        if self.early_stopping:
            out.append(EarlyStopping(metric=self.metric, patience=self.patience))
        if self.auto_adjust:
            out.append(AutoAdjust())
        return out

    async def train(
        self,
        agent: Any,
        environment: Any = None,
        num_episodes: int | None = None,
        callbacks: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """As `train`, with this trainer's callbacks added to `callbacks`."""
        kwargs.setdefault("profile", self.profile)
        return await train(
            agent, environment, num_episodes, callbacks=[*self.callbacks(), *(callbacks or [])], **kwargs
        )
