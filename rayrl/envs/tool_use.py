"""Train on tool use: an environment whose actions are tool calls.

`ToolUseEnvironment` turns (inner environment, tools, action parser) into a plain
`BaseEnvironment`, so the agent loop trains on it like on any other: each model
reply goes through a `MultiTurnManager`, the tool output or the parse/tool error
is the next user turn, and the reward is what the tools' actions earned in the
inner environment. The tool list and the reply format go into the system prompt.
The step info carries the episode's tool statistics (valid-call rate, successful
and failed calls, parse errors), which the trainer logs per step.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from typing import Any

from rayrl.agent.multi_turn import MultiTurnManager
from rayrl.agent.parsers import ActionParser, FunctionCallingParser, JSONActionParser, ReActActionParser
from rayrl.agent.tools import Tool, ToolRegistry
from rayrl.config import ConfigError, EnvironmentConfig
from rayrl.envs.base import BaseEnvironment, StepResult

_MARKERS = {"json": r"\{", "react": r"(?i)\baction\s*:", "function_calling": r"<tool_call>"}

PARSERS: dict[str, type[ActionParser]] = {
    "json": JSONActionParser,
    "react": ReActActionParser,
    "function_calling": FunctionCallingParser,
}


class ToolUseEnvironment(BaseEnvironment):
    """A `BaseEnvironment` whose actions are tool calls on an inner environment.

    Args:
        config: the `environment` section; `max_turns` bounds the replies.
        inner: the environment the tools act on.
        make_tools: builds the tools for `inner` (they usually hold a reference to it).
        parser: "json", "react" or "function_calling".
        valid_call_bonus: reward added for each reply that is a valid, successful tool call.
        format_bonus: reward added for a reply that attempts the format (holds the parser's
            marker: a JSON object, "Action:", or "<tool_call>") without being a valid call.
            Small models rarely produce a valid call at first; these two shape the reward
            so that GRPO sees a spread before the task reward does.
        example: an example reply appended to the system prompt.
        answers_to_environment: a reply without a tool call is an answer for `inner`
            (see `MultiTurnManager`); False: every reply must be a call.
    """

    def __init__(
        self,
        config: EnvironmentConfig,
        inner: BaseEnvironment,
        make_tools: Callable[[BaseEnvironment], list[Tool]],
        parser: str = "json",
        valid_call_bonus: float = 0.0,
        format_bonus: float = 0.0,
        example: str | None = None,
        answers_to_environment: bool = False,
    ):
        if parser not in PARSERS:
            raise ConfigError(f"environment.params.parser={parser!r}: choose one of {sorted(PARSERS)}")
        registry = ToolRegistry(make_tools(inner))
        manager = MultiTurnManager(
            registry, PARSERS[parser](registry), inner, config.max_turns, answers_to_environment
        )
        self._bind(config, manager, valid_call_bonus, format_bonus, example)

    @classmethod
    def from_manager(
        cls,
        config: EnvironmentConfig,
        manager: MultiTurnManager,
        valid_call_bonus: float = 0.0,
        format_bonus: float = 0.0,
        example: str | None = None,
    ) -> ToolUseEnvironment:
        """An environment that runs every reply through `manager` (its parser, tools and
        environment, its own `max_turns`), as `MultiTurnInferenceEngine.run_episode` does.

        Args:
            config: the `environment` section.
            manager: the episode's own manager; its tools act on `manager.environment`.
            valid_call_bonus: as for the constructor.
            format_bonus: as for the constructor.
            example: as for the constructor.
        """
        env = cls.__new__(cls)
        env._bind(config, manager, valid_call_bonus, format_bonus, example)
        return env

    def _bind(self, config, manager, valid_call_bonus, format_bonus, example) -> None:
        BaseEnvironment.__init__(self, config)
        self.inner = manager.environment
        self.registry = manager.tool_registry
        self.manager = manager
        kind = next((k for k, p in PARSERS.items() if isinstance(manager.action_parser, p)), None)
        # A parser of the user's own has no known marker: no format bonus for it.
        self.marker = re.compile(_MARKERS[kind]) if kind else None
        self.valid_call_bonus = valid_call_bonus
        self.format_bonus = format_bonus
        self.example = example

    def turn_limit(self) -> int:
        return self.manager.max_turns

    def sample_task(self, rng: random.Random) -> Any:
        return self.inner.sample_task(rng) if self.inner is not None else None

    def sample_eval_task(self, rng: random.Random) -> Any:
        return self.inner.sample_eval_task(rng) if self.inner is not None else None

    def get_prompt_prefix(self) -> str:
        inner = self.inner.get_prompt_prefix() if self.inner is not None else ""
        base = self.config.system_prompt or inner
        example = f"\nExample reply: {self.example}" if self.example else ""
        return f"{base}\n\n{self.manager.instructions()}{example}".strip()

    def get_demonstration(self) -> list[dict[str, str]]:
        return self.inner.get_demonstration() if self.inner is not None else []

    def play_demonstration(self, task: Any, replies: list[str]) -> list[dict[str, str]]:
        """A worked example as chat messages: `replies` played on a copy of this environment
        for `task`, with the real observations (tool outputs included) between them."""
        env = copy.deepcopy(self)
        messages = [{"role": "user", "content": env.reset(task)}]
        for i, reply in enumerate(replies):
            observation, _, done, _ = env.step(reply)
            messages.append({"role": "assistant", "content": reply})
            if done:
                if i != len(replies) - 1:
                    raise ValueError(f"the demonstration ended after reply {i + 1} of {len(replies)}")
                return messages
            messages.append({"role": "user", "content": observation})
        raise ValueError("the demonstration's replies ended before its episode did")

    def reset(self, task: Any = None) -> str:
        self._answer_info: dict[str, Any] = {}
        self.step_count = 0
        self.episode_reward = 0.0
        self._done = False
        return self.manager.reset(task)

    def step(self, action: str) -> StepResult:
        if self._done:
            raise RuntimeError("step() called after the episode ended")
        turn = self.manager.step(action)
        valid = turn.tool_call is not None and turn.tool_call.success
        reward = turn.reward
        if valid:
            reward += self.valid_call_bonus
        elif self.marker is not None and self.marker.search(action):
            reward += self.format_bonus
        self.step_count += 1
        self.episode_reward += reward
        self._done = turn.done
        tools = self.manager.episode_summary()["tools"]
        if turn.answer:
            self._answer_info = turn.info
        info = {
            **self._answer_info,  # the environment's own step info of the latest answer
            "valid_call": valid,
            "valid_call_rate": tools["valid_call_rate"],
            "successful_tool_calls": tools["successful_tool_calls"],
            "failed_tool_calls": tools["failed_tool_calls"],
            "parse_errors": tools["parse_errors"],
        }
        return turn.feedback, reward, turn.done, info
