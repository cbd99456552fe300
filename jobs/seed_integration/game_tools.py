# The integration example's tools, as a user writes them (only the import path changed).
from rayrl import Tool, ToolDefinition, ToolParameter


class AttackTool(Tool):
    def __init__(self, environment):
        self.env = environment
        super().__init__(ToolDefinition(
            name="attack",
            description="Attack an enemy",
            parameters=[
                ToolParameter(
                    name="enemy",
                    type="string",
                    description="Enemy to attack (e.g., slime, goblin)",
                    required=True,
                ),
            ],
        ))

    def execute(self, enemy: str, **kwargs) -> str:
        obs, reward, done, info = self.env.step(f"attack {enemy}")
        return f"Attacked {enemy}. Reward: {reward}. {obs}"


class TakeTool(Tool):
    def __init__(self, environment):
        self.env = environment
        super().__init__(ToolDefinition(
            name="take",
            description="Take an item",
            parameters=[
                ToolParameter(
                    name="item",
                    type="string",
                    description="Item to take",
                    required=True,
                ),
            ],
        ))

    def execute(self, item: str, **kwargs) -> str:
        obs, reward, done, info = self.env.step(f"take {item}")
        return f"Took {item}. Reward: {reward}. {obs}"


class HealTool(Tool):
    def __init__(self, environment):
        self.env = environment
        super().__init__(ToolDefinition(
            name="heal",
            description="Use a potion to heal",
            parameters=[],
        ))

    def execute(self, **kwargs) -> str:
        obs, reward, done, info = self.env.step("heal")
        return f"Heal attempt. Reward: {reward}. {obs}"


class LevelUpTool(Tool):
    def __init__(self, environment):
        self.env = environment
        super().__init__(ToolDefinition(
            name="level_up",
            description="Level up (costs 10 gold)",
            parameters=[],
        ))

    def execute(self, **kwargs) -> str:
        obs, reward, done, info = self.env.step("level up")
        return f"Level up attempt. Reward: {reward}. {obs}"
