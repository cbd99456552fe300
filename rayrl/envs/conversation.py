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
Success is "every criterion met" unless a `success_criteria(turns, context)`
callable is given: then the criteria only fill the episode context (which are
required, which are met) and the callable decides. A callable is user code run
inside a training run, so one that raises fails that step, not the episode.

Both keep the episode's state that user code reads in a `context` dict (also in
each step's info), so reward functions and success checks see the goal, the
persona or the actions completed without reaching into the environment.

Scenarios and tasks given to the constructor serve direct use; rayrl's runner
builds environments from the config alone, so training reads them from `params`.
Environments are deep-copied per episode and pickled to Ray actors, so they hold
only plain data, pydantic models and the user's callables.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from rayrl.agent.conversation import ConversationTurn
from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs._params import validate_params
from rayrl.envs.base import BaseEnvironment, StepResult

SuccessCheck = Callable[[list[ConversationTurn], dict[str, Any]], Any]
"""`success_criteria(turns, context) -> bool`: turns of the episode so far, the episode context."""


def _turn_limit(max_turns: Any) -> int | None:
    """`max_turns` validated as None or an int >= 1 (ConfigError naming the key)."""
    return validate_params(Annotated[int, Field(ge=1, strict=True)] | None, max_turns, "max_turns")


_WORD = re.compile(r"[a-z0-9']+")
_STOPWORDS = frozenset(
    "the and you your for are with that this have has can could would will not but was were "
    "what how why when who which from about into just i'm it's don't there their them they".split()
)


def content_words(text: str) -> set[str]:
    """Lowercased words of three or more characters that are not stopwords."""
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOPWORDS}


