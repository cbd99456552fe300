"""Agent loop role: runs many multi-turn episodes concurrently against the rollout engines.

Each episode is a coroutine (AReaL's `collect_trajectory`): it renders the
conversation with the model's own chat template, asks an engine for the next
assistant turn, hands the decoded text to its environment, and appends the
environment's reply as a user turn. Every episode awaits the engine on its own, so
the engine batches whatever turns are pending (continuous batching) and an episode
that is slow in its environment never holds the others back.

Each episode's environment runs in its own Ray actor (`rayrl.actors.env_host`), so
a hung or crashing environment ends that episode and no other.

The token sequence keeps the exact ids the engine produced. Training never
re-tokenises model text: only environment text (feedback turns, chat scaffolding)
is tokenised, and it is masked out of the loss. The batch leaves this actor as one
pyarrow table in the object store; the driver only sees small per-episode stats.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from rayrl.actors.agent_drivers import AgentPlan, FunctionAgentDriver, QueueAgentDriver
from rayrl.actors.env_host import EnvironmentFailure, EnvironmentPool, new_environment
from rayrl.agent.async_agent import AgentPrompt
from rayrl.agent.chat_tokens import ChatTokens, load_tokenizer
from rayrl.config import ConfigError, EnvironmentConfig, InferenceConfig
from rayrl.envs import BaseEnvironment
from rayrl.envs.source import EnvironmentSource
from rayrl.logs import configure_logging

logger = logging.getLogger(__name__)
TOOL_KEYS = ("successful_tool_calls", "failed_tool_calls", "parse_errors")
NO_TOOLS_WARNING = (
    "the reward function reads episode_summary['tools'], but this run trains without tools, "
    "so every tool count is 0: pass tool_manager= (the MultiTurnManager holding the tools) "
    "to RayPPOTrainer"
)


@dataclass
class Episode:
    """One finished episode, token-aligned."""

    input_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    reward: float
    group: int
    num_turns: int
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    turn_rewards: list[float] = field(default_factory=list)
    truncated: bool = False
    lost_engine: int | None = None  # index of the engine that died serving this episode
    versions: list[int] = field(
        default_factory=list
    )  # per token: weight version that generated it, -1 if none

    @classmethod
    def failed(cls, group: int, error: str, turns: int = 0, lost_engine: int | None = None) -> Episode:
        """An episode with nothing to train on, and why (dropped and counted; with
        `lost_engine`, played again once that engine is replaced)."""
        return cls([], [], [], 0.0, group, turns, error=error, lost_engine=lost_engine)


@dataclass
class _Batch:
    """A batch in collection: its tasks, sampling settings and episodes so far.

    Episodes are played in units: one episode each, or one group each (a queue-driven
    agent plays a task's whole group). `results` maps a unit to its episodes.
    """

    tasks: list[Any]
    group_size: int
    temperature: float | None
    seed: int | None
    results: dict[int, list[Episode]]
    t0: float
    counts0: dict[str, int] = field(default_factory=dict)  # the agent's counters when it began

    @property
    def episodes(self) -> list[Episode]:
        return [e for k in sorted(self.results) for e in self.results[k]]


class EngineLost(RuntimeError):
    """Rollout engines died while serving episodes of a batch.

    The runner keeps the batch's finished episodes; after the engines are replaced,
    `EpisodeRunner.retry_lost` re-runs the episodes they were serving.

    Args:
        engines: indices of the dead engines.
        episodes: how many episodes they were serving.
        cause: what the first failure said.
    """

    def __init__(self, engines: list[int], episodes: int, cause: str = ""):
        super().__init__(f"rollout engine(s) {engines} died serving {episodes} episode(s): {cause}")
        self.engines, self.episodes, self.cause = engines, episodes, cause

    def __reduce__(self):
        return EngineLost, (self.engines, self.episodes, self.cause)


def engine_died(err: BaseException) -> bool:
    """Whether a failed engine call means the engine is gone: its actor died, or its vLLM
    engine core did (the actor lives on but can no longer generate)."""
    import ray

    if isinstance(err, ray.exceptions.RayActorError):
        return True
    cause = getattr(err, "cause", None)
    return type(cause).__name__ == "EngineDeadError" or type(err).__name__ == "EngineDeadError"


class EpisodeRunner:
    """Plain class; `rayrl.placement` wraps it as an async Ray actor.

    Args:
        model_path: folder with the tokenizer and chat template.
        env_config: the `environment` section (a fresh environment per episode).
        inference_config: the `inference` section (turn length, context length).
        engines: handles of the rollout actors; episodes are spread over them.
        reward_fn: optional "module:function" scoring each finished episode from its
            summary (total_reward, num_turns, tools, messages, final_response, task),
            replacing the environment's reward; or such a callable itself. A
            `RewardFunction` of type IMMEDIATE scores every assistant turn instead, and
            each score lands on that turn's tokens.
        env_source: where each episode's fresh environment comes from (default: the
            one `env_config.name` names).
        max_episodes: most episodes in flight at once (sizes the environment pool).
        reward_timeout_s: deadline of one `reward_fn` call. It runs off the event loop (a
            thread), so a slow reward holds only its own episode; past the deadline that
            episode scores 0, with the reason recorded and counted.
        env_scheduling: Ray scheduling strategy of the environment hosts (the trainer
            places them in the agent loop's bundle); None: anywhere.
        agent: the user's agent (`agent` section, resolved by `plan_agent`) playing the
            episodes instead of the built-in loop: a queue-driven agent or an OpenAI-client
            function (`rayrl.actors.agent_drivers`).
        group_size: `training.group_size`, for agents that take it.
    """

    def __init__(
        self,
        model_path: str,
        env_config: EnvironmentConfig,
        inference_config: InferenceConfig,
        engines: list,
        reward_fn: str | Callable[[dict], float] | None = None,
        env_source: EnvironmentSource | None = None,
        max_episodes: int = 1,
        reward_timeout_s: float = 60.0,
        env_scheduling: Any = None,
        agent: AgentPlan | None = None,
        group_size: int = 1,
    ):
        configure_logging()
        self.env_config = env_config
        self.inference = inference_config
        self.engines = engines
        self.tokenizer = load_tokenizer(model_path)
        self.env_source = env_source
        probe = self.new_environment()
        self.system_prompt = probe.get_prompt_prefix()
        self.demonstration = list(probe.get_demonstration())
        self.max_turns = probe.turn_limit()
        self._probe_answer = getattr(probe, "answer", None)
        self.chat = ChatTokens(self.tokenizer)
        self.reward_fn = load_episode_reward(reward_fn) if isinstance(reward_fn, str) else reward_fn
        self.reward_timeout_s = reward_timeout_s
        self.reward_timeouts = 0
        self.episodes_retried = 0
        self._held: _Batch | None = None  # a batch waiting for `retry_lost`
        self.warnings: list[str] = []
        self.envs = EnvironmentPool(
            env_config, env_source, env_config.num_actors or max_episodes, env_scheduling
        )
        self.samples_per_batch = 2  # episodes of each batch kept as text (samples.jsonl)
        self.driver = None
        if agent is not None and agent.kind == "queue":
            self.driver = QueueAgentDriver(self, agent, group_size)
        elif agent is not None:
            self.driver = FunctionAgentDriver(self, agent)

    async def ready(self) -> int:
        """Start the environment actors and wait for them; returns how many are alive.

        Optional: episodes start hosts on demand, this only moves the start-up earlier.
        """
        self.envs.start()
        await self.envs.wait_ready()
        return self.envs.alive

    def new_environment(self) -> BaseEnvironment:
        """A fresh environment for one episode."""
        return new_environment(self.env_config, self.env_source)

    # ---- chat rendering ----------------------------------------------------
    def prompt_ids(self, first_observation: str | list[dict]) -> tuple[list[int], list[dict]]:
        """Token ids of the opening prompt and the message list it came from. The first
        observation is the user turn, or the whole opening conversation (chat messages of
        a data row: the environment's system prompt goes first unless they have their own)."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        if isinstance(first_observation, list):
            own_system = any(m["role"] == "system" for m in first_observation)
            messages = [*([] if own_system else messages), *first_observation]
        else:
            messages += self.demonstration
            messages.append({"role": "user", "content": first_observation})
        return self.chat.prompt_ids(messages), messages

    def user_turn_ids(self, messages: list[dict], observation: str, ended_with_eos: bool) -> list[int]:
        """Ids that close the assistant turn just generated and open a user turn plus the
        next assistant header, as the chat template would render them."""
        return self.chat.continuation_ids(
            messages, [{"role": "user", "content": observation}], ended_with_eos
        )

    def turn_budget(self, prompt_tokens: int, asked: int | None = None) -> int:
        """Most tokens one turn may generate: `asked`, capped by `inference.max_tokens` and by
        the context left after the prompt (< 1: no room for a turn)."""
        inf = self.inference
        return min(asked or inf.max_tokens, inf.max_tokens, inf.max_model_len - prompt_tokens - 1)

    @property
    def per_group(self) -> bool:
        """Whether episodes are played a group (task) at a time: a queue-driven agent."""
        return self.driver is not None and self.driver.per_group

    async def agent_prompt(self, qid: str, task: Any) -> AgentPrompt:
        """The opening prompt of `task` for a queue-driven agent: the environment's first
        observation (from an environment host) as the conversation's first user turn."""
        env = await self.envs.acquire()
        try:
            first = await env.reset(task)
        finally:
            await self.envs.release(env)
        ids, messages = self.prompt_ids(first)
        return AgentPrompt(qid, task, messages, ids)

    def reference_answer(self, task: Any) -> Any:
        """The task's reference answer: the environment's `answer(task)` when it has one,
        else `task["answer"]`; None when neither exists."""
        if self._probe_answer is not None:
            try:
                return self._probe_answer(task)
            except Exception:  # noqa: BLE001 - fall back to the task's own field
                pass
        return task.get("answer") if isinstance(task, dict) else None

    # ---- episodes ----------------------------------------------------------------
    async def run_episode(
        self, task: Any, group: int, engine: int, temperature: float | None = None, seed: int | None = None
    ) -> Episode:
        """Play one episode of `task` on engine number `engine`; never raises for environment
        errors. With `seed`, turn t samples with seed `seed + t` (a reproducible episode).
        If the engine dies the episode comes back with `lost_engine` set."""
        env = await self.envs.acquire()
        try:
            return await self._play(env, task, group, engine, temperature, seed)
        finally:
            await self.envs.release(env)

    async def _play(
        self, env, task: Any, group: int, engine: int, temperature: float | None, seed: int | None
    ) -> Episode:
        try:
            first = await env.reset(task)
        except EnvironmentFailure as err:  # an environment bug ends its own episode only
            return Episode.failed(group, str(err))
        ids, messages = self.prompt_ids(first)
        mask = [0] * len(ids)
        logprobs = [0.0] * len(ids)
        versions = [-1] * len(ids)
        reward, info, error, turns, truncated = 0.0, {}, None, 0, False
        for _ in range(self.max_turns):
            budget = self.turn_budget(len(ids))
            if budget < 1:  # the episode ends here like one that ran out of turns
                truncated = True
                break
            turn_seed = None if seed is None else seed + turns
            try:
                gen = await self.engines[engine].generate.remote(ids, budget, temperature, seed=turn_seed)
            except Exception as err:
                if not engine_died(err):
                    raise
                return Episode.failed(group, repr(err)[:300], turns, lost_engine=engine)
            turns += 1
            ids += gen.token_ids
            mask += [1] * len(gen.token_ids)
            logprobs += gen.logprobs
            versions += [gen.weight_version] * len(gen.token_ids)
            text = self.tokenizer.decode(gen.token_ids, skip_special_tokens=True)
            history = messages
            messages = messages + [{"role": "assistant", "content": text}]
            try:
                observation, step_reward, done, info = await env.step(text)
            except EnvironmentFailure as err:
                error = str(err)
                break
            reward += float(step_reward)
            if done:
                break
            feedback = self.user_turn_ids(history, observation, gen.finish_reason == "stop")
            messages.append({"role": "user", "content": observation})
            ids += feedback
            mask += [0] * len(feedback)
            logprobs += [0.0] * len(feedback)
            versions += [-1] * len(feedback)
        episode = Episode(
            ids,
            mask,
            logprobs,
            reward,
            group,
            turns,
            dict(info),
            error,
            truncated=truncated,
            versions=versions,
        )
        if self.reward_fn is not None:
            await self._rescore(episode, task, messages)
        return episode

    async def _rescore(self, episode: Episode, task: Any, messages: list[dict]) -> None:
        """Apply the reward function to the episode summary (`total_reward`, `num_turns`,
        `tools`, `messages`, `final_response`, `task`, `info`), in place.

        A reward that raises scores 0 and records the error for this episode only.
        """
        from rayrl.rewards import RewardFunction, RewardType, as_transcript, ascore_turns

        info = episode.info
        has_tools = all(k in info for k in TOOL_KEYS)
        tools = {k: info.get(k, 0) for k in TOOL_KEYS}
        summary = {
            "total_reward": episode.reward,
            "num_turns": episode.num_turns,
            "tools": tools if has_tools else _ReadWatch(tools),
            "messages": messages,
            "final_response": next(
                (m["content"] for m in reversed(messages) if m["role"] == "assistant"), ""
            ),
            "task": task,
            "info": info,
        }
        fn = self.reward_fn
        try:
            if isinstance(fn, RewardFunction) and fn.reward_type is RewardType.IMMEDIATE:
                scores = await self._deadline(ascore_turns(fn, as_transcript(summary)))
                episode.turn_rewards = [float(r) for r in scores]
                episode.reward = 0.0
            elif isinstance(fn, RewardFunction):
                episode.reward = float((await self._deadline(fn.acompute(as_transcript(summary)))).score)
            else:
                value = await self._deadline(asyncio.to_thread(fn, summary))
                episode.reward = float(await self._deadline(value) if inspect.isawaitable(value) else value)
        except asyncio.TimeoutError:  # builtin TimeoutError only from Python 3.11
            self.reward_timeouts += 1
            episode.reward, episode.turn_rewards = 0.0, []
            episode.error = (
                f"reward_fn timed out after {self.reward_timeout_s:g}s (training.reward_timeout_s)"
            )
        except Exception as err:  # noqa: BLE001 - a reward bug scores 0 for this episode only
            episode.reward, episode.turn_rewards = 0.0, []
            episode.error = f"reward_fn failed: {type(err).__name__}: {err}"
        if not has_tools and summary["tools"].read and NO_TOOLS_WARNING not in self.warnings:
            logger.warning(NO_TOOLS_WARNING)
            self.warnings.append(NO_TOOLS_WARNING)

    async def _deadline(self, awaitable):
        return await asyncio.wait_for(awaitable, self.reward_timeout_s)

    async def collect(
        self, tasks: list[Any], group_size: int, temperature: float | None = None, seed: int | None = None
    ) -> tuple[pa.Table, dict]:
        """Run `group_size` episodes per task, all at once; with `seed`, episode j samples
        reproducibly (seeds derived from `seed` and j).

        Returns:
            (batch, stats): the columnar batch for the learner and small per-episode
            lists for the driver (rewards, groups, turns, success flags, timings).

        Raises:
            EngineLost: engines died; the batch waits for `retry_lost`.
        """
        counts = dict(getattr(self.driver, "counts", {}))
        batch = _Batch(tasks, group_size, temperature, seed, {}, time.perf_counter(), counts)
        await self._run_units(batch, range(len(tasks) if self.per_group else len(tasks) * group_size))
        return self._finish(batch)

    async def retry_lost(self, engines: list) -> tuple[pa.Table, dict]:
        """After `collect` raised `EngineLost`: re-run the episodes the dead engines were
        serving, on `engines` (the replacements in place), and return the whole batch."""
        self.engines = list(engines)
        batch = self._held
        lost = [k for k, eps in batch.results.items() if any(e.lost_engine is not None for e in eps)]
        await self._run_units(batch, lost)
        self.episodes_retried += sum(len(batch.results[k]) for k in lost)
        return self._finish(batch)

    async def _run_units(self, batch: _Batch, units) -> None:
        """Play `units` of `batch` concurrently (episode j, or group g for a queue-driven
        agent) on engines round robin, seeded from the batch's seed and the unit."""

        async def unit(k: int) -> list[Episode]:
            g = k if self.per_group else k // batch.group_size
            seed = None if batch.seed is None else (batch.seed * 10_007 + k * 64) % 2**31
            engine = k % len(self.engines)
            if self.driver is None:
                return [await self.run_episode(batch.tasks[g], g, engine, batch.temperature, seed)]
            return await self.driver.run_group(batch.tasks[g], g, engine, batch.temperature, seed)

        units = list(units)
        batch.results.update(zip(units, await asyncio.gather(*(unit(k) for k in units)), strict=True))

    def sample(self, episode: Episode) -> dict[str, Any]:
        """An episode as text for people: spans of tokens, trained (the model's) or not
        (prompt, chat scaffolding, observations), with its reward."""
        spans, start = [], 0
        mask = episode.loss_mask
        for end in range(1, len(mask) + 1):
            if end == len(mask) or mask[end] != mask[start]:
                text = self.tokenizer.decode(episode.input_ids[start:end], skip_special_tokens=False)
                spans.append({"text": text, "trained": bool(mask[start])})
                start = end
        reward = episode.reward + sum(episode.turn_rewards)
        return {"reward": reward, "group": episode.group, "turns": episode.num_turns, "spans": spans}

    def _finish(self, batch: _Batch) -> tuple[pa.Table, dict]:
        """The batch's table and stats, or `EngineLost` (the batch held for a retry)."""
        episodes = batch.episodes
        lost = [e for e in episodes if e.lost_engine is not None]
        if lost:
            self._held = batch
            raise EngineLost(sorted({e.lost_engine for e in lost}), len(lost), lost[0].error or "")
        self._held = None
        seconds = time.perf_counter() - batch.t0
        kept = [e for e in episodes if e.input_ids and sum(e.loss_mask) > 0]
        table = pa.table(
            {
                "input_ids": pa.array([e.input_ids for e in kept], type=pa.list_(pa.int32())),
                "loss_mask": pa.array([e.loss_mask for e in kept], type=pa.list_(pa.int8())),
                "rollout_logprobs": pa.array([e.logprobs for e in kept], type=pa.list_(pa.float32())),
                "reward": pa.array([e.reward for e in kept], type=pa.float64()),
                # one entry per assistant turn (IMMEDIATE rewards), empty when none
                "turn_rewards": pa.array([e.turn_rewards for e in kept], type=pa.list_(pa.float64())),
                "group": pa.array([e.group for e in kept], type=pa.int64()),
                "num_turns": pa.array([e.num_turns for e in kept], type=pa.int32()),
                # the weight version that generated each token (-1: prompt and observations)
                "weight_version": pa.array([e.versions for e in kept], type=pa.list_(pa.int32())),
            }
        )
        generated = Counter(v for e in kept for v, m in zip(e.versions, e.loss_mask, strict=True) if m)
        stats = {
            "rewards": [e.reward + sum(e.turn_rewards) for e in kept],
            "groups": [e.group for e in kept],
            "num_turns": [e.num_turns for e in kept],
            "first_try": [bool(e.info.get("first_try", False)) for e in kept],
            "success": [bool(e.info.get("correct", e.info.get("success", e.reward > 0))) for e in kept],
            "response_tokens": int(sum(sum(e.loss_mask) for e in kept)),
            "total_tokens": int(sum(len(e.input_ids) for e in kept)),
            "info": _numeric_info(kept),
            "errors": [e.error for e in episodes if e.error],
            "dropped": len(episodes) - len(kept),
            "truncated": sum(e.truncated for e in kept),
            "warnings": list(self.warnings),
            "env_restarts": self.envs.restarts,
            "reward_timeouts": self.reward_timeouts,
            "episodes_retried": self.episodes_retried,
            "seconds": seconds,
            "token_versions": dict(generated),  # weight version -> trainable tokens it generated
            "samples": [self.sample(e) for e in kept[: self.samples_per_batch]],
            # the user's agent's counters over this batch (one batch is collected at a time)
            "agent": {k: v - batch.counts0.get(k, 0) for k, v in getattr(self.driver, "counts", {}).items()},
        }
        return table, stats


class _ReadWatch(dict):
    """The `tools` entry of a summary in a run without tools: notes whether the reward reads it."""

    read = False

    def __getitem__(self, key):
        self.read = True
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read = True
        return super().get(key, default)


def _numeric_info(episodes: list[Episode]) -> dict[str, list[float]]:
    """Fields of the last step info that are numbers (or flags) in every episode, for per-step means."""
    keys = set.intersection(*(set(e.info) for e in episodes)) if episodes else set()
    numeric = [k for k in sorted(keys) if all(isinstance(e.info[k], int | float) for e in episodes)]
    return {k: [float(e.info[k]) for e in episodes] for k in numeric}


def load_episode_reward(spec: str) -> Callable[[dict], float]:
    """A callable scoring an episode summary dict, from "module:function" (or a RewardFunction class)."""
    from rayrl.rewards import RewardFunction, load_reward

    obj = _import(spec)
    if isinstance(obj, RewardFunction) or (isinstance(obj, type) and issubclass(obj, RewardFunction)):
        return load_reward(spec)  # RewardFunction.__call__ takes a summary dict
    if not callable(obj):
        raise ConfigError(f"reward function {spec!r} is not callable")
    return obj


def _import(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"reward function {spec!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"reward function {spec!r} cannot be imported: {err}") from None


def sample_tasks(
    env_config: EnvironmentConfig,
    n: int,
    rng: random.Random,
    evaluation: bool = False,
    env_source: EnvironmentSource | None = None,
) -> list[Any]:
    """Draw `n` tasks from the configured environment (held-out ones when `evaluation`)."""
    env = new_environment(env_config, env_source)
    draw = env.sample_eval_task if evaluation else env.sample_task
    return [draw(rng) for _ in range(n)]
