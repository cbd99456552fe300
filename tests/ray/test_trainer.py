"""The whole loop on real actors with a tiny model: files, metrics, sync, saved policy."""

import json
import time

import pytest
import ray
import yaml

from rayrl.rewards import ConcisenessReward, RewardFunction, RewardResult
from rayrl.trainer import RayPPOTrainer
from tests.conftest import make_config


def tiny_config(tiny_model: str, **sections):
    """A run of the tiny model with short turns and no dashboard, plus `sections` overrides.

    Environments run in the agent loop (`isolation: inline`) unless a test asks otherwise:
    starting a host actor per episode costs every test's start-up several seconds, and
    the hosts are tested in test_env_isolation.py."""
    inference = {"max_tokens": 8, "max_model_len": 256, "kv_cache_gb": 1, **sections.pop("inference", {})}
    environment = {"isolation": "inline", **sections.pop("environment", {})}
    return make_config(
        model={"model_name": tiny_model},
        inference=inference,
        environment=environment,
        ray={"include_dashboard": False},
        **sections,
    )


class ShorterReplies(RewardFunction):
    """1 - characters / 200 of the final reply. A tiny random model never solves a sum, so
    the environment's reward is 0 for every episode and the update has nothing to learn
    from; its replies' lengths differ, so with this reward the first update moves the policy."""

    def compute(self, episode):
        return RewardResult(max(0.0, 1.0 - len(episode.response) / 200), {}, {})


