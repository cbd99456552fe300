"""Placement groups on a real local Ray."""

import time

import pytest

from rayrl import placement
from tests.conftest import make_config


class Echo:
    def __init__(self, value):
        self.value = value

    def get(self):
        import ray

        return self.value, ray.get_runtime_context().get_placement_group_id()


def test_roles_follow_the_config():
    roles = placement.plan_roles(make_config(inference={"num_engines": 2}), use_gpu=False)
    assert [(r.name, r.count, r.gpus) for r in roles] == [
        ("rollout", 2, 0.0),
        ("learner", 1, 0.0),
        ("reference", 1, 0.0),
        ("agent_loop", 1, 0.0),
    ]
    no_kl = placement.plan_roles(make_config(training={"kl_coef": 0.0}), use_gpu=True)
    assert "reference" not in [r.name for r in no_kl]
    assert all(r.gpus == 1.0 for r in no_kl if r.name != "agent_loop")


def test_cpu_layout_places_actors_in_its_group(ray_local):
    roles = placement.plan_roles(make_config(), use_gpu=False)
    layout = placement.RolePlacement(roles, timeout_s=30)
    try:
        actor = layout.spawn("learner", Echo, 42)
        value, pg_id = ray_local.get(actor.get.remote())
        assert value == 42
        assert pg_id == layout.pg.id.hex()
    finally:
        layout.remove()


def test_missing_gpus_fail_at_once_with_an_explanation(ray_local):
    roles = placement.plan_roles(make_config(), use_gpu=True)
    t0 = time.perf_counter()
    with pytest.raises(
        placement.PlacementError, match=r"cannot be placed.*3 GPU.*cluster has \d+ CPU and 0 GPU"
    ):
        placement.RolePlacement(roles, timeout_s=120)
    assert time.perf_counter() - t0 < 10  # compared with the cluster's resources, not waited for


def test_colocated_models_share_the_learners_bundle(ray_local):
    cfg = make_config(
        training={"adv_estimator": "gae", "kl_coef": 0.01, "group_size": 1},
        ray={"colocate_models": True},
    )
    gpu_roles = {r.name: r for r in placement.plan_roles(cfg, use_gpu=True)}
    assert (gpu_roles["critic"].gpus, gpu_roles["critic"].host) == (pytest.approx(1 / 3), "learner")
    assert (gpu_roles["learner"].gpus, gpu_roles["learner"].host) == (pytest.approx(1 / 3), None)
    roles = placement.plan_roles(cfg, use_gpu=False)
    assert placement.num_bundles(roles) == 3  # rollout, learner (+ reference + critic), agent loop
    layout = placement.RolePlacement(roles, timeout_s=30)
    try:
        shared = layout.bundle_index["learner"][0]
        assert layout.bundle_index["reference"] == layout.bundle_index["critic"] == [shared]
        assert layout.bundles[shared]["CPU"] == pytest.approx(1.0)
        actors = [layout.spawn(name, Echo, name) for name in ("learner", "reference", "critic")]
        got = ray_local.get([a.get.remote() for a in actors])
        assert [v for v, _ in got] == ["learner", "reference", "critic"]
        assert {pg for _, pg in got} == {layout.pg.id.hex()}
    finally:
        layout.remove()
    with pytest.raises(placement.PlacementError, match=r"critic x1 in learner's bundle.*: 3 CPU, 2 GPU"):
        placement.RolePlacement(placement.plan_roles(cfg, use_gpu=True), timeout_s=2)


def test_role_groups_get_a_bundle_per_rank_or_share_the_learner_ranks(ray_local):
    groups = {
        "training": {"adv_estimator": "gae", "group_size": 1},
        "learner": {"num_ranks": 2},
        "reference": {"num_ranks": 2},
        "critic": {"num_ranks": 2},
    }
    separate = placement.plan_roles(make_config(**groups), use_gpu=True)
    assert [(r.name, r.count, r.gpus) for r in separate] == [
        ("rollout", 1, 1.0),
        ("learner", 2, 1.0),
        ("reference", 2, 1.0),
        ("critic", 2, 1.0),
        ("agent_loop", 1, 0.0),
    ]
    assert placement.num_bundles(separate) == 8
    colocated = placement.plan_roles(make_config(**groups, ray={"colocate_models": True}), use_gpu=False)
    assert placement.num_bundles(colocated) == 4
    layout = placement.RolePlacement(colocated, timeout_s=30)
    try:
        learner_bundles = layout.bundle_index["learner"]
        assert layout.bundle_index["reference"] == layout.bundle_index["critic"] == learner_bundles
        assert len(set(learner_bundles)) == 2  # rank i of each model role shares learner rank i's bundle
        actors = [layout.spawn("critic", Echo, r, index=r) for r in range(2)]
        assert [v for v, _ in ray_local.get([a.get.remote() for a in actors])] == [0, 1]
    finally:
        layout.remove()


def test_cpu_bundles_share_a_small_cluster():
    cfg = make_config()  # rollout, learner, reference, agent loop: 4 bundles
    whole = placement.plan_roles(cfg, use_gpu=False, cpu_budget=8)
    assert {r.cpus for r in whole} == {1.0}
    shared = placement.plan_roles(cfg, use_gpu=False, cpu_budget=2)
    assert {r.cpus for r in shared} == {0.5}
    assert sum(r.cpus * r.count for r in shared) <= 2
    # GPU layouts keep a whole CPU per bundle (GPU machines have cores to spare)
    assert {r.cpus for r in placement.plan_roles(cfg, use_gpu=True, cpu_budget=2)} == {1.0}
