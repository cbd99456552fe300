"""Where each episode's environment comes from.

Training plays many episodes at once, each against an environment of its own. The
user may name a built-in environment in the config, hand over a class, hand over
an instance (whose constructor data, such as scenarios or a task list, must reach
every episode), or hand over a `MultiTurnManager` whose tools hold a reference to
the environment they act on. `EnvironmentSource` turns any of these into one
picklable factory: every call returns a fresh environment, and for an instance or
a manager that fresh environment is a deep copy, so an episode's tools are bound
to that episode's own environment and never to another episode's.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs.base import BaseEnvironment

if TYPE_CHECKING:
    from rayrl.agent.multi_turn import MultiTurnManager


class EnvironmentSource:
    """A factory of fresh environments, one per episode.

    Args:
        config: the `environment` section.
        environment: None (use `config.name`), a `BaseEnvironment` subclass (built
            with `config`), or an instance (deep-copied per episode).
        tool_manager: a `MultiTurnManager`; episodes then run through its parser and
            tools (see `rayrl.envs.tool_use.ToolUseEnvironment.from_manager`). Its
            environment is the one the tools act on; `environment`, when also given,
            must be that same object (or the manager has none and takes it).
    """

    def __init__(
        self,
        config: EnvironmentConfig,
        environment: BaseEnvironment | type[BaseEnvironment] | None = None,
        tool_manager: MultiTurnManager | None = None,
    ):
        self.config = config
        if environment is not None and not (
            isinstance(environment, BaseEnvironment)
            or (isinstance(environment, type) and issubclass(environment, BaseEnvironment))
        ):
            raise TypeError(
                f"environment must be a BaseEnvironment subclass or instance, got {type(environment).__name__}"
            )
        if tool_manager is not None:
            from rayrl.agent.multi_turn import MultiTurnManager

            if not isinstance(tool_manager, MultiTurnManager):
                raise TypeError(f"tool_manager must be a MultiTurnManager, got {type(tool_manager).__name__}")
            inner = tool_manager.environment
            if isinstance(environment, type):
                raise TypeError("with a tool_manager, pass the environment instance its tools act on")
            if inner is not None and environment is not None and inner is not environment:
                raise ValueError(
                    "tool_manager.environment is not the environment given to the trainer: "
                    "the tools act on the manager's environment, so pass that one"
                )
            if inner is None and environment is not None:
                tool_manager = copy.copy(tool_manager)
                tool_manager.environment = environment
        self.environment = environment
        self.tool_manager = tool_manager

    @property
    def user_objects(self) -> list[Any]:
        """The user's objects a fresh environment is built from (their code ships to actors)."""
        objects: list[Any] = [self.environment]
        if self.tool_manager is not None:
            m = self.tool_manager
            objects += [
                m.environment,
                m.action_parser,
                *(m.tool_registry.get(n) for n in m.tool_registry.names()),
            ]
        return [o for o in objects if o is not None]

    def __call__(self) -> BaseEnvironment:
        """A fresh environment for one episode."""
        if self.tool_manager is not None:
            from rayrl.envs.tool_use import ToolUseEnvironment

            manager = copy.deepcopy(self.tool_manager)  # tools stay bound to the copy's environment
            return ToolUseEnvironment.from_manager(self.config, manager)
        if self.environment is None:
            from rayrl.envs import make_environment

            return make_environment(self.config)
        if isinstance(self.environment, type):
            return self.environment(self.config)
        try:
            return copy.deepcopy(self.environment)
        except Exception as err:  # noqa: BLE001 - say which object and why, not a bare pickling trace
            raise ConfigError(
                f"the environment instance {type(self.environment).__name__} cannot be copied for each "
                f"episode ({type(err).__name__}: {err}); pass its class, or make it deep-copyable"
            ) from err
