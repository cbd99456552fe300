"""The controller: one loop that reads top to bottom.

rollout -> reference + values -> score (advantages) -> update (critic, actor) -> sync
-> log, then the callbacks and, every `checkpoint.save_interval` steps, a full-state
checkpoint (`rayrl.checkpoint`) that `checkpoint.resume` continues from.

The driver holds actor handles and small numbers only. The rollout batch stays in
the object store: the agent loop returns a reference to a pyarrow table; the
reference and the critic read it directly and hand their per-token arrays to the
scorer as object references; the scorer returns the training table
(with per-token advantages) that the critic and the learner read. The driver only
fetches per-episode stats and metrics.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
from tqdm import tqdm

from rayrl import placement
from rayrl.actors.agent_drivers import plan_agent
from rayrl.actors.agent_loop import EpisodeRunner, sample_tasks
from rayrl.actors.critic import Critic
from rayrl.actors.learner import ActorLearner
from rayrl.actors.reference import ReferenceWorker
from rayrl.actors.rollout import RolloutWorker
from rayrl.actors.scoring import Scorer
from rayrl.algorithms import KLController
from rayrl.checkpoint import CheckpointStore, find_resume, read_state, run_path_of
from rayrl.config import ConfigStore
from rayrl.data import DataTasks
from rayrl.envs.base import BaseEnvironment
from rayrl.envs.source import EnvironmentSource
from rayrl.hardware import resolve_dtype
from rayrl.logs import LEVEL_VAR, driver_level
from rayrl.metrics_export import RayMetrics, TensorBoardLog, trackers
from rayrl.model_store import resolve_model
from rayrl.pipeline import RolloutPipeline
from rayrl.placement import Role
from rayrl.recovery import Recovery
from rayrl.tracking import RunDirectory
from rayrl.training.callbacks import Callback, CallbackList, StopAtReward
from rayrl.weight_sync import DEFAULT_BUCKET_BYTES, agree_layouts, sync_engines

logger = logging.getLogger(__name__)

# Environment of every rayrl actor. vLLM's CPU backend keeps one core for the
# framework by default; rayrl's roles take turns on the cores, so the engine gets
# them all while it generates.
ACTOR_ENV = {
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    # vLLM's engine core and model worker in the process that builds the engine (the
    # rollout actor, seed 002's agents) instead of spawned ones: each spawned process
    # imports vLLM again (~13 s of CPU on a 2-core machine).
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def _ship_by_value(obj: Any) -> None:
    """Let actors unpickle user code that is not importable on their side.

    An environment class or reward function defined next to a user's script (not in
    an installed package) is sent by value instead of by module reference.
    """
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if module is None or module.__name__ == "__main__" or module.__name__.split(".")[0] == "rayrl":
        return
    path = getattr(module, "__file__", "") or ""
    if "site-packages" not in path and "dist-packages" not in path:
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(module)


def init_ray(config: ConfigStore, num_bundles: int) -> bool:
    """Attach to `ray.address` / $RAY_ADDRESS, or start a local single-node Ray.

    Returns True when this call started Ray (and so should shut it down).
    """
    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": {**ACTOR_ENV, LEVEL_VAR: driver_level()}}
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        # Resources belong to the cluster; passing num_cpus here is an error.
        ray.init(address=address, runtime_env=runtime_env)
        return True
    num_cpus = max(config.ray.num_cpus or 0, num_bundles, os.cpu_count() or 1)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=config.ray.include_dashboard,
        dashboard_host="127.0.0.1",
        runtime_env=runtime_env,
        logging_level=logging.WARNING,
    )
    return True


def _as_rng_state(state: list) -> tuple:
    """random.Random's state from its JSON form (lists back to tuples)."""
    return tuple(tuple(x) if isinstance(x, list) else x for x in state)


ROLE_CLASSES: dict[Role, type] = {
    Role.ROLLOUT: RolloutWorker,
    Role.LEARNER: ActorLearner,
    Role.REFERENCE: ReferenceWorker,
    Role.CRITIC: Critic,
    Role.AGENT_LOOP: EpisodeRunner,
}


