"""A row of the user's data file as an episode (`environment.name=dataset`).

The task is what `rayrl.data` made of the row: `{"prompt", "answer", "extra", "source"}`.
The prompt opens the episode (a string as the user turn, or the row's chat messages).
A reply is right when it gives the answer: for a plain number, its last number equals it;
otherwise math_verify's comparison, or an exact match of a text answer
(`rayrl.rewards.answer_is_right`). With `environment.max_turns` > 1 a wrong answer gets a
"try again" turn, as in `math_feedback` (seed 004's feedback loop), and the reward is
`feedback_discount ** k` for a right answer on turn k (0-based). A `training.reward_fn`
replaces this reward as for any environment (the task's `answer` is the episode's
reference).
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs._params import validate_params
from rayrl.envs.base import BaseEnvironment, StepResult


class DatasetParams(BaseModel):
    """`environment.params` of the dataset environment."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    system_prompt: str | None = "Solve the problem. End your reply with the final answer."
    """System prompt of string prompts (a row's own system message replaces it)."""
    feedback_discount: float = Field(0.5, ge=0.0, le=1.0)
    """Reward factor per extra turn a right answer needed."""
    correct_feedback: str = "Correct!"
    wrong_feedback: str = "Your answer is wrong. Try again: end with the final answer."
    check_timeout_s: float = Field(10.0, gt=0.0)
    """Deadline of one math_verify check."""


class DatasetEnvironment(BaseEnvironment):
    """One task of a data file per episode (see the module docstring)."""

    def __init__(self, config: EnvironmentConfig | None = None):
        super().__init__(config)
        self.params = validate_params(DatasetParams, self.config.params)
        self.task: dict[str, Any] | None = None

    def sample_task(self, rng: random.Random) -> Any:
        raise ConfigError("the dataset environment's tasks come from data.train_files, not a generator")

    sample_eval_task = sample_task

    def get_prompt_prefix(self) -> str:
        return self.config.system_prompt or self.params.system_prompt or ""

    def answer(self, task: dict[str, Any]) -> str | None:
        """The reference answer of `task`."""
        return task.get("answer")

    def reset(self, task: Any = None) -> str | list[dict]:
        if not isinstance(task, dict) or "prompt" not in task:
            raise ValueError("the dataset environment needs a task from rayrl.data (a dict with 'prompt')")
        self.task = task
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        return task["prompt"]

    def step(self, action: str) -> StepResult:
        from rayrl.rewards import answer_is_right

        if self.task is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        reference = self.task.get("answer")
        correct = reference is not None and answer_is_right(action, reference, self.params.check_timeout_s)
        reward = self.params.feedback_discount**self.step_count if correct else 0.0
        self.step_count += 1
        self.episode_reward += reward
        self._done = correct or self.step_count >= self.config.max_turns
        info = {"correct": correct, "first_try": correct and self.step_count == 1}
        obs = self.params.correct_feedback if correct else self.params.wrong_feedback
        return obs, reward, self._done, info
