"""Built-in environments and the lookup from a config name to a class."""

from __future__ import annotations

import importlib

from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs.action_math import ActionMathEnvironment
from rayrl.envs.base import BaseEnvironment
from rayrl.envs.calculator_math import CalculatorMathEnvironment
from rayrl.envs.conversation import ConversationEnvironment, TaskEnvironment
from rayrl.envs.dataset import DatasetEnvironment
from rayrl.envs.gym_adapter import GymTextEnvironment
from rayrl.envs.math_feedback import MathFeedbackEnvironment
from rayrl.envs.text_adventure import TextAdventureEnvironment
from rayrl.envs.text_adventure_tools import TextAdventureToolsEnvironment

BUILTIN_ENVIRONMENTS: dict[str, type[BaseEnvironment]] = {
    "math_feedback": MathFeedbackEnvironment,
    "text_adventure": TextAdventureEnvironment,
    "text_adventure_tools": TextAdventureToolsEnvironment,
    "conversation": ConversationEnvironment,
    "task": TaskEnvironment,
    "action_math": ActionMathEnvironment,
    "gym": GymTextEnvironment,
    "calculator_math": CalculatorMathEnvironment,
    "dataset": DatasetEnvironment,
}


def environment_class(name: str) -> type[BaseEnvironment]:
    """Class for a built-in name or a `module:Class` path."""
    if name in BUILTIN_ENVIRONMENTS:
        return BUILTIN_ENVIRONMENTS[name]
    if ":" not in name:
        raise ConfigError(
            f"environment.name={name!r}: not built in ({sorted(BUILTIN_ENVIRONMENTS)}) "
            "and not a module:Class path"
        )
    module, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"environment.name={name!r}: cannot import ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, BaseEnvironment)):
        raise ConfigError(f"environment.name={name!r} is not a BaseEnvironment subclass")
    return cls


def make_environment(config: EnvironmentConfig) -> BaseEnvironment:
    """A fresh environment instance for one episode."""
    return environment_class(config.name)(config)


__all__ = [
    "BUILTIN_ENVIRONMENTS",
    "ActionMathEnvironment",
    "BaseEnvironment",
    "CalculatorMathEnvironment",
    "ConversationEnvironment",
    "DatasetEnvironment",
    "GymTextEnvironment",
    "MathFeedbackEnvironment",
    "TaskEnvironment",
    "TextAdventureEnvironment",
    "TextAdventureToolsEnvironment",
    "environment_class",
    "make_environment",
]
