"""Scripted multi-turn conversations and goal-directed tasks (seed 002).

Both environments play the user from a fixed script so that episodes are
reproducible and need no second model: a learned or LLM-judged user would make
GRPO's group comparison depend on the judge's sampling.

`ConversationEnvironment` replays a scenario's `user_responses` one per turn and
scores each assistant reply with a cheap lexical rule (see `reply_reward`): it
measures only that the reply is non-empty and how many content words of the user
turn it answers it repeats. That is a proxy for staying on topic, not for being
helpful or right; a reply that echoes the user scores highest, so pair it with a
real reward for anything beyond smoke tests.

`TaskEnvironment` gives a goal and checks the assistant's replies so far against
success criteria (substrings, regexes or keyword sets, all case-insensitive, plus
optional forbidden words); while criteria are missing the user turn names them.

Scenarios and tasks given to the constructor serve direct use; rayrl's runner
builds environments from the config alone, so training reads them from `params`.
"""

from __future__ import annotations

import random
import re
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs._params import validate_params
from rayrl.envs.base import BaseEnvironment, StepResult

_WORD = re.compile(r"[a-z0-9']+")
_STOPWORDS = frozenset(
    "the and you your for are with that this have has can could would will not but was were "
    "what how why when who which from about into just i'm it's don't there their them they".split()
)


def content_words(text: str) -> set[str]:
    """Lowercased words of three or more characters that are not stopwords."""
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOPWORDS}


class Scenario(BaseModel):
    """One scripted conversation; extra keys (topic, context) are kept and ignored."""

    model_config = ConfigDict(extra="allow")

    id: str
    user_responses: list[str] = Field(min_length=1)
    max_turns: int | None = Field(None, ge=1)


class ConversationParams(BaseModel):
    """`environment.params` of the scripted conversation."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    scenarios: list[Scenario] = Field(default_factory=list)
    """Scenarios `sample_task` draws from."""
    empty_reward: float = -1.0
    """Reward of an empty (whitespace-only) reply."""
    nonempty_reward: float = 0.2
    """Reward of any non-empty reply."""
    overlap_weight: float = Field(0.8, ge=0.0)
    """Added reward times the share of the user turn's content words the reply repeats."""
    system_prompt: str = "You are a helpful assistant. Reply to the user."
    """System prompt."""


class ConversationEnvironment(BaseEnvironment):
    """Talk through a scripted user's turns; each reply is scored on its own.

    Args:
        config: environment section; its `params` are `ConversationParams`.
        scenarios: scenario dicts ("id", "user_responses", optional "max_turns");
            replace `params.scenarios` when given.
    """

    def __init__(self, config: EnvironmentConfig | None = None, scenarios: list[dict] | None = None):
        super().__init__(config)
        self.params = validate_params(ConversationParams, self.config.params)
        self.scenarios = (
            validate_params(list[Scenario], scenarios, "scenarios")
            if scenarios is not None
            else list(self.params.scenarios)
        )
        self.scenario: Scenario | None = None
        self.limit = 0

    def get_prompt_prefix(self) -> str:
        return self.config.system_prompt or self.params.system_prompt

    def sample_task(self, rng: random.Random) -> dict[str, Any]:
        if not self.scenarios:
            raise ConfigError("environment.params.scenarios: empty, nothing to sample")
        return rng.choice(self.scenarios).model_dump()

    def _resolve(self, task: Any) -> Scenario:
        if isinstance(task, Scenario):
            return task
        if isinstance(task, dict):
            return validate_params(Scenario, task, "task")
        if task is None and self.scenarios:
            return self.scenarios[0]
        for scenario in self.scenarios:
            if scenario.id == task:
                return scenario
        raise ValueError(f"unknown scenario {task!r}; known ids: {[s.id for s in self.scenarios]}")

    def reset(self, task: Any = None) -> str:
        """Start `task`: a scenario dict, a scenario id, or None for the first scenario."""
        self.scenario = self._resolve(task)
        turns = len(self.scenario.user_responses)
        self.limit = min(turns, self.scenario.max_turns or self.config.max_turns)
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        return self.scenario.user_responses[0]

    def reply_reward(self, reply: str, user_turn: str) -> tuple[float, float]:
        """(reward, overlap) of `reply` to `user_turn`.

        Empty reply: `empty_reward`. Otherwise `nonempty_reward + overlap_weight *
        overlap`, where overlap is the share of the user turn's content words
        (see `content_words`) that also occur in the reply (0 when it has none).
        """
        if not reply.strip():
            return self.params.empty_reward, 0.0
        wanted = content_words(user_turn)
        overlap = len(wanted & content_words(reply)) / len(wanted) if wanted else 0.0
        return self.params.nonempty_reward + self.params.overlap_weight * overlap, overlap

    def step(self, action: str) -> StepResult:
        if self.scenario is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        user_turn = self.scenario.user_responses[self.step_count]
        reward, overlap = self.reply_reward(str(action), user_turn)
        self.step_count += 1
        self.episode_reward += reward
        self._done = self.step_count >= self.limit
        obs = "" if self._done else self.scenario.user_responses[self.step_count]
        info = {"scenario": self.scenario.id, "overlap": overlap, "empty": not str(action).strip()}
        return obs, reward, self._done, info


