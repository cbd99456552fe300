"""The committed `ray up` configs pass Ray's own preparation and schema validation."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["ray_cluster.yaml", "ray_cluster_gpu.yaml"])
def test_ray_accepts_the_cluster_config(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / name).read_text()))
    validate_config(config)
    assert config["file_mounts"] == {"/opt/rayrl": "."}


def test_the_gpu_config_has_a_gpu_worker_type():
    config = yaml.safe_load((ROOT / "ray_cluster_gpu.yaml").read_text())
    workers = [t for t in config["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
    assert workers and all(t.get("max_workers", 0) >= 1 for t in workers)
    assert any("RAYRL_EXTRA=gpu" in c for c in config["setup_commands"])
