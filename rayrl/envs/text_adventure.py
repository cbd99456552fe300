"""A tiny deterministic text adventure (the integration example's TextAdventureEnvironment).

The game is small enough to read in one screen, so a reward curve on it can be
checked by hand: every rule below is a fixed table lookup on keywords of the
model's reply, with no randomness, which makes episodes exactly reproducible and
lets GRPO compare samples of one task fairly.

Rules (checked in this order on the lowercased reply, with `_` and `-` read as
spaces and runs of whitespace collapsed; the first rule that matches applies):

- contains "attack": if it also contains "slime", +10 reward and +5 gold; otherwise
  the attack misses: -5 reward and -10 hp.
- contains "heal": with a potion in the inventory, +2 reward, hp += 30 (capped at
  `max_hp`) and the potion is used up; without one, -0.5.
- contains "take" or "pick": if it also contains "potion", a potion joins the
  inventory and +1; any other item gives +0.5 and is not kept.
- contains "level up": with at least `level_cost` gold, +20, level + 1 and
  `level_cost` gold spent; otherwise -1.
- anything else: -0.1.

The episode ends when hp <= 0 (lost), when the level reaches `win_level` (won), or
after `max_steps` actions. Keyword matching is deliberately as loose as the integration example's:
"I attack the slime" and "attack(slime)" both count.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rayrl.config import EnvironmentConfig
from rayrl.envs._params import validate_params
from rayrl.envs.base import BaseEnvironment, StepResult

_SEPARATORS = re.compile(r"[\s_-]+")


class TextAdventureParams(BaseModel):
    """`environment.params` of the text adventure."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_steps: int = Field(10, ge=1)
    """Actions per episode before it ends undecided."""
    max_hp: int = Field(100, ge=1)
    """Starting and largest hp."""
    win_level: int = Field(3, ge=1)
    """Level that wins the game."""
    level_cost: int = Field(10, ge=0)
    """Gold one level up costs."""


class TextAdventureEnvironment(BaseEnvironment):
    """Reach `win_level` by fighting slimes and spending gold, without dying.

    Args:
        config: environment section; its `params` are `TextAdventureParams`.
    """

    def __init__(self, config: EnvironmentConfig | None = None):
        super().__init__(config)
        self.params = validate_params(TextAdventureParams, self.config.params)
        self.player_hp = self.params.max_hp
        self.inventory: list[str] = []
        self.level = 0
        self.gold = 0
        self._started = False

    def get_prompt_prefix(self) -> str:
        if self.config.system_prompt:
            return self.config.system_prompt
        return (
            "You play a text adventure. Reply with one action per turn:\n"
            "- attack <enemy> (slimes are worth gold)\n"
            "- take <item> (potions are kept)\n"
            "- heal (uses a potion)\n"
            f"- level up (costs {self.params.level_cost} gold)\n"
            f"Reach level {self.params.win_level} within {self.params.max_steps} actions without dying."
        )

    def get_state_description(self) -> str:
        """The game state as the model sees it."""
        items = ", ".join(self.inventory) or "empty"
        return (
            f"HP: {self.player_hp}/{self.params.max_hp}\n"
            f"Level: {self.level}\n"
            f"Gold: {self.gold}\n"
            f"Inventory: {items}\n"
            f"Steps: {self.step_count}/{self.params.max_steps}"
        )

    def reset(self, task: Any = None) -> str:
        """Start a new game; `task` is ignored (every game starts the same)."""
        self.player_hp = self.params.max_hp
        self.inventory = []
        self.level = 0
        self.gold = 0
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        self._started = True
        return self.get_state_description()

    def _apply(self, text: str) -> tuple[float, str]:
        """Apply one action; return its reward and the event name for `info`."""
        if "attack" in text:
            if "slime" in text:
                self.gold += 5
                return 10.0, "defeated_slime"
            self.player_hp -= 10
            return -5.0, "missed_attack"
        if "heal" in text:
            if "potion" not in self.inventory:
                return -0.5, "no_potion"
            self.inventory.remove("potion")
            self.player_hp = min(self.params.max_hp, self.player_hp + 30)
            return 2.0, "healed"
        if "take" in text or "pick" in text:
            if "potion" in text:
                self.inventory.append("potion")
                return 1.0, "took_potion"
            return 0.5, "took_item"
        if "level up" in text:
            if self.gold < self.params.level_cost:
                return -1.0, "not_enough_gold"
            self.gold -= self.params.level_cost
            self.level += 1
            return 20.0, "leveled_up"
        return -0.1, "invalid_action"

    def step(self, action: str) -> StepResult:
        if not self._started or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        text = _SEPARATORS.sub(" ", str(action).lower()).strip()
        reward, event = self._apply(text)
        self.step_count += 1
        self.episode_reward += reward
        died = self.player_hp <= 0
        won = not died and self.level >= self.params.win_level
        self._done = died or won or self.step_count >= self.params.max_steps
        info = {event: True, "event": event, "died": died, "won": won, "success": won}
        return self.get_state_description(), reward, self._done, info
