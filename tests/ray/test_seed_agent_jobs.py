"""Every example under jobs/seed_agents runs to the end (tiny model, few episodes).

The examples are the agent guide's snippets with the import path and the model changed;
`RAYRL_EXAMPLE_MODEL` and `RAYRL_EXAMPLE_EPISODES` shrink them to a test's size. Slow
(each example starts a training run): `pytest -m slow`.
"""

import runpy
from pathlib import Path

import pytest

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs" / "seed_agents").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_example_runs(path, ray_local, tiny_model, tmp_path, monkeypatch):
    import asyncio

    monkeypatch.setenv("RAYRL_EXAMPLE_MODEL", tiny_model)
    monkeypatch.setenv("RAYRL_EXAMPLE_EPISODES", "8")
    monkeypatch.chdir(tmp_path)  # run directories land here
    module = runpy.run_path(str(path), run_name="example")
    entry = module.get("main") or module["quick_example"]
    result = asyncio.run(entry())
    assert result is not None
