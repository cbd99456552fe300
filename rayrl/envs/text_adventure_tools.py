"""The text adventure played through tools (the integration example, built in).

The four tools (attack, take, heal, level_up) act on a `TextAdventureEnvironment`;
the model calls them in the format of the configured parser. Training on it
teaches two things at once: to emit valid tool calls, and to pick good actions.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from rayrl.agent.tools import Tool, ToolDefinition, ToolParameter
from rayrl.config import EnvironmentConfig
from rayrl.envs._params import validate_params
from rayrl.envs.text_adventure import TextAdventureEnvironment
from rayrl.envs.tool_use import ToolUseEnvironment


class _GameTool(Tool):
    """A tool that performs one game action and reports the outcome."""

    verb = ""

    def __init__(self, env: TextAdventureEnvironment, definition: ToolDefinition):
        self.env = env
        super().__init__(definition)

    def act(self, command: str, label: str) -> str:
        obs, reward, done, info = self.env.step(command)
        return f"{label}. Reward: {reward}. {obs}"


class AttackTool(_GameTool):
    def __init__(self, env: TextAdventureEnvironment):
        param = ToolParameter(
            name="enemy", type="string", description="Enemy to attack (e.g., slime, goblin)"
        )
        super().__init__(
            env, ToolDefinition(name="attack", description="Attack an enemy", parameters=[param])
        )

    def execute(self, enemy: str, **kwargs: Any) -> str:
        return self.act(f"attack {enemy}", f"Attacked {enemy}")


class TakeTool(_GameTool):
    def __init__(self, env: TextAdventureEnvironment):
        param = ToolParameter(name="item", type="string", description="Item to take")
        super().__init__(env, ToolDefinition(name="take", description="Take an item", parameters=[param]))

    def execute(self, item: str, **kwargs: Any) -> str:
        return self.act(f"take {item}", f"Took {item}")


class HealTool(_GameTool):
    def __init__(self, env: TextAdventureEnvironment):
        super().__init__(env, ToolDefinition(name="heal", description="Use a potion to heal", parameters=[]))

    def execute(self, **kwargs: Any) -> str:
        return self.act("heal", "Heal attempt")


class LevelUpTool(_GameTool):
    def __init__(self, env: TextAdventureEnvironment):
        super().__init__(
            env, ToolDefinition(name="level_up", description="Level up (costs 10 gold)", parameters=[])
        )

    def execute(self, **kwargs: Any) -> str:
        return self.act("level up", "Level up attempt")


def adventure_tools(env: TextAdventureEnvironment) -> list[Tool]:
    """The integration example's four tools, bound to `env`."""
    return [AttackTool(env), TakeTool(env), HealTool(env), LevelUpTool(env)]


class TextAdventureToolsParams(BaseModel):
    """`environment.params` of the tool-driven text adventure."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    parser: str = "json"
    """Reply format: "json", "react" or "function_calling"."""
    game: dict[str, Any] = {}
    """Params of the underlying TextAdventureEnvironment (max_steps, ...)."""
    valid_call_bonus: float = 0.0
    """Reward added per valid, successful tool call (format shaping)."""
    format_bonus: float = 0.0
    """Reward added per reply that attempts the call format without a valid call."""
    example: str | None = None
    """Example reply appended to the system prompt."""


class TextAdventureToolsEnvironment(ToolUseEnvironment):
    """Text adventure whose actions are tool calls.

    Args:
        config: environment section; `params.parser` picks the reply format,
            `params.game` configures the game.
    """

    def __init__(self, config: EnvironmentConfig | None = None):
        config = config or EnvironmentConfig()
        params = validate_params(TextAdventureToolsParams, config.params)
        inner = TextAdventureEnvironment(config.model_copy(update={"params": params.game}))
        super().__init__(
            config,
            inner,
            adventure_tools,
            params.parser,
            valid_call_bonus=params.valid_call_bonus,
            format_bonus=params.format_bonus,
            example=params.example,
        )
