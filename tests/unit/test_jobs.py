"""Every job under jobs/ is a valid config whose environment builds and plays a first step."""

import random
from pathlib import Path

import pytest

from rayrl.config import ConfigStore
from rayrl.data import check_row, read_rows
from rayrl.envs import make_environment

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))


def test_there_is_a_job_per_builtin_environment_family():
    names = {ConfigStore.from_yaml(p).environment.name for p in JOBS}
    assert {
        "math_feedback",
        "text_adventure_tools",
        "conversation",
        "task",
        "action_math",
        "gym",
        "calculator_math",
        "dataset",
    } <= names


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_job_config_is_valid_and_its_environment_plays(path):
    config = ConfigStore.from_yaml(path).check()
    env = make_environment(config.environment)
    if config.data.train_files:  # the first row of its data file (paths are from the repo root)
        path = ROOT / config.data.train_files[0]
        with path.open("rb") as f:
            _, row, problem = next(read_rows(f, str(path)))
        task, problem = check_row(row, config.data)
        assert problem is None, problem
    else:
        task = env.sample_task(random.Random(0))
    first = env.reset_for(task)
    assert isinstance(first, str) and first.strip()
    observation, reward, done, info = env.step("I am not sure.")
    assert isinstance(observation, str) and isinstance(reward, float) and isinstance(done, bool)
    assert config.training.batch_size % config.training.group_size == 0