@pytest.fixture(scope="module")
def finished_run(ray_local, tiny_model, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs")
    config = tiny_config(
        tiny_model,
        training={
            "num_epochs": 2,
            "batch_size": 8,
            "group_size": 4,
            "learning_rate": 1e-3,
            "reward_fn": "tests.ray.test_trainer:ShorterReplies",
        },
        learner={"micro_batch_size": 4},
        checkpoint={"run_dir": str(run_dir), "run_name": "tiny"},
        tracking={"wandb": True, "wandb_mode": "offline", "mlflow": True},
    )
    trainer = RayPPOTrainer(config)
    try:
        history = trainer.fit()
        scored = ray.get(trainer.references[0].scored.remote())
        evaluation = trainer.evaluate(4)
    finally:
        trainer.cleanup()
    return trainer, history, evaluation, scored


def test_metrics_history_and_run_files(finished_run):
    trainer, history, _, scored = finished_run
    assert [row["step"] for row in history] == [1, 2]
    path = trainer.run.path
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert rows == history
    for key in (
        "reward_mean",
        "reward_std",
        "total_loss",
        "policy_loss",
        "kl",
        "clip_frac",
        "tokens_per_s",
        "time_rollout",
        "time_reference",
        "time_update",
        "time_sync",
    ):
        assert key in rows[0], key
    assert rows[0]["episodes"] == 8
    assert rows[-1]["weight_version"] == 2
    assert rows[0]["reward_std"] > 0.0  # something to learn from, so the first update moved the policy
    # policy == reference before the first update: the learner was its own reference then,
    # and the reference scored the second step's batch only
    assert rows[0]["kl"] == 0.0 and rows[1]["kl"] > 0.0
    assert scored == 1
    # the learner's packed passes (a group's samples share their prompt) score the sampled
    # tokens as the engine did (0.0013 measured; a misplaced prompt or row costs nats)
    assert rows[0]["logprob_gap"] < 0.01
    saved = yaml.safe_load((path / "config.yaml").read_text())
    assert saved["training"]["batch_size"] == 8
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(path / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/reward_mean")]
    assert logged == [(r["step"], pytest.approx(r["reward_mean"])) for r in rows]
    samples = [json.loads(line) for line in (path / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1, 2] and all(len(s["episodes"]) == 2 for s in samples)
    spans = samples[0]["episodes"][0]["spans"]
    assert not spans[0]["trained"] and "<|im_start|>assistant" in spans[0]["text"]
    assert any(s["trained"] for s in spans)


def test_wandb_and_mlflow_get_the_same_rows(finished_run):
    from mlflow.tracking import MlflowClient

    from tests.unit.test_trackers import wandb_history

    trainer, history, _, _ = finished_run
    path = trainer.run.path
    logged = wandb_history(path)  # offline W&B run in <run>/wandb, finished at the end of fit
    assert [(h["_step"], h["train/reward_mean"], h["train/kl"]) for h in logged] == [
        (r["step"], pytest.approx(r["reward_mean"]), pytest.approx(r["kl"])) for r in history
    ]
    client = MlflowClient((path / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("rayrl").experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.params["training.batch_size"] == "8"
    steps = client.get_metric_history(run.info.run_id, "time/rollout")
    assert [(m.step, m.value) for m in steps] == [
        (r["step"], pytest.approx(r["time_rollout"])) for r in history
    ]


def scrape(ray, name: str, run: str, expected: float, timeout_s: float = 60.0) -> float | None:
    """The value of `name` tagged `run` on this node's Prometheus endpoint, polled until it
    equals `expected` (Ray exports recorded values every few seconds) or the time is up."""
    import re
    import urllib.request

    port = ray.nodes()[0]["MetricsExportPort"]
    pattern = re.compile(rf'^{name}{{[^}}]*run="{run}"[^}}]*}} (\S+)$', re.M)
    deadline, value = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        found = pattern.search(text)
        value = float(found.group(1)) if found else None
        if value == pytest.approx(expected, rel=1e-6):
            break
        time.sleep(2.0)
    return value


def test_step_metrics_reach_the_nodes_prometheus_endpoint(finished_run, ray_local):
    """What the run logged is what Ray exports (gauges rayrl_<key>, tagged with the run)."""
    _, history, _, _ = finished_run
    last = history[-1]
    for key in ("reward_mean", "weight_version", "time_update", "tokens_per_s", "engine_restarts"):
        assert scrape(ray_local, f"ray_rayrl_{key}", "tiny", last[key]) == pytest.approx(
            last[key], rel=1e-6
        ), key


def test_final_policy_is_a_loadable_hf_folder(finished_run):
    from transformers import AutoModelForCausalLM

    trainer, _, _, _ = finished_run
    final = trainer.run.path / "final"
    assert (final / "config.json").is_file() and (final / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.num_parameters() > 0


def test_evaluation_runs_held_out_episodes(finished_run):
    _, _, evaluation, _ = finished_run
    assert evaluation["episodes"] == 4
    assert 0.0 <= evaluation["reward_mean"] <= 1.0


def test_cleanup_left_ray_running_for_the_caller(finished_run, ray_local):
    trainer, _, _, _ = finished_run
    assert ray_local.is_initialized()
    assert trainer.engines == [] and trainer.learner is None


@pytest.mark.slow  # with test_resume.py (slow, kills every role mid-step); the default run kills
# an engine past the restart limit in the next test
def test_a_killed_engine_is_replaced_and_its_episodes_rerun(ray_local, tiny_model, tmp_path):
    config = tiny_config(
        tiny_model,
        training={"num_epochs": 2, "batch_size": 4, "group_size": 2, "kl_coef": 0.0},
        checkpoint={"run_dir": str(tmp_path), "run_name": "recovered", "save_final": False},
    )
    trainer = RayPPOTrainer(config)
    try:
        trainer.setup()
        dead = trainer.engines[0]
        ray_local.kill(dead)
        history = trainer.fit()
        assert trainer.engines[0] is not dead
    finally:
        trainer.cleanup()
    first, second = history
    assert first["engine_restarts"] == 1 and first["episodes_retried"] == 4  # all were on engine 0
    assert first["episodes"] == 4 and second["episodes"] == 4  # none dropped
    # the replacement was loaded with the current weights (checked by the sync canary) and
    # then followed every sync
    assert [r["weight_version"] for r in history] == [1, 2]
    assert second["sync_checked_tensors"] > 0


def test_engine_deaths_past_the_restart_limit_stop_the_run_but_keep_the_policy(
    ray_local, tiny_model, tmp_path
):
    config = tiny_config(
        tiny_model,
        training={"num_epochs": 3, "batch_size": 4, "group_size": 2, "kl_coef": 0.0},
        inference={"max_engine_restarts": 0},
        checkpoint={"run_dir": str(tmp_path), "run_name": "killed"},
    )
    trainer = RayPPOTrainer(config)
    try:
        trainer.setup()
        ray_local.kill(trainer.engines[0])
        with pytest.raises(RuntimeError, match=r"engine\(s\) \[0\] died.*max_engine_restarts=0"):
            trainer.fit()
        assert (tmp_path / "killed" / "interrupted" / "model.safetensors").is_file()
        assert trainer.metrics_history == []
    finally:
        trainer.cleanup()


class ConciseButHangsOnce(ConcisenessReward):
    """ConcisenessReward, except that its first call in the agent-loop process never returns."""

    calls = 0

    def compute(self, episode):
        type(self).calls += 1
        if type(self).calls == 1:
            time.sleep(3600)
        return super().compute(episode)


def test_reward_fn_from_a_config_line_replaces_the_environment_reward(ray_local, tiny_model, tmp_path):
    """A tiny random model never solves a sum (env reward 0), but its short replies are
    all concise: with ConcisenessReward as reward_fn every episode scores 1, except the one
    whose reward hangs: past reward_timeout_s it scores 0 and the step goes on."""
    config = tiny_config(
        tiny_model,
        training={
            "num_epochs": 1,
            "batch_size": 4,
            "group_size": 2,
            "kl_coef": 0.0,
            "reward_fn": "tests.ray.test_trainer:ConciseButHangsOnce",
            "reward_timeout_s": 2.0,
        },
        environment={"max_turns": 1},
        checkpoint={"run_dir": str(tmp_path), "save_final": False},
    )
    trainer = RayPPOTrainer(config)
    try:
        row = trainer.fit()[0]
    finally:
        trainer.cleanup()
    assert row["reward_timeouts"] == 1 and row["env_errors"] == 1
    assert row["reward_mean"] == pytest.approx(0.75)  # the other three episodes were scored
    assert row["time_rollout"] < 60
    assert "env_correct" in row and "env_first_try" in row  # the environment's step info, averaged


@pytest.mark.parametrize(
    ("sections", "checks"),
    [
        pytest.param(  # critic through the trainer: test_resume.py; critic and reference ranks:
            # test_role_groups.py; epochs and mini-batches: test_learner_ranks.py
            {
                "training": {
                    "adv_estimator": "gae",
                    "kl_mode": "reward",
                    "ppo_epochs": 2,
                    "num_mini_batches": 2,
                    "lam": 0.95,
                },
                "reference": {"num_ranks": 2},
                "critic": {"num_ranks": 2},
            },
            ("value_loss", "value_explained_var", "kl_reward", "critic_grad_norm"),
            marks=pytest.mark.slow,
        ),
        pytest.param(  # estimator and group filter are unit-tested; this is the wiring
            {
                "training": {
                    "adv_estimator": "rloo",
                    "filter_groups": True,
                    "entropy_coef": 0.01,
                    "clip_ratio_high": 0.28,
                }
            },
            ("kept_episodes", "filtered_episodes"),
            marks=pytest.mark.slow,
        ),
        pytest.param(
            {"training": {"adv_estimator": "reinforce_pp_baseline", "target_kl": 0.01}},
            ("kl_coef",),
            marks=pytest.mark.slow,
        ),
        pytest.param(  # ZeRO-3 ranks: tests/ray/test_learner_ranks.py and test_role_groups.py
            {
                "training": {"adv_estimator": "grpo"},
                "learner": {"strategy": "deepspeed", "zero_stage": 3, "num_ranks": 2},
            },
            ("grad_norm",),
            marks=pytest.mark.slow,
        ),
        pytest.param(  # LoRA sync and state: test_weight_sync_engine.py, test_learner_ranks.py
            {"training": {"adv_estimator": "dr_grpo", "learning_rate": 1e-2}, "learner": {"lora_rank": 4}},
            ("grad_norm",),
            marks=pytest.mark.slow,
        ),
    ],
    ids=[
        "ppo_gae_two_critic_and_two_reference_ranks",
        "rloo_filtered",
        "reinforce_pp_baseline_adaptive_kl",
        "grpo_zero3_two_ranks",
        "dr_grpo_lora",
    ],
)
def test_estimators_run_through_the_trainer(ray_local, tiny_model, tmp_path, sections, checks):
    training, learner = sections["training"], sections.get("learner", {})
    config = tiny_config(
        tiny_model,
        training={"num_epochs": 2, "batch_size": 8, "group_size": 4, **training},
        learner={"micro_batch_size": 4, **learner},
        reference=sections.get("reference", {}),
        critic=sections.get("critic", {}),
        checkpoint={"run_dir": str(tmp_path), "run_name": "algo"},
    )
    trainer = RayPPOTrainer(config)
    try:
        history = trainer.fit()
    finally:
        trainer.cleanup()
    assert [row["step"] for row in history] == [1, 2]
    for row in history:
        for key in checks:
            assert key in row and row[key] == row[key]  # present and not NaN
        assert row["weight_version"] == row["step"]
    if training["adv_estimator"] == "gae":
        assert (tmp_path / "algo" / "final" / "critic" / "value_head.pt").is_file()
        assert history[0]["value_loss"] > 0
    if training.get("filter_groups"):
        assert all(r["kept_episodes"] + r["filtered_episodes"] == r["episodes"] for r in history)
    if learner.get("num_ranks", 1) > 1:  # the final policy was gathered from the shards
        assert (tmp_path / "algo" / "final" / "model.safetensors").stat().st_size > 1_000_000
    if learner.get("lora_rank"):  # a plain HF folder with the adapters merged in, and the adapters
        from transformers import AutoModelForCausalLM

        final = tmp_path / "algo" / "final"
        assert (final / "adapter" / "adapter_config.json").is_file()
        AutoModelForCausalLM.from_pretrained(final)
    if "target_kl" in training:
        assert history[1]["kl_coef"] != history[0]["kl_coef"]  # adapted after step 1


def test_eval_of_a_runs_policy_on_held_out_tasks(finished_run, capsys):
    """`rayrl eval RUN_DIR`: the final policy on held-out tasks, on the engines and agent loop
    only; the table printed, the figures written beside the run. (`--compare BASE` runs the
    same for a second model: the statistics are unit-tested in test_evaluation.py.)"""
    from rayrl.cli import main

    trainer, _, _, _ = finished_run
    run_dir = trainer.run.path
    assert main(["eval", str(run_dir), "--episodes", "4", "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "| policy | 8 |" in out and "pass@2" in out
    results = json.loads((run_dir / "eval.json").read_text())
    assert results["policy"]["model"] == str(run_dir / "final")
    for r in results.values():
        assert r["tasks"] == 4 and r["episodes"] == 8 and r["errors"] == 0
        low, high = r["success_ci95"]
        assert low <= r["success_rate"] <= high and high > 0  # Wilson: never a zero-width interval
