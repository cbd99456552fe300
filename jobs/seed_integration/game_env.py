# The integration example's environment, as a user writes it (only the import path changed).
from typing import Any, Dict, Tuple

from rayrl import BaseEnvironment, EnvironmentConfig


class TextAdventureEnvironment(BaseEnvironment):
    """Simple text adventure game environment."""

    def __init__(self, config: EnvironmentConfig):
        super().__init__(config)
        self.player_hp = 100
        self.inventory = []
        self.level = 0
        self.gold = 0

    def reset(self) -> str:
        self.player_hp = 100
        self.inventory = []
        self.level = 0
        self.gold = 0
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        return self.get_state_description()

    def step(self, action: str) -> Tuple[str, float, bool, Dict[str, Any]]:
        self.step_count += 1
        reward = 0.0
        info = {}
        action_lower = action.lower().strip()
        if "attack" in action_lower:
            if "slime" in action_lower:
                reward = 10.0
                self.gold += 5
                info["defeated_slime"] = True
            else:
                reward = -5.0
                self.player_hp -= 10
                info["missed_attack"] = True
        elif "heal" in action_lower:
            if "potion" in self.inventory:
                reward = 2.0
                self.player_hp = min(100, self.player_hp + 30)
                self.inventory.remove("potion")
                info["healed"] = True
            else:
                reward = -0.5
                info["no_potion"] = True
        elif "take" in action_lower or "pick" in action_lower:
            if "potion" in action_lower:
                self.inventory.append("potion")
                reward = 1.0
                info["took_potion"] = True
            else:
                reward = 0.5
                info["took_item"] = True
        elif "level up" in action_lower:
            if self.gold >= 10:
                reward = 20.0
                self.level += 1
                self.gold -= 10
                info["leveled_up"] = True
            else:
                reward = -1.0
                info["not_enough_gold"] = True
        else:
            reward = -0.1
            info["invalid_action"] = True
        self.episode_reward += reward
        if self.player_hp <= 0:
            self._done = True
            info["died"] = True
        elif self.level >= 3:
            self._done = True
            info["won"] = True
        elif self.step_count >= 10:
            self._done = True
        return self.get_state_description(), reward, self._done, info

    def get_state_description(self) -> str:
        return f"""
        === Game State ===
        HP: {self.player_hp}/100
        Level: {self.level}
        Gold: {self.gold}
        Inventory: {', '.join(self.inventory) if self.inventory else 'empty'}
        Steps: {self.step_count}/10
        """.strip()

    def get_prompt_prefix(self) -> str:
        return """You are playing a text adventure game.

Available actions:
- attack <enemy>: Attack an enemy
- take <item>: Take an item
- heal: Use a potion to heal
- level up: Level up (costs 10 gold)

Your goal is to reach level 3 without dying.
Respond with ONE action at a time using the tool provided."""