class Criterion(BaseModel):
    """One success criterion; a plain string is shorthand for `{"contains": ...}`.

    Exactly one of `contains` (substring), `regex` or `keywords` (any one of them)
    is set; seed 002's `{"name", "keywords"}` required actions fit as they are.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    contains: str | None = None
    regex: str | None = None
    keywords: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"contains": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_rule(self) -> Criterion:
        rules = [r for r in (self.contains, self.regex, self.keywords) if r is not None]
        if len(rules) != 1:
            raise ValueError("set exactly one of contains, regex, keywords")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"bad regex {self.regex!r}: {err}") from None
        return self

    @property
    def label(self) -> str:
        """How feedback names this criterion."""
        if self.name:
            return self.name
        if self.keywords is not None:
            return "one of " + "/".join(self.keywords)
        return str(self.contains if self.contains is not None else self.regex)

    def met(self, text: str) -> bool:
        """Whether `text` (already lowercased) satisfies the criterion."""
        if self.contains is not None:
            return self.contains.lower() in text
        if self.regex is not None:
            return re.search(self.regex, text, re.IGNORECASE) is not None
        return any(k.lower() in text for k in self.keywords or ())


class TaskSpec(BaseModel):
    """One goal-directed task; the first observation is `prompt`, else `goal`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    prompt: str | None = None
    goal: str | None = None
    success_criteria: list[Criterion] = Field(
        min_length=1, validation_alias=AliasChoices("success_criteria", "required_actions")
    )
    forbidden: list[str] = Field(default_factory=list)
    max_turns: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _has_text(self) -> TaskSpec:
        if not (self.prompt or self.goal):
            raise ValueError("a task needs a prompt or a goal")
        return self


class TaskParams(BaseModel):
    """`environment.params` of the goal-directed task environment."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    tasks: list[TaskSpec] = Field(default_factory=list)
    """Tasks `sample_task` draws from."""
    success_reward: float = 1.0
    """Reward of the turn on which every criterion is first met."""
    system_prompt: str = "You are a helpful assistant. Complete the user's task."
    """System prompt."""


class TaskEnvironment(BaseEnvironment):
    """Reach a goal; the user names the criteria still missing after each reply.

    Criteria are checked on all assistant replies so far, joined, so a task may be
    completed across turns. Success gives `success_reward` and ends the episode; a
    forbidden word in a reply ends it with reward 0; otherwise the episode ends
    after the task's `max_turns` (default `config.max_turns`).

    Args:
        config: environment section; its `params` are `TaskParams`.
        tasks: task dicts ("id", "prompt"/"goal", "success_criteria", optional
            "forbidden" and "max_turns"); replace `params.tasks` when given.
    """

    def __init__(self, config: EnvironmentConfig | None = None, tasks: list[dict] | None = None):
        super().__init__(config)
        self.params = validate_params(TaskParams, self.config.params)
        self.tasks = (
            validate_params(list[TaskSpec], tasks, "tasks") if tasks is not None else list(self.params.tasks)
        )
        self.task: TaskSpec | None = None
        self.replies: list[str] = []

    def get_prompt_prefix(self) -> str:
        return self.config.system_prompt or self.params.system_prompt

    def sample_task(self, rng: random.Random) -> dict[str, Any]:
        if not self.tasks:
            raise ConfigError("environment.params.tasks: empty, nothing to sample")
        return rng.choice(self.tasks).model_dump(exclude_none=True)

    def _resolve(self, task: Any) -> TaskSpec:
        if isinstance(task, TaskSpec):
            return task
        if isinstance(task, dict):
            return validate_params(TaskSpec, task, "task")
        if task is None and self.tasks:
            return self.tasks[0]
        for spec in self.tasks:
            if spec.id == task:
                return spec
        raise ValueError(f"unknown task {task!r}; known ids: {[t.id for t in self.tasks]}")

    def reset(self, task: Any = None) -> str:
        """Start `task`: a task dict, a task id, or None for the first task."""
        self.task = self._resolve(task)
        self.replies = []
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        return str(self.task.prompt or self.task.goal)

    def step(self, action: str) -> StepResult:
        if self.task is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        self.replies.append(str(action))
        self.step_count += 1
        text = "\n".join(self.replies).lower()
        violated = [w for w in self.task.forbidden if w.lower() in text]
        met = [c.label for c in self.task.success_criteria if c.met(text)]
        missing = [c.label for c in self.task.success_criteria if not c.met(text)]
        success = not violated and not missing
        reward = self.params.success_reward if success else 0.0
        self.episode_reward += reward
        limit = self.task.max_turns or self.config.max_turns
        self._done = success or bool(violated) or self.step_count >= limit
        if success:
            obs = "Task complete."
        elif violated:
            obs = f"Task failed: the reply used {', '.join(violated)}."
        else:
            obs = f"Not done yet. Still missing: {', '.join(missing)}."
        info = {
            "task": self.task.id,
            "success": success,
            "met": met,
            "missing": missing,
            "violated": violated,
        }
        return obs, reward, self._done, info
