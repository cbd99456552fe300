"""`ray up ray_cluster.yaml` for real: sshd on 127.0.0.1, the local node provider, a job
submitted with the cluster's token, its logs, `ray down` (scripts/ray_up_local.sh).
Needs root and port 22 free; stops a Ray already running on this machine (`ray up` runs
`ray stop` on the head). Run alone: `pytest -m cluster`."""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ray_up_local.sh"


@pytest.mark.cluster
def test_ray_up_runs_a_job_and_comes_down():
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=3000)
    print(done.stdout[-4000:], done.stderr[-4000:])
    assert done.returncode == 0
    assert "job status: succeeded" in done.stdout and "== rayrl summary ==" in done.stdout
