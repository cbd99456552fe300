"""Placement groups on a real local Ray."""

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


def test_missing_gpus_fail_with_an_explanation(ray_local):
    roles = placement.plan_roles(make_config(), use_gpu=True)
    with pytest.raises(placement.PlacementError, match=r"3 GPU.*cluster has \d+ CPU and 0 GPU"):
        placement.RolePlacement(roles, timeout_s=2)
