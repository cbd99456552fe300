"""Action-based episodes: an agent picks one named action (with optional arguments) per
step from the environment's valid actions, and the environment answers with an
observation and that action's own reward.

This is the interface of offline fine-tuning on collected trajectories
(`rayrl.offline.AgenticTrainer`): `BaseAgent.run_episode(env, problem)` plays a problem
with any policy you write (rules, a search, a bigger model) and returns the trajectory,
one entry per action with its reward. As text, an action is one line:

    Action: subtract_terms
    Action: state_answer(x = 3)

`format_action` writes that form and `parse_action` reads it back from a model's reply.
Environments take an action either as `step(action, params)` (the seed's action
environments) or as the text line `step("Action: name(params)")` (rayrl's text
environments); `take_action` calls whichever the environment has.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from abc import ABC, abstractmethod
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

_ACTION_LINE = re.compile(r"^\s*Action:\s*([A-Za-z_][\w-]*)\s*(?:\((.*)\))?\s*$", re.S)
_LOOSE = re.compile(r"Action:\s*([A-Za-z_][\w-]*)\s*(?:\(([^)\n]*)\)?|:?([^\n]*))")


class ActionResult(NamedTuple):
    """What an environment's `step` returns: a 4-tuple, so `obs, reward, done, info =
    env.step(...)` unpacks it like any rayrl step result."""

    observation: str
    reward: float
    done: bool
    info: dict[str, Any] | None = None


def format_action(action: str, params: str | None = None) -> str:
    """`Action: name` or `Action: name(params)`."""
    params = "" if params is None else str(params).strip()
    return f"Action: {action}({params})" if params else f"Action: {action}"


def parse_action(text: str, valid_actions: list[str] | None = None) -> tuple[str | None, str | None, bool]:
    """Read an action from a model's reply.

    Returns:
        (action name or None, its arguments or None, well_formed). Well formed: the whole
        reply is one `Action: name` / `Action: name(args)` line and, when `valid_actions`
        is given, the name is one of them. A reply with more around it still yields the
        first `Action:` it contains, or failing that the first valid action's name found
        in the text (with what follows it as arguments); well_formed is then False.
    """
    text = text or ""
    strict = _ACTION_LINE.match(text)
    if strict and "\n" not in text.strip():
        name, params = strict.group(1), strict.group(2)
        ok = valid_actions is None or name in valid_actions
        return name, (params.strip() if params is not None and params.strip() else None), ok
    loose = _LOOSE.search(text)
    if loose:
        params = loose.group(2) if loose.group(2) is not None else loose.group(3)
        return loose.group(1), (params.strip() or None) if params else None, False
    for name in sorted(valid_actions or [], key=len, reverse=True):
        at = text.find(name)
        if at >= 0:
            rest = text[at + len(name) :].strip(" :()\n") or None
            return name, rest, False
    return None, None, False


def _takes_params(env: Any) -> bool:
    """Whether `env.step` accepts (action, params) rather than one text argument."""
    try:
        sig = inspect.signature(env.step)
    except (TypeError, ValueError):
        return False
    kinds = [p.kind for p in sig.parameters.values()]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(k in positional for k in kinds) >= 2


def take_action(env: Any, action: str, params: str | None = None) -> ActionResult:
    """Apply one action: `env.step(action, params)` when the environment takes both,
    else `env.step("Action: name(params)")`. The result as an `ActionResult`."""
    if _takes_params(env):
        result = env.step(action, params)
    else:
        result = env.step(format_action(action, params))
    if not isinstance(result, tuple | list) or len(result) not in (3, 4):
        raise TypeError(
            f"{type(env).__name__}.step must return (observation, reward, done, info), got {result!r}"
        )
    observation, reward, done, *rest = result
    try:
        reward = float(reward)
    except (TypeError, ValueError):
        raise TypeError(f"{type(env).__name__}.step returned reward {reward!r}, not a number") from None
    info = rest[0] if rest else None
    return ActionResult(str(observation), reward, bool(done), dict(info or {}))


def valid_actions_of(env: Any) -> list[str]:
    """The environment's valid actions now (`get_valid_actions()`, or `valid_actions()`);
    empty when it names none."""
    for method in ("get_valid_actions", "valid_actions"):
        fn = getattr(env, method, None)
        names = fn() if callable(fn) else None
        if names:
            return [str(a) for a in names]
    return []


def episode_success(steps: list[dict[str, Any]]) -> bool:
    """An episode succeeded when its last step's info says so (`success` or `correct`)."""
    if not steps:
        return False
    info = steps[-1].get("info") or {}
    return bool(info.get("success", info.get("correct", False)))


class BaseAgent(ABC):
    """An agent that plays action-based episodes; subclass it and write `select_action`.

    Args:
        max_steps: most actions per episode (the environment may end it sooner).
    """

    def __init__(self, max_steps: int = 10):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps

    @abstractmethod
    def select_action(self, state: dict[str, Any], valid_actions: list[str]) -> tuple[str, str | None]:
        """The next action and its arguments (None or "" for none).

        Args:
            state: `problem`, `observation` (the latest), `history` (the steps so far, each
                with `action`, `params`, `reward`, `observation`), `step` (their count).
            valid_actions: what the environment accepts now (empty if it does not say).
        """

    async def run_episode(self, env: Any, problem: Any) -> dict[str, Any]:
        """Play `problem` in `env` until it is done or `max_steps` actions were taken.

        Returns:
            the trajectory: `problem`, `observation` (the first), `actions` (one dict per
            step: `action`, `params`, `reward`, `observation`, `done`, `info`),
            `total_reward`, `success` (the last step's info `success`/`correct`), `steps`,
            `done`, and `error` when the agent or the environment raised (the episode
            stops there and keeps what it had).
        """
        first = env.reset(problem) if problem is not None else env.reset()
        if inspect.isawaitable(first):
            first = await first
        first = str(problem) if first is None else str(first)
        steps: list[dict[str, Any]] = []
        state: dict[str, Any] = {"problem": problem, "observation": first, "history": steps, "step": 0}
        error, done = None, False
        for _ in range(self.max_steps):
            try:
                choice = self.select_action(state, valid_actions_of(env))
                if inspect.isawaitable(choice):
                    choice = await choice
                action, params = choice if isinstance(choice, tuple) else (choice, None)
                result = await asyncio.to_thread(take_action, env, str(action), params)
            except Exception as exc:  # noqa: BLE001 - one broken episode must not end the collection
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("episode on %r stopped after %d steps: %s", problem, len(steps), error)
                break
            steps.append(
                {
                    "action": str(action),
                    "params": None if params in (None, "") else str(params),
                    "reward": result.reward,
                    "observation": result.observation,
                    "done": result.done,
                    "info": result.info,
                }
            )
            state.update(observation=result.observation, step=len(steps))
            if result.done:
                done = True
                break
        episode = {
            "problem": problem,
            "observation": first,
            "actions": steps,
            "total_reward": float(sum(s["reward"] for s in steps)),
            "success": episode_success(steps) and error is None,
            "steps": len(steps),
            "done": done,
        }
        if error is not None:
            episode["error"] = error
        return episode


__all__ = [
    "ActionResult",
    "BaseAgent",
    "episode_success",
    "format_action",
    "parse_action",
    "take_action",
    "valid_actions_of",
]
