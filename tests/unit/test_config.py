import subprocess
import sys
import textwrap

import pytest

from rayrl.config import ConfigError, ConfigStore
from tests.conftest import make_config


def test_defaults_are_valid_and_round_trip():
    config = ConfigStore()
    config.check()
    again = ConfigStore.from_dict(config.to_dict())
    assert again == config


def test_yaml_with_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "training:\n  batch_size: 16\n  group_size: 4\nenvironment:\n  params: {max_operand: 5}\n"
    )
    config = ConfigStore.from_yaml(path, ["training.learning_rate=2e-5", "environment.params.operation=*"])
    assert config.training.batch_size == 16
    assert config.training.learning_rate == pytest.approx(2e-5)
    assert config.environment.params == {"max_operand": 5, "operation": "*"}


@pytest.mark.parametrize(
    "override, names",
    [
        ("training.bogus=1", "training.bogus"),
        ("training.batch_size=abc", "training.batch_size"),
        ("inference.temperature=-1", "inference.temperature"),
        ("nosuch.key=1", "nosuch"),
        ("training.batch_size=30", "training.group_size"),
        ("training.num_mini_batches=5", "training.num_mini_batches"),
        ("inference.backend=sglang", "inference.backend"),
        ("inference.max_tokens=1100", "inference.max_model_len"),
        ("training.adv_estimator=ppo", "training.adv_estimator"),
        ("learner.zero_stage=4", "learner.zero_stage"),
        ("critic.value_clip=-1", "critic.value_clip"),
        ("critic.num_ranks=0", "critic.num_ranks"),
        ("reference.num_ranks=0", "reference.num_ranks"),
        ("learner.micro_batch_size=0", "learner.micro_batch_size"),
        ("environment.isolation=process", "environment.isolation"),
    ],
)
def test_bad_values_name_the_key(override, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        ConfigStore.from_dict({}, [override])


@pytest.mark.parametrize(
    "overrides, names, fix",
    [
        (
            ["training.adv_estimator=rloo", "training.group_size=1"],
            "group_size",
            "training.adv_estimator=gae",
        ),
        (["training.filter_groups=true", "training.group_size=2"], None, None),
        (
            ["training.filter_groups=true", "training.group_size=1", "training.adv_estimator=gae"],
            "filter_groups",
            "training.filter_groups=false",
        ),
        (["training.target_kl=0.1", "training.kl_coef=0"], "target_kl", "training.kl_coef=0.1"),
        (
            ["learner.lora_rank=8", "learner.strategy=deepspeed", "learner.zero_stage=3"],
            "lora_rank",
            "learner.zero_stage=2",
        ),
        (
            ["ray.colocate_models=true", "critic.num_ranks=2", "training.adv_estimator=gae"],
            r"critic\.num_ranks=2 .*learner\.num_ranks=1",
            "learner.num_ranks=2",
        ),
        (
            ["ray.colocate_models=true", "reference.num_ranks=3", "learner.num_ranks=2"],
            r"reference\.num_ranks=3",
            "learner.num_ranks=3",
        ),
    ],
)
def test_impossible_algorithm_combinations_fail_early(overrides, names, fix):
    if names is None:
        ConfigStore.from_dict({}, overrides)
        return
    with pytest.raises(ConfigError, match=names):
        ConfigStore.from_dict({}, overrides)
    ConfigStore.from_dict({}, [*overrides, fix])  # and the fix the message points to works


def test_assignment_is_validated_like_the_seed_api():
    config = ConfigStore()
    config.training.learning_rate = 1e-5
    config.inference.max_tokens = 128
    assert config.training.learning_rate == 1e-5
    with pytest.raises(ConfigError, match="batch_size"):
        config.training.batch_size = "many"
    with pytest.raises(ConfigError, match="unknown key|no_such"):
        config.training.no_such = 1


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ConfigStore.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        ConfigStore.from_yaml(bad)


def test_make_config_builder():
    config = make_config(training={"batch_size": 8, "group_size": 2})
    assert config.training.batch_size == 8


def test_config_imports_without_torch_ray_or_vllm():
    code = textwrap.dedent(
        """
        import sys
        import rayrl.config, rayrl
        rayrl.ConfigStore().check()
        heavy = [m for m in ("torch", "ray", "vllm") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_job_configs_are_valid():
    from pathlib import Path

    jobs = sorted(Path(__file__).resolve().parents[2].joinpath("jobs").glob("*.yaml"))
    assert jobs
    for job in jobs:
        ConfigStore.from_yaml(job)


def test_keys_from_other_ray_trainers_are_rejected_with_the_keys_to_use():
    config = ConfigStore()
    with pytest.raises(ConfigError, match="ray.num_actors: unknown key.*inference.num_engines"):
        config.ray.num_actors = 4
    with pytest.raises(ConfigError, match="ray.num_actors: unknown key.*learner.num_ranks"):
        ConfigStore.from_dict({}, overrides=["ray.num_actors=4"])
    config.ray.use_ray = False
    with pytest.raises(ConfigError, match="ray.use_ray=false.*local single-node Ray"):
        config.check()


@pytest.mark.parametrize(
    "old, new",
    [
        ("training.num_learners", "learner.num_ranks"),
        ("training.num_references", "reference.num_ranks"),
        ("training.micro_batch_size", "learner.micro_batch_size"),
        ("training.strategy", "learner.strategy"),
        ("training.lora_rank", "learner.lora_rank"),
    ],
)
def test_keys_that_moved_to_a_role_section_say_where_they_went(old, new):
    with pytest.raises(ConfigError, match=rf"{old}: unknown key.*{new}"):
        ConfigStore.from_dict({}, overrides=[f"{old}=2"])
    section, key = old.split(".")
    with pytest.raises(ConfigError, match=rf"{old}: unknown key.*{new}"):
        setattr(getattr(ConfigStore(), section), key, 2)


def test_each_model_role_gets_its_own_section():
    config = ConfigStore.from_dict(
        {"learner": {"micro_batch_size": 4, "num_ranks": 2}, "reference": {"micro_batch_size": 32}},
        overrides=["critic.micro_batch_size=8", "critic.strategy=deepspeed"],
    )
    assert (config.learner.micro_batch_size, config.reference.micro_batch_size) == (4, 32)
    assert (config.critic.micro_batch_size, config.critic.strategy, config.learner.strategy) == (
        8,
        "deepspeed",
        "torch",
    )
    assert "micro_batch_size" not in type(config.training).model_fields
    assert set(config.to_dict()) >= {"training", "learner", "reference", "critic"}


@pytest.mark.parametrize("role", ["learner", "critic"])
def test_a_token_budget_per_pass_needs_the_torch_strategy(role):
    config = ConfigStore.from_dict({}, overrides=[f"{role}.max_tokens_per_pass=4096"])
    assert getattr(config, role).max_tokens_per_pass == 4096
    with pytest.raises(ConfigError, match=rf"{role}.max_tokens_per_pass needs {role}.strategy=torch"):
        ConfigStore.from_dict(
            {}, overrides=[f"{role}.max_tokens_per_pass=4096", f"{role}.strategy=deepspeed"]
        )
