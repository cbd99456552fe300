"""The README's main job, end to end (about 10 minutes on 2 cores): it must learn."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_default_job_learns(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "rayrl.cli",
        "train",
        str(ROOT / "jobs/math_feedback.yaml"),
        f"checkpoint.run_dir={tmp_path}",
        "checkpoint.run_name=default",
        "ray.include_dashboard=false",
    ]
    subprocess.run(cmd, check=True, timeout=1800)
    summary = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert summary["wall_seconds"] < 15 * 60
    assert summary["reward_last"] >= 0.8
    spread = summary["reward_first_std"] + summary["reward_last_std"]
    assert summary["reward_last"] - summary["reward_first"] > spread
    assert (tmp_path / "default" / "final" / "model.safetensors").is_file()
