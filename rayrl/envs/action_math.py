"""Solve a linear equation by naming one action per turn.

The model does not write a solution; it picks the next step from a fixed action
set and the environment carries the step out. Rewards per action make each step
a learning signal of its own, and the log of actions shows where a policy goes
wrong, which a single end-of-episode score hides.

The equation is `a*x + b = c` with an integer solution. The steps, in order:

    identify_operation  -> +1.5   "linear equation: subtract b, then divide by a"
    subtract_terms      -> +2.0   "3x = 9"
    divide_terms        -> +2.0   "x = 3"
    state_answer: x = 3 -> +3.0   episode ends (solved)

The valid actions at any point are the next step of that sequence and
`state_answer`, which may come early. A right `state_answer` ends the episode; a
wrong one costs `wrong_answer_reward`; an action out of order, an unknown one or
no action at all costs `invalid_reward`, and the observation lists what is valid.
The episode also ends after `config.max_turns` actions (set it to 4 or more for
the full sequence to fit).

Action grammar (case-insensitive): the first action name found anywhere in the
reply is the action, with `_`, `-` or spaces between its words ("Subtract terms",
"divide-terms"); surrounding prose is ignored. For `state_answer` the value is the
number after `x =` in the text following the name, else the first number there
(decimals allowed: "x = 3.0" is right).
"""

from __future__ import annotations

import random
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rayrl.config import EnvironmentConfig
from rayrl.envs._params import validate_params
from rayrl.envs.base import BaseEnvironment, StepResult

STEPS = ("identify_operation", "subtract_terms", "divide_terms")
ACTIONS = (*STEPS, "state_answer")
_ACTION = re.compile("|".join(r"\b" + name.replace("_", r"[\s_-]*") + r"\b" for name in ACTIONS), re.I)
_X_IS = re.compile(r"\bx\s*=\s*(-?\d+(?:\.\d+)?)", re.I)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_EQUATION = re.compile(r"(-?\d+)\s*\*?\s*x\s*([+-])\s*(\d+)\s*=\s*(-?\d+)")


class ActionMathParams(BaseModel):
    """`environment.params` of the action-based equation solver."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_coefficient: int = Field(9, ge=2)
    """Largest training coefficient a (a >= 2)."""
    max_solution: int = Field(10, ge=0)
    """Training solutions x lie in 0..max_solution."""
    max_constant: int = Field(20, ge=1)
    """Training constants b lie in 1..max_constant."""
    eval_max_coefficient: int = Field(19, ge=2)
    """Largest held-out coefficient."""
    eval_max_solution: int = Field(50, ge=0)
    """Held-out solutions lie in -eval_max_solution..eval_max_solution."""
    eval_max_constant: int = Field(100, ge=1)
    """Held-out constants b lie in -eval_max_constant..eval_max_constant, not 0."""
    step_rewards: dict[str, float] = Field(
        default_factory=lambda: {"identify_operation": 1.5, "subtract_terms": 2.0, "divide_terms": 2.0}
    )
    """Reward of each step when taken in order."""
    answer_reward: float = 3.0
    """Reward of a right state_answer (ends the episode)."""
    wrong_answer_reward: float = -1.0
    """Reward of a wrong or unreadable state_answer."""
    invalid_reward: float = -0.5
    """Reward of an unknown, missing or out-of-order action."""

    @field_validator("step_rewards")
    @classmethod
    def _known_steps(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(STEPS))
        if unknown:
            raise ValueError(f"unknown steps {unknown}; steps are {list(STEPS)}")
        return value


def parse_action(text: str) -> tuple[str | None, str]:
    """(action name or None, the text after it) per the module's grammar."""
    found = _ACTION.search(text)
    if found is None:
        return None, ""
    name = re.sub(r"[\s_-]+", "_", found.group(0).lower())
    return name, text[found.end() :]


def parse_answer(argument: str) -> float | None:
    """The value a state_answer argument gives for x, or None."""
    found = _X_IS.search(argument) or _NUMBER.search(argument)
    return float(found.group(1 if found.re is _X_IS else 0)) if found else None


