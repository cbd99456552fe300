"""Multiplication the model cannot do in its head, with a calculator tool it can call.

The base model gets two-digit products almost always wrong on its own. Each turn it may
either call the calculator (a JSON tool call; the result is the next user turn) or
answer (any other reply goes to the arithmetic environment, which checks the last
integer). So the reward for a right answer is reachable only through the tool, and
a rising success rate shows the policy learning to use it. Held-out questions use
three-digit operands the policy never trains on.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

from rayrl.agent.tools import CalculatorTool
from rayrl.config import EnvironmentConfig
from rayrl.envs._params import validate_params
from rayrl.envs.base import StepResult
from rayrl.envs.math_feedback import MathFeedbackEnvironment
from rayrl.envs.tool_use import ToolUseEnvironment

_DEMO_TASKS = ({"a": 12, "b": 34}, {"a": 57, "b": 21}, {"a": 8, "b": 76})


class CalculatorMathParams(BaseModel):
    """`environment.params` of the calculator task."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    min_operand: int = 10
    """Smallest training operand."""
    max_operand: int = Field(99, ge=1)
    """Largest training operand."""
    eval_min_operand: int = 100
    """Smallest held-out operand."""
    eval_max_operand: int = 999
    """Largest held-out operand."""
    valid_call_bonus: float = 0.2
    """Reward per successful calculator call (format shaping; a right answer is worth 1)."""
    format_bonus: float = 0.05
    """Reward per reply that attempts a JSON call without a valid one."""
    example: str = '{"tool": "calculator", "arguments": {"expression": "12 * 34"}}'
    """Example call shown in the system prompt."""
    demonstrations: int = Field(0, ge=0, le=len(_DEMO_TASKS))
    """Worked episodes (call, tool output, answer) shown before the question. With one,
    the base model writes a valid call in ~6% of replies instead of ~0%."""


class CalculatorMathEnvironment(ToolUseEnvironment):
    """Products of two numbers; a calculator call or an answer each turn.

    Args:
        config: environment section; its `params` are `CalculatorMathParams`.
    """

    def __init__(self, config: EnvironmentConfig | None = None):
        config = config or EnvironmentConfig()
        params = validate_params(CalculatorMathParams, config.params)
        inner_params = {
            "operation": "*",
            "min_operand": params.min_operand,
            "max_operand": params.max_operand,
            "eval_min_operand": params.eval_min_operand,
            "eval_max_operand": params.eval_max_operand,
            "feedback_discount": 1.0,  # a right answer after a tool call is worth full reward
            "system_prompt": "Answer the multiplication question with the exact number.",
        }
        inner = MathFeedbackEnvironment(config.model_copy(update={"params": inner_params}))
        super().__init__(
            config,
            inner,
            lambda _env: [CalculatorTool()],
            "json",
            valid_call_bonus=params.valid_call_bonus,
            format_bonus=params.format_bonus,
            example=params.example,
            answers_to_environment=True,
        )
        self.demonstrations = params.demonstrations
        self._demonstration: list[dict[str, str]] | None = None

    def get_demonstration(self) -> list[dict[str, str]]:
        if self._demonstration is None:
            self._demonstration = []
            for task in _DEMO_TASKS[: self.demonstrations]:
                expression = f"{task['a']} * {task['b']}"
                call = json.dumps({"tool": "calculator", "arguments": {"expression": expression}})
                product = str(task["a"] * task["b"])
                self._demonstration += self.play_demonstration(task, [call, product])
        return self._demonstration

    def step(self, action: str) -> StepResult:
        observation, reward, done, info = super().step(action)
        info.setdefault("correct", False)  # an episode of tool calls only never answered
        info.setdefault("first_try", False)
        info.pop("answer_text", None)
        return observation, reward, done, info