class RayPPOTrainer:
    """Trains a policy with PPO-family updates on Ray actors (rollout, reference, critic,
    actor-learner, agent loop): PPO with a critic (`adv_estimator: gae`) or a critic-free
    estimator (grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline), by config.

    Args:
        config: full validated config.
        environment: optional environment to train on instead of the one
            `environment.name` names: a class (built from the config per episode) or an
            instance (deep-copied per episode, so its constructor data reaches every one).
        reward_fn: optional callable scoring an episode summary dict (`total_reward`,
            `num_turns`, `tools`, `messages`, `final_response`), replacing the
            environment's reward; overrides `training.reward_fn`. A `RewardFunction`
            of type IMMEDIATE scores each assistant turn onto that turn's tokens.
        tool_manager: optional `MultiTurnManager`: every episode then gets its own copy
            of the manager's environment with its own tools bound to it, replies are
            parsed and tools run as in `MultiTurnInferenceEngine.run_episode` (its
            `max_turns`, the parser's instructions in the system prompt), and `reward_fn`
            sees the real tool counts.
        callbacks: objects with the `rayrl.training.Callback` hooks (`on_train_begin`,
            `on_step_end`, `on_train_end`); one that raises is logged and counted.
        agent: optional agent of the user's playing the episodes, instead of `agent.name` /
            `agent.function`: an `rayrl.agent.async_agent.Agent` subclass (queue-driven) or
            `async def run(client, task) -> float` (through the OpenAI-compatible endpoint).
    """

    def __init__(
        self,
        config: ConfigStore,
        environment: BaseEnvironment | type[BaseEnvironment] | None = None,
        reward_fn: Callable[[dict], float] | None = None,
        tool_manager: Any = None,
        callbacks: list[Callback] | None = None,
        agent: Any = None,
    ):
        self.config = config.check()
        self.env_source = (
            EnvironmentSource(config.environment, environment, tool_manager)
            if environment is not None or tool_manager is not None
            else None
        )
        self.reward_fn = reward_fn or config.training.reward_fn
        self.agent = plan_agent(config.agent, agent)  # the user's agent, resolved where it was registered
        agent_objects = [self.agent.agent, self.agent.env] if self.agent else []
        for obj in [*(self.env_source.user_objects if self.env_source else []), reward_fn, *agent_objects]:
            _ship_by_value(obj)
        stop = (
            [StopAtReward(config.training.stop_at_reward)]
            if config.training.stop_at_reward is not None
            else []
        )
        self.callbacks = CallbackList([*(callbacks or []), *stop])
        self.stop_reason: str | None = None
        self.learning_rate = config.training.learning_rate
        self._warned: set[str] = set()
        self.metrics_history: list[dict[str, Any]] = []
        self.run: RunDirectory | None = None
        self.sinks: list[Any] = []  # metrics sinks besides metrics.jsonl (`open_sinks`)
        self._started_ray = False
        self._placement: placement.RolePlacement | None = None
        self.groups: dict[Role, placement.RoleGroup] = {}  # the running roles (`setup`)
        self.scorer = None
        self.kl_ctl = KLController(config.training.kl_coef, config.training.target_kl)
        self.overlap_roles = False
        self.version = 0  # the policy's weight version: updates so far
        self.engine_version = 0  # the version the engines hold (behind it with max_staleness > 0)
        self.start_step = 0  # a resumed run's first step
        self.role_classes = dict(ROLE_CLASSES)  # a subclass per role may replace one, before setup
        self.recovery = Recovery(self)
        self.rollouts = RolloutPipeline(self)
        self._callback_state: dict | None = None
        self.rng = random.Random(config.training.seed)
        self.data: DataTasks | None = None  # tasks from data.train_files (`setup`)

    # ---- setup ---------------------------------------------------------------
    def setup(self, resume: Path | None = None, only: list[Role] | None = None) -> None:
        """Resolve the model, place the roles, start their actors and join weight sync;
        then load `resume` (default: the checkpoint `checkpoint.resume` names, if any).
        `only`: start only these roles (evaluation needs only the engines and the agent loop)."""
        cfg = self.config
        run_path = self.run.path if self.run is not None else RunDirectory.path_for(cfg)
        if resume is None:
            resume = find_resume(cfg.checkpoint, run_path)  # fails before any actor starts
        self.run = RunDirectory(cfg, run_path_of(resume) if resume else run_path)
        self.open_sinks()
        self.checkpoints = CheckpointStore(self.run.path, cfg.checkpoint.keep_last)
        model_path = resolve_model(cfg.model.model_name, cfg.model.cache_dir)
        self.model_path = model_path
        if cfg.data.train_files and self.data is None:  # the files are checked before any actor starts
            self.data = DataTasks(cfg.data, cfg.data.train_files, cfg.training.seed, model_path)
        # Bundle count is the same with or without GPUs; a local Ray needs that many CPUs.
        started = init_ray(cfg, placement.num_bundles(placement.plan_roles(cfg, use_gpu=False)))
        self._started_ray = self._started_ray or started  # a restarted run keeps its Ray
        use_gpu = placement.decide_gpu(cfg)
        # On GPUs every model role has its own device and roles overlap; on CPU they share
        # the cores, and two torch processes each using every core slow both down, so the
        # reference and critic (and the critic and learner updates) take turns.
        self.overlap_roles = use_gpu
        roles = placement.plan_roles(cfg, use_gpu, ray.cluster_resources().get("CPU", 0.0))
        self._placement = placement.RolePlacement(roles, cfg.ray.placement_timeout_s)

        p = self._placement
        # engines and the weights sent to them in one dtype: "auto" resolved for the device
        engine_cfg = cfg.inference.model_copy(
            update={"dtype": resolve_dtype(cfg.inference.dtype, "cuda" if use_gpu else "cpu")}
        )
        self.engine_cfg, self.use_gpu = engine_cfg, use_gpu
        critic_path = (
            resolve_model(cfg.critic.model_name, cfg.model.cache_dir) if cfg.critic.model_name else model_path
        )
        n = {r: count for r, count in placement.roles_for(cfg).items() if only is None or r in only}
        # Every role as (class, constructor arguments of member i): what a restart rebuilds.
        cls = self.role_classes
        declared: dict[Role, tuple[type, Callable[[int], tuple]]] = {
            Role.ROLLOUT: (cls[Role.ROLLOUT], lambda i: (model_path, engine_cfg, i)),
            Role.LEARNER: (
                cls[Role.LEARNER],
                lambda r: (model_path, cfg.training, cfg.learner, engine_cfg.dtype, r, n[Role.LEARNER]),
            ),
            Role.REFERENCE: (
                cls[Role.REFERENCE],
                lambda r: (model_path, cfg.reference, r, n.get(Role.REFERENCE)),
            ),
            Role.CRITIC: (
                cls[Role.CRITIC],
                lambda r: (critic_path, cfg.training, cfg.critic, r, n.get(Role.CRITIC)),
            ),
            Role.AGENT_LOOP: (
                cls[Role.AGENT_LOOP],
                lambda _: (
                    model_path,
                    cfg.environment,
                    cfg.inference,
                    self.engines,  # the engines of the moment (a restarted loop gets the new ones)
                    self.reward_fn,
                    self.env_source,
                    cfg.training.batch_size,
                    cfg.training.reward_timeout_s,
                    p.strategy(Role.AGENT_LOOP),  # environment hosts share its bundle
                    self.agent,
                    cfg.training.group_size,
                ),
            ),
        }
        options = {Role.AGENT_LOOP: {"max_concurrency": 10_000}}
        self.groups = {}
        for role in n:  # engines first: the agent loop is given their handles
            self.groups[role] = placement.RoleGroup(p, role, *declared[role], actor_options=options.get(role))
        # Scoring is a few vectorised passes over a few thousand floats: no CPU of its own.
        self.scorer = p.spawn(Role.AGENT_LOOP, Scorer, actor_options={"num_cpus": 0})
        self.start_roles(list(n))
        if resume is not None:
            self.restore(resume)

    def start_roles(self, roles: list[Role]) -> None:
        """Wait until (re)started `roles` serve: engines loaded, collective groups formed,
        environment hosts up; with the learner or an engine among them, the weight-sync
        group is (re)built."""
        g = self.groups
        starts = g[Role.ROLLOUT].call("start") if Role.ROLLOUT in roles else []
        waits = []
        for role in (Role.LEARNER, Role.CRITIC):
            if role in roles and role in g:
                waits += g[role].join()
        if Role.AGENT_LOOP in roles:
            waits.append(self.runner.ready.remote())  # environment hosts start meanwhile
        if Role.REFERENCE in roles:
            waits += [a.__ray_ready__.remote() for a in self.references]
        ray.get(starts)
        if self.learner is not None and (Role.ROLLOUT in roles or Role.LEARNER in roles):
            self.spec = ray.get(self.learner.weight_spec.remote())
            if self.config.inference.blocked_sync:  # the engines' kernels read what arrives
                self.spec = agree_layouts(self.engines, self.spec)
            self.join_weight_sync()
        ray.get(waits)

    def members(self, role: Role) -> list:
        """The actors of `role` (empty when the run has no such role)."""
        return self.groups[role].members if role in self.groups else []

    @property
    def engines(self) -> list:
        return self.members(Role.ROLLOUT)

    @property
    def learners(self) -> list:
        """Data-parallel ranks; rank 0 also sends the weights."""
        return self.members(Role.LEARNER)

    @property
    def learner(self):
        return self.learners[0] if self.learners else None

    @property
    def references(self) -> list:
        """Each scores a block of rows."""
        return self.members(Role.REFERENCE)

    @property
    def critics(self) -> list:
        return self.members(Role.CRITIC)

    @property
    def runner(self):
        return next(iter(self.members(Role.AGENT_LOOP)), None)

    def join_weight_sync(self) -> None:
        """(Re)build the weight-sync group: learner rank 0, engine i rank i + 1."""
        host, port = ray.get(self.learner.group_address.remote())
        world = 1 + len(self.engines)
        backend = "nccl" if self.use_gpu else "gloo"
        inference = self.config.inference
        timeout = inference.sync_timeout_s
        ray.get(
            [self.learner.init_weight_sync.remote(host, port, world, timeout, inference.shared_memory_sync)]
            + [
                e.init_weight_sync.remote(host, port, 1 + i, world, backend, timeout)
                for i, e in enumerate(self.engines)
            ]
        )

    # ---- the loop --------------------------------------------------------------
    def fit(self, num_epochs: int | None = None) -> list[dict[str, Any]]:
        """Run iterations up to `num_epochs` (default `training.num_epochs`; a resumed run
        starts after its checkpoint's step); returns metrics_history.

        A role that dies is restarted by `rayrl.recovery.Recovery` (up to
        `training.max_failures` times): a reference rank or the agent loop in place, the
        step run again; a learner or critic rank with its group, the run rolled back to
        its newest checkpoint. If an iteration fails otherwise, or past that, the policy
        as last updated is saved to `<run>/interrupted` before the error propagates.
        """
        if self.learner is None:
            self.setup()
        elif not self.sinks:  # a fit after a finished one (which closed them)
            self.open_sinks()
        self.total_steps = num_epochs or self.config.training.num_epochs
        bar = tqdm(None, "rayrl", self.total_steps, unit="step", dynamic_ncols=True, initial=self.start_step)
        self.callbacks.on_train_begin(self)
        if self._callback_state:  # a resumed run's callbacks go on where they were
            self.callbacks.load_state_dict(self._callback_state)
        step = self.start_step
        try:
            while step < self.total_steps and self.stop_reason is None:
                try:
                    row = self.train_step(step)
                    self.callbacks.on_step_end(self, row)
                    self.maybe_save_state(step + 1)
                except ray.exceptions.RayActorError as err:
                    step = self.recovery.recover(err, step)  # the step to go on from, or raises
                    bar.n = step
                    continue
                step += 1
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.4f}")
            self.rollouts.finish()  # the engines serve the final policy
            if self.stop_reason is not None:
                logger.info("stopping after epoch %d: %s", step, self.stop_reason)
        except BaseException:
            self._save_after_failure()
            raise
        finally:
            bar.close()
        if self.config.checkpoint.save_final:
            self.save_checkpoint(self.run.checkpoint_path("final"))
        self.callbacks.on_train_end(self, self.metrics_history)
        self.close_sinks()
        return self.metrics_history

    def train_step(self, step: int) -> dict[str, Any]:
        """One iteration: rollout, reference, score (advantages), update, sync, log."""
        t_cfg = self.config.training
        times: dict[str, float] = {}
        t_step = time.perf_counter()

        # 1. rollout: episodes run in the agent-loop actor (generated ahead of the learner
        #    with training.max_staleness > 0: rayrl.pipeline); the batch stays in the object store
        log = self._phase_logger(step)
        log("rollout (%d episodes)", t_cfg.batch_size)
        t = time.perf_counter()
        self.recovery.begin_step()
        batch_ref, stats = self.rollouts.batch(step)
        stats["staleness"] = {self.version - v: n for v, n in stats["token_versions"].items()}
        times["rollout"] = time.perf_counter() - t
        self._warn_once(stats["warnings"])

        # 2. reference log-probs and critic values (each rank a block of rows), read from
        #    the object store; while the learner still is the reference, it is its own
        log("reference log-probs and values")
        t = time.perf_counter()
        own_reference = self.learner_is_reference()
        ref_parts = [] if own_reference else [r.compute_logprobs.remote(batch_ref) for r in self.references]
        if ref_parts and not self.overlap_roles:
            ray.wait(ref_parts, num_returns=len(ref_parts), fetch_local=False)
        value_parts = [c.compute_values.remote(batch_ref) for c in self.critics]
        pending = ref_parts + value_parts
        if pending:
            ray.wait(pending, num_returns=len(pending), fetch_local=False)
        times["reference"] = time.perf_counter() - t

        # 3. score: token rewards (KL penalty if kl_mode=reward), group filter, advantages
        log("rewards and advantages")
        t = time.perf_counter()
        train_ref, score_ref = self.scorer.score.options(num_returns=2).remote(
            batch_ref, ref_parts, value_parts, t_cfg, self.kl_ctl.value
        )
        score = ray.get(score_ref)
        times["score"] = time.perf_counter() - t

        # 4. update the critic and the policy
        log("update")
        t = time.perf_counter()
        critic_refs = [c.update.remote(train_ref) for c in self.critics]
        if critic_refs and not self.overlap_roles:
            ray.wait(critic_refs, num_returns=len(critic_refs), fetch_local=False)
        kl_coef = self.kl_ctl.value
        update = ray.get([r.update.remote(train_ref, kl_coef, own_reference) for r in self.learners])[0]
        if critic_refs:
            update.update(ray.get(critic_refs)[0])
        self.version += 1
        update["kl_coef"] = self.kl_ctl.value
        self.kl_ctl.update(update.get("kl", 0.0) or score.get("kl_reward", 0.0), t_cfg.batch_size)
        times["update"] = time.perf_counter() - t

        # 5. sync weights into every engine (with max_staleness > 0, when the next batch needs it)
        log("weight sync")
        t = time.perf_counter()
        sync = self.rollouts.after_update()
        times["sync"] = time.perf_counter() - t

        # 6. log
        times["step"] = time.perf_counter() - t_step
        row = self._metrics(step, stats, {**score, **update}, sync, times)
        self.metrics_history.append(row)
        self.run.log(row, stats.get("samples"))
        self._record(row)
        log("metrics %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        return row

    def learner_is_reference(self) -> bool:
        """Whether the learner holds the reference's weights all through its next update:
        it has not been updated yet and takes one optimizer step per update, with the KL a
        loss term. Its own log-probs (detached) are then the reference's, and the
        reference's pass over the batch is skipped (the first step of a run)."""
        t = self.config.training
        one_step = t.ppo_epochs == 1 and t.num_mini_batches == 1
        return bool(self.references) and self.version == 0 and t.kl_mode == "loss" and one_step

    def _phase_logger(self, step: int) -> Callable[..., None]:
        total = getattr(self, "total_steps", None) or self.config.training.num_epochs
        return lambda msg, *args: logger.info(f"epoch {step + 1}/{total}: {msg}", *args)

    def _warn_once(self, messages: list[str]) -> None:
        for message in messages:
            if message not in self._warned:
                self._warned.add(message)
                logger.warning(message)

    # ---- control from callbacks ------------------------------------------------
    @property
    def kl_coef(self) -> float:
        """The KL coefficient the next update uses."""
        return self.kl_ctl.value

    def request_stop(self, reason: str) -> None:
        """End training after the current epoch (early stopping); `reason` is logged."""
        self.stop_reason = reason

    def adjust(
        self, reason: str, *, learning_rate: float | None = None, kl_coef: float | None = None
    ) -> dict:
        """Change the learning rate and/or KL coefficient from the next update on.

        Each change is logged and appended, with its reason, to `<run>/adjustments.jsonl`.
        """
        change: dict[str, Any] = {"step": len(self.metrics_history), "reason": reason}
        if learning_rate is not None:
            applied = ray.get([r.set_learning_rate.remote(float(learning_rate)) for r in self.learners])
            change["learning_rate"] = [self.learning_rate, applied[0]]
            self.learning_rate = applied[0]
        if kl_coef is not None and not self.references:
            logger.warning("kl_coef not changed: this run has no reference model (training.kl_coef=0)")
            kl_coef = None
        if kl_coef is not None:
            change["kl_coef"] = [self.kl_ctl.value, float(kl_coef)]
            self.kl_ctl.value = float(kl_coef)
        logger.info("adjusted %s: %s", {k: v for k, v in change.items() if isinstance(v, list)}, reason)
        self.run.log_adjustment(change)
        return change

    # ---- full-state checkpoints and resume -----------------------------------------
    def maybe_save_state(self, step: int) -> Path | None:
        """Save a full-state checkpoint after `step` steps when it is due (every
        `checkpoint.save_interval` steps, the last step and an early stop included)."""
        interval = self.config.checkpoint.save_interval
        last = step == self.total_steps or self.stop_reason is not None
        if interval and (step % interval == 0 or last):
            return self.save_state(step)
        return None

    def save_state(self, step: int) -> Path:
        """Everything a run needs to continue after `step` steps (see `rayrl.checkpoint`)."""
        t = time.perf_counter()
        tmp = self.checkpoints.begin(step)
        saves = [r.save.remote(str(tmp / "policy")) for r in self.learners]
        saves += [r.save_state.remote(str(tmp / "learner")) for r in self.learners]
        saves += [c.save.remote(str(tmp / "critic")) for c in self.critics]
        saves += [c.save_state.remote(str(tmp / "critic_state")) for c in self.critics]
        ray.get(saves)
        state = {
            "weight_version": self.version,
            "kl_coef": self.kl_ctl.value,
            "learning_rate": self.learning_rate,
            "task_sampler": self.rollouts.sampler_state(),
            "callbacks": self.callbacks.state_dict(),
        }
        path = self.checkpoints.commit(tmp, step, state)
        logger.info("checkpoint %s (%.1fs)", path, time.perf_counter() - t)
        return path

    def restore(self, checkpoint: Path) -> None:
        """Load a checkpoint into the running roles (learner, critic, engines) and the driver."""
        state = read_state(checkpoint)
        ray.get([r.load_state.remote(str(checkpoint / "learner")) for r in self.learners])
        ray.get([c.load_state.remote(str(checkpoint / "critic_state")) for c in self.critics])
        self.version = state["weight_version"]
        self.sync_weights()  # the engines serve the checkpoint's policy
        self.kl_ctl.value = state["kl_coef"]
        self.learning_rate = state["learning_rate"]
        self.set_sampler_state(state.get("task_sampler") or {"rng": state["task_rng"]})
        self._callback_state = state.get("callbacks")  # loaded after on_train_begin
        self.start_step = state["step"]
        self.metrics_history = self.run.truncate(self.start_step)
        logger.info("resumed from %s: continuing after step %d", checkpoint, self.start_step)

    def save_checkpoint(self, path: str) -> str:
        """Save the policy (Hugging Face folder at `path`) and the critic (`path/critic`)."""
        saves = [r.save.remote(path) for r in self.learners]
        saves += [c.save.remote(str(Path(path) / "critic")) for c in self.critics]
        ray.get(saves)
        return path

    def _save_after_failure(self) -> None:
        if self.learner is None or self.run is None:
            return
        try:
            path = self.run.checkpoint_path("interrupted")
            ray.get([r.save.remote(path) for r in self.learners], timeout=300)
            logger.warning("training stopped early; policy saved to %s", path)
        except Exception:  # noqa: BLE001 - the learner itself may be what failed
            logger.warning("training stopped early and the policy could not be saved", exc_info=True)

    def sync_weights(self) -> dict[str, Any]:
        """Broadcast the learner's weights (version `self.version`) into every engine, within
        `inference.sync_timeout_s`, and check each engine loaded them (`weight_sync.sync_engines`)."""
        timeout = self.config.inference.sync_timeout_s
        sync = sync_engines(
            self.learners, self.engines, self.spec, self.version, DEFAULT_BUCKET_BYTES, timeout
        )
        if sync["canary_tensors"] == 0:
            self._warn_once(
                ["weight sync: the engines hold none of the fingerprinted tensors; loads are unchecked"]
            )
        self.engine_version = self.version
        return sync

    # ---- tasks -------------------------------------------------------------------------
    def draw_tasks(self, n: int) -> list[Any]:
        """The next `n` training tasks: rows of `data.train_files`, or the environment's."""
        if self.data is not None:
            return self.data.draw(n)
        return sample_tasks(self.config.environment, n, self.rng, env_source=self.env_source)

    def held_out_tasks(self, n: int, seed: int = 1234) -> list[Any]:
        """`n` evaluation tasks: the first rows of `data.eval_files`, or the environment's
        held-out draw."""
        files = self.config.data.eval_files
        if files:
            return DataTasks(self.config.data, files, None, self.model_path).first(n)
        rng = random.Random(seed)
        return sample_tasks(self.config.environment, n, rng, evaluation=True, env_source=self.env_source)

    def sampler_state(self) -> dict[str, Any]:
        """Where the task draw stands (the RNG, and the data stream's read position)."""
        return {"rng": self.rng.getstate(), "data": self.data.state() if self.data else None}

    def set_sampler_state(self, state: dict[str, Any]) -> None:
        self.rng.setstate(_as_rng_state(state["rng"]))
        if self.data is not None and state.get("data"):
            self.data.set_state(state["data"])

    def evaluate(self, num_tasks: int, held_out: bool = True, seed: int = 1234) -> dict[str, float]:
        """Mean reward and success of one sampled episode per task (held-out tasks by default)."""
        if self.runner is None:
            self.setup()
        tasks = self.held_out_tasks(num_tasks, seed) if held_out else self.draw_tasks(num_tasks)
        _, stats_ref = self.runner.collect.options(num_returns=2).remote(tasks, 1)
        stats = ray.get(stats_ref)
        return {
            "reward_mean": float(np.mean(stats["rewards"])) if stats["rewards"] else 0.0,
            "first_try": float(np.mean(stats["first_try"])) if stats["first_try"] else 0.0,
            "success": float(np.mean(stats["success"])) if stats["success"] else 0.0,
            "episodes": len(stats["rewards"]),
        }

    def _metrics(
        self, step: int, stats: dict, update: dict, sync: dict | None, times: dict
    ) -> dict[str, Any]:
        rewards = np.asarray(stats["rewards"], dtype=np.float64)
        stale = stats["staleness"]  # versions behind the learner -> tokens
        tokens = max(sum(stale.values()), 1)
        return {
            "step": step + 1,
            "epoch": step + 1,  # the integration example's name for an iteration
            "reward_mean": float(rewards.mean()) if rewards.size else 0.0,
            "reward_std": float(rewards.std()) if rewards.size else 0.0,
            "success": float(np.mean(stats["success"])) if stats["success"] else 0.0,
            "first_try": float(np.mean(stats["first_try"])) if stats["first_try"] else 0.0,
            "turns_mean": float(np.mean(stats["num_turns"])) if stats["num_turns"] else 0.0,
            "episodes": int(rewards.size),
            "env_errors": len(stats["errors"]),
            "env_restarts": stats["env_restarts"],
            "reward_timeouts": stats["reward_timeouts"],
            "engine_restarts": self.recovery.engine_restarts,
            "role_restarts": self.recovery.role_restarts,
            "run_restarts": self.recovery.run_restarts,
            "episodes_retried": stats["episodes_retried"],
            "truncated_episodes": stats["truncated"],
            "callback_errors": self.callbacks.total_errors,
            **(self.data.counters() if self.data is not None else {}),
            "learning_rate": self.learning_rate,
            "response_tokens": stats["response_tokens"],
            "tokens_per_s": stats["response_tokens"] / max(stats["seconds"], 1e-9),
            **{
                k: update[k]
                for k in (
                    "total_loss",
                    "policy_loss",
                    "kl",
                    "clip_frac",
                    "entropy",
                    "grad_norm",
                    "logprob_gap",
                    "is_weight_mean",
                    "is_weight_max",
                    "is_beyond_cap",
                    "mismatch_kl",
                )
            },
            **{
                k: update[k]
                for k in (
                    "kl_coef",
                    "kl_reward",
                    "advantage_mean",
                    "advantage_std",
                    "kept_episodes",
                    "filtered_episodes",
                    "value_loss",
                    "value_clip_frac",
                    "value_explained_var",
                    "critic_grad_norm",
                )
                if k in update
            },
            **{f"env_{k}": float(np.mean(v)) for k, v in stats.get("info", {}).items() if v},
            **{f"agent_{k}": v for k, v in stats.get("agent", {}).items()},
            "weight_version": self.version,
            "engine_weight_version": self.engine_version,
            "staleness_mean": sum(k * n for k, n in stale.items()) / tokens,
            "staleness_max": max(stale, default=0),
            "synced": int(sync is not None),
            "sync_gb_per_s": sync["bytes"] / max(sync["wall_s"], 1e-9) / 1e9 if sync else 0.0,
            "sync_checked_tensors": sync["canary_tensors"] if sync else 0,
            **{f"time_{k}": v for k, v in times.items()},
        }

    def open_sinks(self) -> None:
        """Where each step's row goes besides metrics.jsonl: Ray's metrics system,
        TensorBoard, and the W&B / MLflow runs `tracking` asks for."""
        self.close_sinks()
        self.sinks = [
            RayMetrics(self.run.path.name),
            TensorBoardLog(self.run.path / "tensorboard"),
            *trackers(self.config, self.run.path),
        ]

    def _record(self, row: dict[str, Any]) -> None:
        """Hand a step's row to every sink; one that fails is dropped with a warning (the
        row is in metrics.jsonl whatever happens)."""
        for sink in list(self.sinks):
            try:
                sink.record(row)
            except Exception as err:  # noqa: BLE001 - observability must not stop training
                logger.warning(
                    "metrics to %s turned off: %s: %s", type(sink).__name__, type(err).__name__, err
                )
                self.sinks.remove(sink)

    def close_sinks(self) -> None:
        """Flush and close the metrics sinks (ends the W&B / MLflow runs)."""
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - observability must not lose the run
                    logger.warning("closing %s failed", type(sink).__name__, exc_info=True)
        self.sinks = []

    def cleanup(self) -> None:
        """Stop every role, and shut Ray down if this trainer started it."""
        self.close_sinks()
        if self.data is not None:
            self.data.close()
        self.stop_roles()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def stop_roles(self) -> None:
        """Stop engines, free the placement group (its actors go with it), kill the scorer."""
        for engine in self.engines:
            try:
                ray.get(engine.shutdown.remote(), timeout=60)
            except Exception:  # noqa: BLE001 - best effort on the way out
                logger.warning("engine shutdown failed", exc_info=True)
        for group in self.groups.values():
            group.kill()
        if self.scorer is not None:
            ray.kill(self.scorer)
        if self._placement is not None:
            self._placement.remove()
            self._placement = None
        self.groups, self.scorer = {}, None
