"""Arithmetic with feedback turns (AReaL's multi-turn math agent).

The agent is asked a sum; a wrong answer gets a "try again" user turn, up to
`max_turns` answers. Reward: `feedback_discount ** k` when the answer given on
turn k (0-based) is right, 0 if no answer is right. The answer is the last
integer in the reply: SmolLM2 answers like "35 + 21 = 56", whose first number is
an operand (measured on the base model: 0.13-0.25 of single-digit sums right by the last
number, none by the first).
"""

from __future__ import annotations

import random
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs.base import BaseEnvironment, StepResult

_INT = re.compile(r"-?\d+")


class MathFeedbackParams(BaseModel):
    """`environment.params` of the math-with-feedback environment."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    min_operand: int = 0
    """Smallest training operand."""
    max_operand: int = Field(9, ge=0)
    """Largest training operand (single digits by default)."""
    operation: str = Field("+", pattern=r"^[+*-]$")
    """Arithmetic operation: +, - or *."""
    eval_min_operand: int = 10
    """Smallest operand of held-out evaluation questions."""
    eval_max_operand: int = 99
    """Largest operand of held-out evaluation questions (two digits by default)."""
    feedback_discount: float = Field(0.5, ge=0.0, le=1.0)
    """Reward factor per extra turn a right answer needed."""
    system_prompt: str = "Solve the arithmetic problem."
    """System prompt (short: every token of it is in every training sequence)."""
    correct_feedback: str = "Correct!"
    """Observation after a right answer."""
    wrong_feedback: str = "Your answer is wrong. Try again: give just the number."
    """User turn after a wrong answer."""


def last_integer(text: str) -> int | None:
    """The last integer in `text`, or None."""
    found = _INT.findall(text.replace(",", ""))
    return int(found[-1]) if found else None


class MathFeedbackEnvironment(BaseEnvironment):
    """Answer an arithmetic question; wrong answers get a feedback turn.

    Args:
        config: environment section; its `params` are `MathFeedbackParams`.
    """

    def __init__(self, config: EnvironmentConfig | None = None):
        super().__init__(config)
        try:
            self.params = MathFeedbackParams.model_validate(self.config.params)
        except ValidationError as err:
            bad = "; ".join(
                f"environment.params.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()
            )
            raise ConfigError(bad) from None
        self.task: dict[str, int] | None = None

    def _question(self, rng: random.Random, lo: int, hi: int) -> dict[str, int]:
        return {"a": rng.randint(lo, hi), "b": rng.randint(lo, hi)}

    def sample_task(self, rng: random.Random) -> dict[str, int]:
        return self._question(rng, self.params.min_operand, self.params.max_operand)

    def sample_eval_task(self, rng: random.Random) -> dict[str, int]:
        return self._question(rng, self.params.eval_min_operand, self.params.eval_max_operand)

    def get_prompt_prefix(self) -> str:
        return self.config.system_prompt or self.params.system_prompt

    def answer(self, task: dict[str, int]) -> int:
        """The right answer to `task`."""
        a, b, op = task["a"], task["b"], self.params.operation
        return a + b if op == "+" else a - b if op == "-" else a * b

    def reset(self, task: Any = None) -> str:
        self.task = task or self.sample_task(random.Random())
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        return f"What is {self.task['a']} {self.params.operation} {self.task['b']}?"

    def step(self, action: str) -> StepResult:
        if self.task is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        given = last_integer(action)
        correct = given == self.answer(self.task)
        reward = self.params.feedback_discount**self.step_count if correct else 0.0
        self.step_count += 1
        self.episode_reward += reward
        self._done = correct or self.step_count >= self.config.max_turns
        info = {"correct": correct, "first_try": correct and self.step_count == 1, "answer_text": str(given)}
        obs = self.params.correct_feedback if correct else self.params.wrong_feedback
        return obs, reward, self._done, info
