"""`AgenticTrainer`: LoRA fine-tuning on collected action trajectories, weighted per action
by reward, on rayrl's own learner and rollout actors.

    trainer = AgenticTrainer("SmolLM2-135M-Instruct")
    model, tokenizer, device = trainer.setup_model()      # learner (peft LoRA) + a vLLM engine
    dataset = trainer.prepare_training_data(trajectories)  # BaseAgent.run_episode dicts
    losses = await trainer.train(dataset)                  # one loss per optimizer step
    results = trainer.test_inference(problems, env)         # the policy plays them

The learner is the same `ActorLearner` PPO runs on, with `training.policy_loss: rwr`
(`rayrl.algorithms.rwr`): each batch row is a trajectory and each of its actions' tokens
carries that action's weight. After `train` the merged weights are broadcast into the
engine, so `test_inference` (and `model.generate`) use the trained policy.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rayrl.agent.actions import parse_action, take_action, valid_actions_of
from rayrl.agent.chat_tokens import ChatTokens, load_tokenizer
from rayrl.config import ConfigError, ConfigStore
from rayrl.offline.transcripts import (
    RESULT_PREFIX,
    TrajectoryDataset,
    build_dataset,
    system_prompt,
)

logger = logging.getLogger(__name__)


class LoraSettings(BaseModel):
    """The adapters (seed 003's `lora_config` keys)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    rank: int = Field(8, ge=1)
    """Adapter rank: fewer trainable parameters when lower."""
    alpha: float = Field(16.0, gt=0.0)
    """Scale numerator (scale = alpha / rank)."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout on the adapters' input while training."""
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    """Module names that get adapters."""


class OfflineSettings(BaseModel):
    """The training loop (seed 003's `training_config` keys, plus the weighting)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    batch_size: int = Field(1, ge=1)
    """Trajectories per optimizer step."""
    learning_rate: float = Field(1e-4, gt=0.0)
    """AdamW learning rate of the adapters."""
    epochs: int = Field(3, ge=1)
    """Passes over the trajectories."""
    max_length: int = Field(512, ge=16)
    """Longest trajectory in tokens; longer ones are dropped and counted."""
    weight_temperature: float = Field(1.0, gt=0.0)
    """Temperature of the per-action reward weights (`reward_weights`)."""
    max_weight: float = Field(20.0, gt=0.0)
    """Cap of one action's weight before scaling."""
    max_actions: int = Field(8, ge=1)
    """Most actions per problem in `test_inference`."""
    max_new_tokens: int = Field(48, ge=1)
    """Most tokens of one action in `test_inference`."""
    seed: int = 0
    """Shuffling and sampling seed."""


def _settings(cls: type[BaseModel], given: dict | BaseModel | None, what: str) -> Any:
    if isinstance(given, cls):
        return given
    try:
        return cls.model_validate(dict(given or {}))
    except Exception as err:  # pydantic's message names the key
        raise ConfigError(f"{what}: {err}") from None


class RemotePolicy:
    """What `setup_model` hands back as the model: the policy behind the engine.

    `generate(prompt)` answers one user message with the current weights (the trained
    ones after `train`); `trainable_parameters` / `total_parameters` are the learner's.
    """

    def __init__(self, trainer: AgenticTrainer, counts: dict[str, int]):
        self._trainer = trainer
        self.trainable_parameters = int(counts["trainable"])
        self.total_parameters = int(counts["total"])

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / max(self.total_parameters, 1)

    def generate(self, prompt: str, max_tokens: int = 256, temperature: float = 0.0) -> str:
        import ray

        ids = self._trainer.chat.prompt_ids([{"role": "user", "content": str(prompt)}])
        engine = self._trainer.ppo.engines[0]
        out = ray.get(engine.generate.remote(ids, max_tokens, temperature))
        return self._trainer.tokenizer.decode(out.token_ids, skip_special_tokens=True)


@dataclass
class _Play:
    """One problem being played by the policy in `test_inference`."""

    problem: Any
    env: Any
    ids: list[int]
    history: list[dict[str, str]]
    turns: list[dict[str, Any]] = field(default_factory=list)
    total_reward: float = 0.0
    done: bool = False
    completed: bool = False
    success: bool = False
    error: str | None = None


class AgenticTrainer:
    """Reward-weighted LoRA fine-tuning of a model on action trajectories.

    Args:
        model_name: a model rayrl can load offline (default SmolLM2-135M-Instruct), or a
            local Hugging Face folder.
        lora_config: `LoraSettings` or its keys (rank, alpha, dropout, target_modules).
        training_config: `OfflineSettings` or its keys (batch_size, learning_rate, epochs,
            max_length, ...).
        env: the environment `test_inference` plays problems in when it is given none.
        actions: the action names the instructions list; default those of the training data.
        run_dir: where the run directory (config, metrics.jsonl, TensorBoard) goes.
        overrides: dotted config overrides for the underlying actors
            (`inference.kv_cache_gb=2`, `ray.address=...`).
    """

    def __init__(
        self,
        model_name: str = "SmolLM2-135M-Instruct",
        lora_config: dict | LoraSettings | None = None,
        training_config: dict | OfflineSettings | None = None,
        env: Any = None,
        actions: list[str] | None = None,
        run_dir: str | Path = "runs",
        overrides: list[str] | None = None,
    ):
        self.model_name = model_name
        self.lora = _settings(LoraSettings, lora_config, "lora_config")
        self.settings = _settings(OfflineSettings, training_config, "training_config")
        self.env = env
        self.actions = list(actions) if actions else None
        self.config = self._config(str(run_dir), overrides)
        self.ppo = None  # the RayPPOTrainer whose learner and engine this uses (`setup_model`)
        self.tokenizer = None
        self.model: RemotePolicy | None = None
        self.history: list[dict[str, Any]] = []
        self._steps = 0

    def _config(self, run_dir: str, overrides: list[str] | None) -> ConfigStore:
        s, lora = self.settings, self.lora
        return ConfigStore.from_dict(
            {
                "model": {"model_name": self.model_name},
                "inference": {
                    "max_tokens": s.max_new_tokens,
                    "temperature": 0.0,
                    "max_model_len": max(1024, s.max_length + s.max_new_tokens),
                    "kv_cache_gb": 1,
                    "seed": s.seed,
                },
                "training": {
                    "policy_loss": "rwr",
                    "kl_coef": 0.0,  # no reference role
                    "learning_rate": s.learning_rate,
                    "seed": s.seed,
                    "rollout_correction": "none",
                },
                "learner": {
                    "lora_rank": lora.rank,
                    "lora_alpha": lora.alpha,
                    "lora_dropout": lora.dropout,
                    "lora_target_modules": lora.target_modules,
                    "micro_batch_size": min(s.batch_size, 8),
                },
                "environment": {"isolation": "inline"},
                "checkpoint": {"run_dir": run_dir},
                "ray": {"include_dashboard": False},
            },
            overrides,
        )

    # ---- model -------------------------------------------------------------------
    def setup_model(self) -> tuple[RemotePolicy, Any, str]:
        """Start the learner (the model with LoRA adapters by peft) and one vLLM engine.

        Returns:
            (the policy: `RemotePolicy`, the tokenizer, the device the roles run on).
        """
        from rayrl.placement import Role
        from rayrl.trainer import RayPPOTrainer

        if self.ppo is None:
            self.ppo = RayPPOTrainer(self.config)
            try:
                self.ppo.setup(only=[Role.ROLLOUT, Role.LEARNER])
            except BaseException:
                self.ppo.cleanup()
                self.ppo = None
                raise
            import ray

            counts = ray.get(self.ppo.learner.parameter_counts.remote())
            self.tokenizer = load_tokenizer(self.ppo.model_path)
            self.model = RemotePolicy(self, counts)
            logger.info(
                "LoRA: %d of %d parameters trainable (%.2f%%)",
                self.model.trainable_parameters,
                self.model.total_parameters,
                100 * self.model.trainable_share,
            )
        return self.model, self.tokenizer, "cuda" if self.ppo.use_gpu else "cpu"

    @cached_property
    def chat(self) -> ChatTokens:
        """Chat-template rendering of the model's tokenizer (after `setup_model`)."""
        return ChatTokens(self.tokenizer)

    def _require_model(self) -> None:
        if self.ppo is None:
            raise RuntimeError("call setup_model() first")

    # ---- data and training --------------------------------------------------------
    def prepare_training_data(self, trajectories: list[dict[str, Any]]) -> TrajectoryDataset:
        """Training rows of `trajectories` (`BaseAgent.run_episode` dicts): each action a
        chat turn, its tokens weighted by its own reward."""
        self._require_model()
        s = self.settings
        dataset = build_dataset(
            list(trajectories), self.tokenizer, s.max_length, s.weight_temperature, s.max_weight, self.actions
        )
        if self.actions is None:
            self.actions = dataset.actions
        logger.info(
            "%d trajectories, %d actions, mean action reward %.3f, %d tokens",
            len(dataset),
            dataset.num_actions,
            dataset.reward_mean,
            dataset.num_tokens,
        )
        return dataset

    async def train(
        self, dataset: TrajectoryDataset | list[dict[str, Any]], epochs: int | None = None
    ) -> list[float]:
        """Fine-tune on `dataset` (or on trajectories, prepared first); returns the loss of
        every optimizer step. The engine gets the trained weights at the end."""
        from tqdm import tqdm

        from rayrl.placement import Role

        self._require_model()
        if not isinstance(dataset, TrajectoryDataset):
            dataset = self.prepare_training_data(dataset)
        if len(dataset) == 0:
            raise ValueError("no trajectories to train on (every one was empty or longer than max_length)")
        s = self.settings
        epochs = s.epochs if epochs is None else int(epochs)
        rng = np.random.default_rng(s.seed + self._steps)
        learners = self.ppo.groups[Role.LEARNER]
        losses: list[float] = []
        steps_per_epoch = math.ceil(len(dataset) / s.batch_size)
        with tqdm(total=epochs * steps_per_epoch, desc="rayrl offline", unit="step") as bar:
            for epoch in range(epochs):
                order = rng.permutation(len(dataset))
                for start in range(0, len(dataset), s.batch_size):
                    batch = dataset.table.take(order[start : start + s.batch_size])
                    metrics = (await asyncio.gather(*learners.call("update", batch)))[0]
                    self._steps += 1
                    loss = float(metrics["total_loss"])
                    losses.append(loss)
                    row = {
                        "step": self._steps,
                        "epoch": epoch,
                        "loss": loss,
                        "grad_norm": metrics["grad_norm"],
                    }
                    self.history.append(row)
                    self.ppo.run.log(row)
                    bar.set_postfix(loss=f"{loss:.3f}")
                    bar.update()
        self.ppo.version += 1
        await asyncio.to_thread(self.ppo.sync_weights)
        return losses

    # ---- inference ---------------------------------------------------------------
    def test_inference(
        self, problems: list[Any], env: Any = None, max_actions: int | None = None, temperature: float = 0.0
    ) -> dict[str, Any]:
        """Let the policy solve `problems`, one action per turn, the environment answering.

        With an environment (`env`, else the trainer's), each problem is played to the end
        in a copy of it. Without one, only the first reply of each problem is generated and
        only the format metrics exist (accuracy and completion_rate are None).

        Returns:
            action_count (mean actions per problem), structure_score (share of replies that
            are exactly one `Action: <name>` line with a valid name), completion_rate
            (share with a final answer: the environment read one, `info["answer"]`, or
            ended an episode whose steps report no answers), accuracy (share it reported
            as solved: `info["success"]` or `info["correct"]`), mean_reward, and `results`, one per problem.
        """
        self._require_model()
        env = env if env is not None else self.env
        max_actions = max_actions or self.settings.max_actions
        if env is None:
            logger.warning("test_inference without an environment: only format metrics (no accuracy)")
            max_actions = 1
        plays = [self._start(problem, env) for problem in problems]
        engines = self.ppo.engines
        import ray

        limit = self.config.inference.max_model_len - self.settings.max_new_tokens
        for _ in range(max_actions):
            active = [p for p in plays if not p.done and len(p.ids) <= limit]
            if not active:
                break
            refs = [
                engines[i % len(engines)].generate.remote(p.ids, self.settings.max_new_tokens, temperature)
                for i, p in enumerate(active)
            ]
            for play, out in zip(active, ray.get(refs), strict=True):
                self._advance(play, out, env is not None)
        return _quality(plays, env is not None)

    def _start(self, problem: Any, env: Any) -> _Play:
        prompt = system_prompt(self.actions or [])
        if env is None:
            first = str(problem)
            play_env = None
        else:
            play_env = copy.deepcopy(env)
            try:
                first = play_env.reset(problem) if problem is not None else play_env.reset()
            except Exception as exc:  # noqa: BLE001 - a problem the environment rejects fails alone
                play = _Play(problem, play_env, [], [], done=True, error=f"{type(exc).__name__}: {exc}")
                logger.warning("test_inference: %r not played: %s", problem, play.error)
                return play
            first = str(problem) if first in (None, "") else str(first)
            if not self.actions:
                prompt = system_prompt(valid_actions_of(play_env))
        history = [{"role": "system", "content": prompt}, {"role": "user", "content": first}]
        return _Play(problem, play_env, self.chat.prompt_ids(history), history)

    def _advance(self, play: _Play, out: Any, with_env: bool) -> None:
        text = self.tokenizer.decode(out.token_ids, skip_special_tokens=True).strip()
        valid = valid_actions_of(play.env) if with_env else list(self.actions or [])
        name, params, well_formed = parse_action(text, valid or None)
        turn: dict[str, Any] = {"reply": text, "action": name, "params": params, "well_formed": well_formed}
        play.turns.append(turn)
        if not with_env:
            play.done = True
            return
        try:
            result = take_action(play.env, name or text, params)
        except Exception as exc:  # noqa: BLE001 - a broken step ends that episode, not the test
            play.error, play.done = f"{type(exc).__name__}: {exc}", True
            return
        turn.update(reward=result.reward, observation=result.observation)
        play.total_reward += result.reward
        info = result.info or {}
        play.success = bool(info.get("success", info.get("correct", False)))
        # a final answer: one the environment read (`info["answer"]`), a solve, or the end
        # of an episode whose environment does not report answers
        play.completed = play.completed or play.success or info.get("answer") is not None
        if result.done:
            play.done = True
            play.completed = play.completed or "answer" not in info
            return
        following = [{"role": "user", "content": RESULT_PREFIX + result.observation}]
        ended_with_eos = (
            out.finish_reason == "stop"
            and bool(out.token_ids)
            and out.token_ids[-1] == self.tokenizer.eos_token_id
        )
        play.ids = (
            play.ids
            + list(out.token_ids)
            + self.chat.continuation_ids(play.history, following, ended_with_eos)
        )
        play.history = play.history + [{"role": "assistant", "content": text}, *following]

    # ---- the rest -----------------------------------------------------------------
    def save(self, path: str | Path) -> str:
        """Save the policy (adapters merged) and the adapters (`path/adapter`)."""
        import ray

        self._require_model()
        return ray.get(self.ppo.learner.save.remote(str(path)))

    def close(self) -> None:
        """Stop the actors (and Ray, if this trainer started it)."""
        if self.ppo is not None:
            self.ppo.cleanup()
            self.ppo = None

    def __enter__(self) -> AgenticTrainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _quality(plays: list[_Play], with_env: bool) -> dict[str, Any]:
    turns = [t for p in plays for t in p.turns]
    n = max(len(plays), 1)
    results = [
        {
            "problem": p.problem,
            "actions": [t["reply"] for t in p.turns],
            "total_reward": p.total_reward,
            "completed": p.completed,
            "success": p.success,
            **({"error": p.error} if p.error else {}),
        }
        for p in plays
    ]
    return {
        "problems": len(plays),
        "action_count": float(np.mean([len(p.turns) for p in plays])) if plays else 0.0,
        "structure_score": float(np.mean([t["well_formed"] for t in turns])) if turns else 0.0,
        "completion_rate": sum(p.completed for p in plays) / n if with_env else None,
        "accuracy": sum(p.success for p in plays) / n if with_env else None,
        "mean_reward": float(np.mean([p.total_reward for p in plays])) if with_env and plays else None,
        "results": results,
    }