class Scenario(BaseModel):
    """One scripted conversation; extra keys (topic, context) are kept and land in
    the episode context."""

    model_config = ConfigDict(extra="allow")

    id: str
    user_responses: list[str] = Field(min_length=1)
    max_turns: int | None = Field(None, ge=1)
    persona: str | None = None


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

    The persona describes the simulated user. The script, not the persona, decides
    what the user says; the persona is there for rewards and logs to read (episode
    `context`, step info).

    Args:
        config: environment section; its `params` are `ConversationParams`.
        scenarios: scenario dicts ("id", "user_responses", optional "max_turns",
            "persona" and any other keys, such as "topic"); replace
            `params.scenarios` when given.
        max_turns: assistant turns per episode, instead of `config.max_turns`; a
            scenario's own "max_turns" wins, and no episode outlasts its script.
        persona: description of the simulated user; a scenario's own "persona" wins.
    """

    def __init__(
        self,
        config: EnvironmentConfig | None = None,
        scenarios: list[dict] | None = None,
        *,
        max_turns: int | None = None,
        persona: str | None = None,
    ):
        super().__init__(config)
        self.params = validate_params(ConversationParams, self.config.params)
        self.scenarios = (
            validate_params(list[Scenario], scenarios, "scenarios")
            if scenarios is not None
            else list(self.params.scenarios)
        )
        self.max_turns = _turn_limit(max_turns)
        self.persona = validate_params(str | None, persona, "persona")
        self.scenario: Scenario | None = None
        self.limit = 0

    def _limit(self, scenario: Scenario) -> int:
        default = self.max_turns or self.config.max_turns
        return min(len(scenario.user_responses), scenario.max_turns or default)

    def turn_limit(self) -> int:
        """The agent loop's cap: `max_turns` (else `config.max_turns`), raised to the longest
        episode a known scenario allows with its own "max_turns"."""
        return max([super().turn_limit(), *(self._limit(s) for s in self.scenarios)])

    @property
    def context(self) -> dict[str, Any]:
        """The current episode's context: the scenario's extra keys (topic, context...),
        "scenario" (its id), "persona", "turn" (assistant turns so far) and
        "max_turns" (this episode's limit). Empty before `reset`."""
        if self.scenario is None:
            return {}
        return {
            **(self.scenario.model_extra or {}),
            "scenario": self.scenario.id,
            "persona": self.scenario.persona or self.persona,
            "turn": self.step_count,
            "max_turns": self.limit,
        }

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
        self.limit = self._limit(self.scenario)
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
        context = self.context
        info = {
            "scenario": self.scenario.id,
            "persona": context["persona"],
            "overlap": overlap,
            "empty": not str(action).strip(),
            "context": context,
        }
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
    """One goal-directed task.

    Its first user message is `prompt`, else built from `description` and `goal`
    (`opening`). Criteria come from "success_criteria" or, as seed 002 writes them,
    "required_actions". A callable under "success_criteria" is this task's own
    success check (`success_check`), and its criteria then come from
    "required_actions". Extra keys are kept and land in the episode context.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str | None = None
    prompt: str | None = None
    description: str | None = None
    goal: str | None = None
    success_criteria: list[Criterion] = Field(
        default_factory=list, validation_alias=AliasChoices("success_criteria", "required_actions")
    )
    success_check: SuccessCheck | None = None
    forbidden: list[str] = Field(default_factory=list)
    max_turns: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _callable_criteria(cls, value: Any) -> Any:
        # the guide passes the success check under the same key as criteria lists
        if isinstance(value, dict) and callable(value.get("success_criteria")):
            value = dict(value)
            value["success_check"] = value.pop("success_criteria")
        return value

    @model_validator(mode="after")
    def _has_text(self) -> TaskSpec:
        if not (self.prompt or self.goal or self.description):
            raise ValueError("a task needs a prompt, a goal or a description")
        return self

    @property
    def opening(self) -> str:
        """The first user message: `prompt`, else "<description>. Goal: <goal>." (either alone
        when the other is missing)."""
        if self.prompt:
            return self.prompt
        if self.description and self.goal:
            return f"{_sentence(self.description)} Goal: {_sentence(self.goal)}"
        return str(self.goal or self.description)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _number_tasks(tasks: list[TaskSpec]) -> list[TaskSpec]:
    """`tasks` with "task_<index>" as the id of those that have none."""
    return [t if t.id is not None else t.model_copy(update={"id": f"task_{i}"}) for i, t in enumerate(tasks)]


class TaskParams(BaseModel):
    """`environment.params` of the goal-directed task environment."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    tasks: list[TaskSpec] = Field(default_factory=list)
    """Tasks `sample_task` draws from; those without an id get "task_<index>"."""
    success_reward: float = 1.0
    """Reward of the turn on which the task first succeeds."""
    system_prompt: str = "You are a helpful assistant. Complete the user's task."
    """System prompt."""


class TaskEnvironment(BaseEnvironment):
    """Reach a goal; the user names the criteria still missing after each reply.

    Criteria are checked on all assistant replies so far, joined, so a task may be
    completed across turns. The task succeeds when every criterion is met or, with
    a success check (the task's own, else the `success_criteria` argument), when
    `check(turns, context)` is truthy; a check that raises counts as not yet
    successful and its error is in the step info as "success_criteria_error".
    Success gives `success_reward` and ends the episode; a forbidden word in a
    reply ends it with reward 0; otherwise the episode ends after the task's
    `max_turns`, else the `max_turns` argument, else `config.max_turns`.

    The episode context (`context`, and "context" in each step's info) holds the
    task's extra keys plus "task_id", "prompt", "description", "goal",
    "required_actions" (criterion names), "completed_actions" (those met so far),
    "missing_actions", "violated" (forbidden words used), "turn" and "max_turns".

    Args:
        config: environment section; its `params` are `TaskParams`.
        tasks: task dicts ("id", "prompt"/"description"/"goal",
            "success_criteria" or "required_actions", optional "forbidden" and
            "max_turns"); replace `params.tasks` when given.
        success_criteria: `check(turns, context) -> bool`, where `turns` are the
            episode's `ConversationTurn`s so far (user and assistant, ending with
            the reply just given) and `context` the episode context above.
        max_turns: assistant turns per episode, instead of `config.max_turns`.
    """

    def __init__(
        self,
        config: EnvironmentConfig | None = None,
        tasks: list[dict] | None = None,
        *,
        success_criteria: SuccessCheck | None = None,
        max_turns: int | None = None,
    ):
        super().__init__(config)
        self.params = validate_params(TaskParams, self.config.params)
        where = "tasks" if tasks is not None else "environment.params.tasks"
        self.tasks = _number_tasks(
            validate_params(list[TaskSpec], tasks, "tasks") if tasks is not None else list(self.params.tasks)
        )
        if success_criteria is not None and not callable(success_criteria):
            raise ConfigError(
                "success_criteria: expected a callable (turns, context) -> bool, "
                f"got {type(success_criteria).__name__}"
            )
        self.success_criteria = success_criteria
        self.max_turns = _turn_limit(max_turns)
        for i, spec in enumerate(self.tasks):
            self._check_decidable(spec, f"{where}.{i}")
        self.task: TaskSpec | None = None
        self.replies: list[str] = []
        self.turns: list[ConversationTurn] = []
        self._context: dict[str, Any] = {}

    def _check_decidable(self, spec: TaskSpec, where: str) -> None:
        if not spec.success_criteria and spec.success_check is None and self.success_criteria is None:
            raise ConfigError(
                f"{where}.success_criteria: no criteria (success_criteria or required_actions) "
                "and no success_criteria callable, so the task could never succeed"
            )

    def _limit(self, spec: TaskSpec) -> int:
        return spec.max_turns or self.max_turns or self.config.max_turns

    def turn_limit(self) -> int:
        """The agent loop's cap: `max_turns` (else `config.max_turns`), raised to the longest
        episode a known task allows with its own "max_turns"."""
        return max([super().turn_limit(), *(self._limit(t) for t in self.tasks)])

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
            spec = validate_params(TaskSpec, task, "task")
            self._check_decidable(spec, "task")
            return spec if spec.id is not None else spec.model_copy(update={"id": "task"})
        if task is None and self.tasks:
            return self.tasks[0]
        for spec in self.tasks:
            if spec.id == task:
                return spec
        raise ValueError(f"unknown task {task!r}; known ids: {[t.id for t in self.tasks]}")

    @property
    def context(self) -> dict[str, Any]:
        """A copy of the current episode's context (see the class docstring); empty before `reset`."""
        return dict(self._context)

    def _update_context(
        self, task: TaskSpec, met: list[str], missing: list[str], violated: list[str]
    ) -> None:
        self._context = {
            **(task.model_extra or {}),
            "task_id": task.id,
            "prompt": task.prompt,
            "description": task.description,
            "goal": task.goal,
            "required_actions": [c.label for c in task.success_criteria],
            "completed_actions": met,
            "missing_actions": missing,
            "violated": violated,
            "turn": self.step_count,
            "max_turns": self._limit(task),
        }

    def reset(self, task: Any = None) -> str:
        """Start `task`: a task dict, a task id, or None for the first task."""
        self.task = self._resolve(task)
        self.replies = []
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        opening = self.task.opening
        self.turns = [ConversationTurn("user", opening)]
        self._update_context(self.task, [], [c.label for c in self.task.success_criteria], [])
        return opening

    def step(self, action: str) -> StepResult:
        if self.task is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        reply = str(action)
        self.replies.append(reply)
        self.turns.append(ConversationTurn("assistant", reply))
        self.step_count += 1
        text = "\n".join(self.replies).lower()
        violated = [w for w in self.task.forbidden if w.lower() in text]
        met = [c.label for c in self.task.success_criteria if c.met(text)]
        missing = [c.label for c in self.task.success_criteria if not c.met(text)]
        self._update_context(self.task, met, missing, violated)
        info: dict[str, Any] = {"task": self.task.id, "met": met, "missing": missing, "violated": violated}
        check = self.task.success_check or self.success_criteria
        if check is None:
            success = not missing
        else:
            try:
                success = bool(check(list(self.turns), self.context))
            except Exception as err:  # noqa: BLE001 - a bug in user code fails this step, not the run
                success = False
                info["success_criteria_error"] = f"{type(err).__name__}: {err}"
        success = success and not violated
        reward = self.params.success_reward if success else 0.0
        self.turns[-1].reward = reward
        self.episode_reward += reward
        self._done = success or bool(violated) or self.step_count >= self._limit(self.task)
        if success:
            obs = "Task complete."
        elif violated:
            obs = f"Task failed: the reply used {', '.join(violated)}."
        elif missing:
            obs = f"Not done yet. Still missing: {', '.join(missing)}."
        else:
            obs = "Not done yet."
        if not self._done:
            self.turns.append(ConversationTurn("user", obs))
        info.update(success=success, context=self.context)
        return obs, reward, self._done, info
