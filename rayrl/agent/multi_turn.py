"""Multi-turn tool use: parse a reply, run the tool, feed the result back, keep score.

`MultiTurnManager` is the bookkeeping of one episode: every model reply goes
through the action parser; a valid call runs through the tool registry (which
never raises); the tool's output, or the parse / tool error, becomes the next
observation the model sees. Rewards come from the environment the tools act on:
a turn's reward is how much the environment's `episode_reward` moved during it.
The summary has the keys reward functions read (`num_turns`, `total_reward`,
`tools.successful_tool_calls`, `tools.failed_tool_calls`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rayrl.agent.parsers import ActionParser
from rayrl.agent.tools import ToolRegistry

if TYPE_CHECKING:  # the environments package imports this module (tool-use envs)
    from rayrl.envs.base import BaseEnvironment

logger = logging.getLogger(__name__)


@dataclass
class ExecutedToolCall:
    """A parsed call after it ran.

    Args:
        name: tool name.
        arguments: validated arguments it ran with.
        success: whether the tool returned normally.
        result: its output, or the error message the model sees.
        raw: the part of the reply the call was read from.
    """

    name: str
    arguments: dict[str, Any]
    success: bool
    result: str
    raw: str


@dataclass
class Turn:
    """One model reply and what came of it.

    Args:
        index: 0-based turn number.
        observation: what the model saw before replying.
        model_output: the reply.
        tool_call: the executed call, or None when the reply held no valid call.
        parse_error: why no call was found (None when one was).
        feedback: what the model sees next (tool output or error).
        reward: change of the environment's episode reward during this turn.
        done: whether the episode ended with this turn.
        answer: the reply held no tool call and went to the environment as an answer
            (managers built with `answers_to_environment=True`).
        info: the environment's step info for an answer.
    """

    index: int
    observation: str | None
    model_output: str
    tool_call: ExecutedToolCall | None
    parse_error: str | None
    feedback: str
    reward: float
    done: bool
    answer: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class MultiTurnManager:
    """Runs the tool side of a multi-turn episode.

    Args:
        tool_registry: the tools the model may call.
        action_parser: turns replies into tool calls (JSON, ReAct, function calling).
        environment: what the tools act on; its `episode_reward` and `done` drive
            rewards and termination (None: tools only, reward 0).
        max_turns: the episode ends after this many replies.
        answers_to_environment: a reply with no tool call is the agent's answer and goes
            to `environment.step` (its observation is the next turn); False: every reply
            must be a tool call, and one without is a parse error shown to the model.
    """

    def __init__(
        self,
        tool_registry: ToolRegistry,
        action_parser: ActionParser,
        environment: BaseEnvironment | None = None,
        max_turns: int = 10,
        answers_to_environment: bool = False,
    ):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.tool_registry = tool_registry
        self.action_parser = action_parser
        self.environment = environment
        self.max_turns = max_turns
        self.answers_to_environment = answers_to_environment
        self.turns: list[Turn] = []

    def reset(self, task: Any = None) -> str:
        """Start a new episode; returns the environment's first observation ("" without one)."""
        self.turns = []
        return self.environment.reset_for(task) if self.environment is not None else ""

    def instructions(self) -> str:
        """Text for the system prompt: the tools and the reply format the parser reads."""
        return self.action_parser.format_instructions()

    @property
    def done(self) -> bool:
        """Whether the episode is over (environment done, or turn limit reached)."""
        if self.turns and self.turns[-1].done:
            return True
        return self.environment is not None and self.environment.done

    def step(self, model_output: str, observation: str | None = None) -> Turn:
        """Handle one reply: parse, execute, and record the turn.

        Args:
            model_output: the model's reply.
            observation: what the model saw before it (kept in the record).
        """
        before = self._begin_turn()
        parsed = self.action_parser.parse(model_output)
        if self._is_answer(parsed):
            return self._record_answer(observation, model_output, self.environment.step(model_output))
        outcome = (
            self.tool_registry.execute_tool(parsed.tool_call.name, **parsed.tool_call.arguments)
            if parsed.ok
            else None
        )
        return self._record(observation, model_output, parsed, outcome, before)

    async def astep(self, model_output: str, observation: str | None = None) -> Turn:
        """`step` for async callers: the tool runs without blocking the event loop."""
        before = self._begin_turn()
        parsed = self.action_parser.parse(model_output)
        if self._is_answer(parsed):
            result = await self.environment.astep(model_output)
            return self._record_answer(observation, model_output, result)
        outcome = None
        if parsed.ok:
            outcome = await self.tool_registry.aexecute_tool(
                parsed.tool_call.name, parsed.tool_call.arguments
            )
        return self._record(observation, model_output, parsed, outcome, before)

    def _is_answer(self, parsed) -> bool:
        return self.answers_to_environment and self.environment is not None and not parsed.ok

    def _record_answer(self, observation, model_output, result) -> Turn:
        feedback, reward, done, info = result
        index = len(self.turns)
        logger.debug("turn %d: answer to the environment, reward %s", index, reward)
        turn = Turn(
            index,
            observation,
            model_output,
            None,
            None,
            str(feedback),
            float(reward),
            bool(done) or index + 1 >= self.max_turns,
            answer=True,
            info=dict(info or {}),
        )
        self.turns.append(turn)
        return turn

    def _begin_turn(self) -> float:
        if self.done:
            raise RuntimeError("the episode is over; call reset() first")
        return self._episode_reward()

    def _episode_reward(self) -> float:
        return float(self.environment.episode_reward) if self.environment is not None else 0.0

    def _record(self, observation, model_output, parsed, outcome, before) -> Turn:
        call = None
        if outcome is not None:
            tc = parsed.tool_call
            call = ExecutedToolCall(tc.name, tc.arguments, outcome[0], outcome[1], tc.raw)
            feedback = outcome[1]
        else:
            feedback = parsed.error or "No tool call found."
        reward = self._episode_reward() - before
        index = len(self.turns)
        if call is None:
            logger.debug("turn %d: no tool call (%s) in %r", index, parsed.error, model_output[:200])
        else:
            logger.debug(
                "turn %d: %s(%s) -> %s: %s",
                index,
                call.name,
                call.arguments,
                "ok" if call.success else "failed",
                call.result[:200],
            )
        env_done = self.environment is not None and self.environment.done
        turn = Turn(
            index=index,
            observation=observation,
            model_output=model_output,
            tool_call=call,
            parse_error=None if call is not None else parsed.error,
            feedback=feedback,
            reward=reward,
            done=env_done or index + 1 >= self.max_turns,
        )
        self.turns.append(turn)
        return turn

    def episode_summary(self) -> dict[str, Any]:
        """Turns, reward and tool statistics of the episode so far."""
        calls = [t.tool_call for t in self.turns if t.tool_call is not None]
        successful = sum(c.success for c in calls)
        return {
            "num_turns": len(self.turns),
            "total_reward": sum(t.reward for t in self.turns),
            "done": self.done,
            "tools": {
                "successful_tool_calls": successful,
                "failed_tool_calls": len(calls) - successful,
                "parse_errors": sum(t.tool_call is None and not t.answer for t in self.turns),
                "calls_by_tool": dict(Counter(c.name for c in calls)),
                "valid_call_rate": successful / len(self.turns) if self.turns else 0.0,
            },
            "turns": [asdict(t) for t in self.turns],
        }