def parse_equation(text: str) -> dict[str, int]:
    """The task of a problem written as text ("Solve for x: 3x + 7 = 16")."""
    found = _EQUATION.search(text)
    if found is None:
        raise ValueError(f"no equation `a x + b = c` in {text!r}")
    a, sign, b, c = found.groups()
    a, b, c = int(a), int(b) * (1 if sign == "+" else -1), int(c)
    if a == 0 or (c - b) % a:
        raise ValueError(f"{text!r} has no integer solution")
    return {"a": a, "b": b, "c": c, "x": (c - b) // a}


def equation_text(task: dict[str, int]) -> str:
    """`3x + 7 = 16` for a=3, b=7, c=16."""
    sign = "+" if task["b"] >= 0 else "-"
    return f"{task['a']}x {sign} {abs(task['b'])} = {task['c']}"


class ActionMathEnvironment(BaseEnvironment):
    """Solve `a*x + b = c` one named action at a time.

    Args:
        config: environment section; its `params` are `ActionMathParams`.
    """

    def __init__(self, config: EnvironmentConfig | None = None):
        super().__init__(config)
        self.params = validate_params(ActionMathParams, self.config.params)
        self.task: dict[str, int] | None = None
        self.stage = 0  # steps of STEPS done so far

    def _equation(self, a: int, x: int, b: int) -> dict[str, int]:
        return {"a": a, "b": b, "c": a * x + b, "x": x}

    def sample_task(self, rng: random.Random) -> dict[str, int]:
        p = self.params
        return self._equation(
            rng.randint(2, p.max_coefficient), rng.randint(0, p.max_solution), rng.randint(1, p.max_constant)
        )

    def sample_eval_task(self, rng: random.Random) -> dict[str, int]:
        p = self.params
        b = rng.choice([-1, 1]) * rng.randint(1, p.eval_max_constant)
        x = rng.randint(-p.eval_max_solution, p.eval_max_solution)
        return self._equation(rng.randint(2, p.eval_max_coefficient), x, b)

    def valid_actions(self) -> list[str]:
        """Actions accepted in the current state."""
        return [STEPS[self.stage], "state_answer"] if self.stage < len(STEPS) else ["state_answer"]

    def get_valid_actions(self) -> list[str]:
        return self.valid_actions()

    def get_prompt_prefix(self) -> str:
        if self.config.system_prompt:
            return self.config.system_prompt
        return (
            "Solve the equation for x one step at a time. Reply with exactly one action per turn, "
            f"chosen from: {', '.join(ACTIONS)}. Give the answer as `state_answer: x = <number>`."
        )

    def reset(self, task: Any = None) -> str:
        """`task`: a dict `{a, b, c}`, a problem text with the equation, or None (a random one)."""
        if isinstance(task, str):
            task = parse_equation(task)
        self.task = dict(task) if task else self.sample_task(random.Random())
        self.task.setdefault("x", (self.task["c"] - self.task["b"]) // self.task["a"])
        self.stage = 0
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        return f"Solve for x: {equation_text(self.task)}\nValid actions: {', '.join(self.valid_actions())}"

    def _result(self, step: str) -> str:
        t = self.task or {}
        if step == "identify_operation":
            return f"Linear equation: subtract {t['b']} from both sides, then divide by {t['a']}."
        if step == "subtract_terms":
            return f"{t['a']}x = {t['c'] - t['b']}"
        return f"x = {t['x']}"

    def step(self, action: str) -> StepResult:
        if self.task is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        name, argument = parse_action(str(action))
        p, valid = self.params, self.valid_actions()
        answer, solved = None, False
        if name is None or name not in valid:
            reward = p.invalid_reward
            what = "No action found" if name is None else f"{name} is not valid now"
            obs = f"{what}. Valid actions: {', '.join(valid)}"
        elif name == "state_answer":
            answer = parse_answer(argument)
            solved = answer is not None and answer == self.task["x"]
            reward = p.answer_reward if solved else p.wrong_answer_reward
            obs = f"Correct: x = {self.task['x']}." if solved else "That answer is wrong."
        else:
            reward = p.step_rewards.get(name, 0.0)
            obs = self._result(name)
            self.stage += 1
        self.step_count += 1
        self.episode_reward += reward
        self._done = solved or self.step_count >= self.config.max_turns
        if not self._done and not (name is None or name not in valid):
            obs += f"\nValid actions: {', '.join(self.valid_actions())}"
        info = {
            "action": name,
            "valid": name in valid,
            "answer": answer,
            "correct": solved,
            "success": solved,
        }
        return obs, reward, self._done, info
