"""Trajectories as training rows: each action a chat turn of its own, weighted by its reward.

An episode (`BaseAgent.run_episode`'s dict) becomes the conversation the policy sees at
inference time:

    system     the action instructions (`system_prompt`)
    user       the environment's first observation
    assistant  Action: identify_operation          <- trained, weight of its reward
    user       Result: <observation>
    assistant  Action: subtract_terms              <- trained, weight of its reward
    ...

Token ids come from `ChatTokens`, the same rendering the agent loop uses, so a row's ids
are the ids the engine sees when the trained policy plays the episode. Only the assistant
turns (each with its end-of-turn token) are trained; each token carries its action's
weight in the `advantages` column the learner reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from rayrl.agent.actions import format_action
from rayrl.agent.chat_tokens import ChatTokens
from rayrl.algorithms.rwr import reward_weights

logger = logging.getLogger(__name__)

RESULT_PREFIX = "Result: "


def system_prompt(actions: list[str]) -> str:
    """The instructions every transcript starts with."""
    names = ", ".join(actions) if actions else "(the environment lists them)"
    return (
        "Solve the problem by taking one action per turn. Reply with one line: "
        "`Action: <name>` or `Action: <name>(<arguments>)`. The result of each action comes "
        f"back as `Result: ...`. Actions: {names}."
    )


def action_names(trajectories: list[dict[str, Any]]) -> list[str]:
    """Every action name the trajectories use, in order of first use."""
    seen: dict[str, None] = {}
    for episode in trajectories:
        for step in episode.get("actions") or []:
            seen.setdefault(str(step["action"]), None)
    return list(seen)


def check_trajectory(episode: Any, index: int) -> list[dict[str, Any]]:
    """The steps of one trajectory, or a ValueError that names what is wrong with it."""
    if not isinstance(episode, dict):
        raise ValueError(
            f"trajectory {index}: expected a dict as run_episode returns, got {type(episode).__name__}"
        )
    steps = episode.get("actions")
    if not isinstance(steps, list):
        raise ValueError(f"trajectory {index}: 'actions' must be a list of steps, got {type(steps).__name__}")
    for k, step in enumerate(steps):
        if not isinstance(step, dict) or "action" not in step or "reward" not in step:
            raise ValueError(f"trajectory {index}, step {k}: needs 'action' and 'reward', got {step!r}")
        try:
            reward = float(step["reward"])
        except (TypeError, ValueError):
            raise ValueError(
                f"trajectory {index}, step {k}: reward {step['reward']!r} is not a number"
            ) from None
        if not np.isfinite(reward):
            raise ValueError(f"trajectory {index}, step {k}: reward {reward} is not finite")
    return steps


def first_message(episode: dict[str, Any]) -> str:
    """The first user message of an episode: its first observation, else its problem."""
    first = episode.get("observation")
    return str(first) if first not in (None, "") else str(episode.get("problem", ""))


@dataclass
class TrajectoryDataset:
    """Training rows of a set of trajectories (one row per trajectory) and what was dropped.

    `table` has the learner's columns: `input_ids`, `loss_mask`, `advantages` (each
    trained token's action weight), `rollout_logprobs` (zeros: no sampling policy).
    """

    table: pa.Table
    actions: list[str]
    system_prompt: str
    num_actions: int = 0
    reward_mean: float = 0.0
    dropped_too_long: int = 0
    dropped_empty: int = 0

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def num_tokens(self) -> int:
        return int(sum(len(ids) for ids in self.table.column("input_ids").to_pylist()))


def build_dataset(
    trajectories: list[dict[str, Any]],
    tokenizer: Any,
    max_length: int,
    temperature: float = 1.0,
    max_weight: float = 20.0,
    actions: list[str] | None = None,
) -> TrajectoryDataset:
    """Rows of `trajectories` with per-action reward weights (`rayrl.algorithms.rwr`).

    Rows longer than `max_length` tokens and trajectories without actions are dropped
    and counted (logged), never silently.
    """
    if not isinstance(trajectories, list | tuple):
        raise ValueError(f"trajectories must be a list of episodes, got {type(trajectories).__name__}")
    steps_of = [check_trajectory(ep, i) for i, ep in enumerate(trajectories)]
    names = list(actions) if actions else action_names(list(trajectories))
    prompt = system_prompt(names)
    chat = ChatTokens(tokenizer)
    eos = tokenizer.eos_token_id
    rows, rewards, dropped_long, dropped_empty = [], [], 0, 0
    for episode, steps in zip(trajectories, steps_of, strict=True):
        if not steps:
            dropped_empty += 1
            continue
        history = [{"role": "system", "content": prompt}, {"role": "user", "content": first_message(episode)}]
        ids = chat.prompt_ids(history)
        spans: list[tuple[int, int]] = []  # [start, end) of each action's trained tokens
        mask = [0] * len(ids)
        for k, step in enumerate(steps):
            reply = format_action(str(step["action"]), step.get("params"))
            reply_ids = chat.encode(reply) + ([eos] if eos is not None else [])
            spans.append((len(ids), len(ids) + len(reply_ids)))
            ids += reply_ids
            mask += [1] * len(reply_ids)
            if k < len(steps) - 1:
                following = [{"role": "user", "content": RESULT_PREFIX + str(step.get("observation", ""))}]
                more = chat.continuation_ids(history, following, ended_with_eos=eos is not None)
                ids += more
                mask += [0] * len(more)
                history = history + [{"role": "assistant", "content": reply}, *following]
        if len(ids) > max_length:
            dropped_long += 1
            continue
        rows.append((ids, mask, spans))
        rewards.append([float(s["reward"]) for s in steps])
    if dropped_long or dropped_empty:
        logger.warning(
            "prepare_training_data: dropped %d trajectories longer than max_length=%d tokens and %d without actions",
            dropped_long,
            max_length,
            dropped_empty,
        )
    flat = [r for per_episode in rewards for r in per_episode]
    weights = reward_weights(flat, temperature, max_weight) if flat else np.zeros(0)
    input_ids, loss_mask, advantages = [], [], []
    at = 0
    for (ids, mask, spans), per_episode in zip(rows, rewards, strict=True):
        adv = np.zeros(len(ids), dtype=np.float32)
        for (start, end), w in zip(spans, weights[at : at + len(per_episode)], strict=True):
            adv[start:end] = w
        at += len(per_episode)
        input_ids.append(ids)
        loss_mask.append(mask)
        advantages.append(adv.tolist())
    table = pa.table(
        {
            "input_ids": pa.array(input_ids, type=pa.list_(pa.int32())),
            "loss_mask": pa.array(loss_mask, type=pa.list_(pa.int8())),
            "advantages": pa.array(advantages, type=pa.list_(pa.float32())),
            "rollout_logprobs": pa.array(
                [[0.0] * len(ids) for ids in input_ids], type=pa.list_(pa.float32())
            ),
        }
    )
    return TrajectoryDataset(
        table=table,
        actions=names,
        system_prompt=prompt,
        num_actions=len(flat),
        reward_mean=float(np.mean(flat)) if flat else 0.0,
        dropped_too_long=dropped_long,
        dropped_empty=dropped_empty,
    )
