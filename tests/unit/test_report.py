"""`rayrl report` on run directories as runs leave them (finished, interrupted, cut short),
and the TensorBoard event files, read back with TensorBoard's own reader."""

import json

import pytest

from rayrl.cli import main
from rayrl.metrics_export import TensorBoardLog
from rayrl.report import read_run, summary_table


def rows(n: int) -> list[dict]:
    return [
        {
            "step": i + 1,
            "reward_mean": 0.2 + 0.03 * i,
            "success": 0.25 + 0.03 * i,
            "kl": 0.001 * i,
            "entropy": 1.5 - 0.01 * i,
            "clip_frac": 0.0,
            "response_tokens": 320 + i,
            "episodes": 32,
            "time_step": 30.0 + i,
            "time_rollout": 8.0,
            "time_reference": 4.0,
            "time_score": 0.5,
            "time_update": 16.0 + i,
            "time_sync": 1.5,
            "engine_restarts": 1,
            "role_restarts": 0,
            "run_restarts": 0,
            "synced": True,
        }
        for i in range(n)
    ]


def write_run(path, n: int, finished: bool, cut: bool = False):
    path.mkdir()
    text = "".join(json.dumps(r) + "\n" for r in rows(n))
    (path / "metrics.jsonl").write_text(text + ('{"step": 99, "rew' if cut else ""))
    (path / "eval_before.json").write_text(json.dumps({"reward_mean": 0.1, "episodes": 64}))
    samples = {
        "step": 1,
        "episodes": [
            {
                "reward": 0.5,
                "group": 0,
                "turns": 2,
                "spans": [
                    {
                        "text": "<|im_start|>user\nWhat is 2 < 3?<|im_end|>\n<|im_start|>assistant\n",
                        "trained": False,
                    },
                    {"text": "Yes & no<|im_end|>", "trained": True},
                ],
            }
        ],
    }
    (path / "samples.jsonl").write_text(json.dumps(samples) + "\n")
    if finished:
        summary = {"eval_held_out_before": {"reward_mean": 0.1, "episodes": 64}}
        summary["eval_held_out_after"] = {"reward_mean": 0.6, "episodes": 64}
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_report_of_a_finished_run(tmp_path, capsys):
    run = write_run(tmp_path / "done", 12, finished=True)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "reward, first 5 steps   0.260" in out and "reward, last 5 steps    0.470" in out
    assert "held-out reward before  0.100 over 64 episodes" in out
    assert "held-out reward after   0.600 over 64 episodes" in out
    assert "median update s" in out and "engine_restarts 1" in out
    png = run / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    page = (run / "episodes.html").read_text()
    assert "sample episodes:" in out and "<h2>step 1</h2>" in page
    assert '<span class="trained">Yes &amp; no&lt;|im_end|&gt;</span>' in page  # escaped, marked
    assert "What is 2 &lt; 3?" in page and "reward 0.500, group 0, 2 turn(s)" in page
    from matplotlib.image import imread

    assert imread(png).shape[:2] == (640, 1200)  # six panels at 15 x 8 inches, 80 dpi


def test_report_of_an_interrupted_run_and_bad_directories(tmp_path, capsys):
    run = write_run(tmp_path / "cut", 3, finished=False, cut=True)  # died mid-line
    table = summary_table(read_run(run))
    assert "steps                   3 (no summary: interrupted or running)" in table
    assert "held-out reward after" not in table
    assert main(["report", str(run)]) == 0 and (run / "report.png").is_file()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text('{"step": 1\n{"step": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:1 is not JSON"):
        read_run(broken)


def test_tensorboard_event_files_hold_every_number_of_each_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = TensorBoardLog(tmp_path / "tb")
    for row in rows(3):
        log.record(row)
    log.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/reward_mean", "time/rollout", "time/update", "train/engine_restarts"} <= tags
    assert "train/synced" not in tags and "train/step" not in tags  # flags and the step itself
    got = [(e.step, round(e.value, 6)) for e in events.Scalars("train/reward_mean")]
    assert got == [(1, 0.2), (2, 0.23), (3, 0.26)]
