"""Environments in their own actors: a crash, a hang or an exception ends one episode only."""

import asyncio
import itertools
import os
import time

import pytest

from rayrl.actors.env_host import EnvironmentFailure, EnvironmentPool
from rayrl.config import EnvironmentConfig
from rayrl.envs import BaseEnvironment
from rayrl.trainer import RayPPOTrainer, _ship_by_value
from tests.ray.test_trainer import tiny_config


class FragileEnv(BaseEnvironment):
    """Misbehaves in `step` as its task says: exit the process, hang, raise, or finish with reward 1."""

    _draws = itertools.count()

    def sample_task(self, rng):
        return ["crash", "hang", "ok"][next(self._draws) % 3]

    def reset(self, task=None):
        self.task = task
        return f"task {task}: say anything"

    def step(self, action):
        if self.task == "crash":
            os._exit(3)
        if self.task == "hang":
            time.sleep(3600)
        if self.task == "raise":
            raise ValueError("broken environment")
        return "", 1.0, True, {"pid": os.getpid()}


_ship_by_value(FragileEnv)


def _pool(isolation="actor", size=2, timeout=2.0) -> EnvironmentPool:
    cfg = EnvironmentConfig(isolation=isolation, step_timeout_s=timeout)
    return EnvironmentPool(cfg, FragileEnv, size)


async def _episode(pool: EnvironmentPool, task: str):
    env = await pool.acquire()
    try:
        await env.reset(task)
        return await env.step("hello")
    finally:
        await pool.release(env)


def test_hosts_are_separate_processes_reused_across_episodes(ray_local):
    async def main():
        pool = _pool(size=2)
        pool.start()
        await pool.wait_ready()
        first = await asyncio.gather(*(_episode(pool, "ok") for _ in range(2)))
        again = await asyncio.gather(*(_episode(pool, "ok") for _ in range(4)))  # waits for free hosts
        pool.shutdown()
        return first, again

    first, again = asyncio.run(main())
    pids = {info["pid"] for _, _, _, info in first}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {info["pid"] for _, _, _, info in again} == pids  # no new processes, at most 2 alive


def test_crash_and_hang_end_their_own_episode_and_hosts_are_replaced(ray_local):
    async def main():
        pool = _pool(size=3, timeout=2.0)
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(_episode(pool, t) for t in ("crash", "hang", "ok")), return_exceptions=True
        )
        seconds = time.perf_counter() - t0
        after = await asyncio.gather(*(_episode(pool, "ok") for _ in range(3)))
        restarts, alive = pool.restarts, pool.alive
        pool.shutdown()
        return results, seconds, after, restarts, alive

    (crash, hang, ok), seconds, after, restarts, alive = asyncio.run(main())
    assert isinstance(crash, EnvironmentFailure) and "process died" in str(crash)
    assert isinstance(hang, EnvironmentFailure) and "timed out after 2s" in str(hang)
    assert ok[1] == 1.0 and seconds < 30
    assert restarts == 2 and alive == 3
    assert all(r[1] == 1.0 for r in after)


@pytest.mark.parametrize("isolation", ["actor", "inline"])
def test_an_environment_exception_becomes_a_clear_failure(ray_local, isolation):
    async def main():
        pool = _pool(isolation=isolation, size=1)
        with pytest.raises(EnvironmentFailure, match="step failed: ValueError: broken environment"):
            await _episode(pool, "raise")
        result = await _episode(pool, "ok")  # an exception is not a dead host: it is reused
        restarts = pool.restarts
        pool.shutdown()
        return result, restarts

    result, restarts = asyncio.run(main())
    assert result[1] == 1.0 and restarts == 0


def test_training_goes_on_when_environments_crash_and_hang(ray_local, tiny_model, tmp_path):
    """Each step has a group whose environment kills its process and one that hangs: those
    episodes end with errors, the others score, and the next step runs on fresh hosts."""
    FragileEnv._draws = itertools.count()
    config = tiny_config(
        tiny_model,
        training={"num_epochs": 2, "batch_size": 6, "group_size": 2, "kl_coef": 0.0},
        environment={"max_turns": 1, "step_timeout_s": 3.0, "isolation": "actor"},
        checkpoint={"run_dir": str(tmp_path), "save_final": False},
    )
    trainer = RayPPOTrainer(config, environment=FragileEnv)
    try:
        history = trainer.fit()
    finally:
        trainer.cleanup()
    for step, row in enumerate(history, start=1):
        assert row["env_errors"] == 4
        assert row["episodes"] == 6 and row["reward_mean"] == pytest.approx(2 / 6)
        assert row["env_restarts"] == 4 * step
