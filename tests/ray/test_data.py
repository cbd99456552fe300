"""Data files through Ray Data on a real local Ray: the stream, its read position, the
error budget, and a JSONL file training the tiny model by config alone."""

from __future__ import annotations

import json

import pytest

from rayrl.config import ConfigError, DataConfig
from rayrl.data import DataError, DataTasks
from rayrl.trainer import RayPPOTrainer
from tests.ray.test_trainer import tiny_config


def write_sums(path, n: int, bad_every: int = 0) -> str:
    lines = []
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append(
                '{"question": "broken' if (i // bad_every) % 2 else json.dumps({"question": f"{i}?"})
            )
        else:
            lines.append(json.dumps({"question": f"What is {i} + 1?", "answer": i + 1, "id": i}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def all_cpus_held(ray_local):
    """A placement group holding every logical CPU, as a run's roles do."""
    from ray.util.placement_group import placement_group, remove_placement_group

    n = int(ray_local.cluster_resources()["CPU"])
    group = placement_group([{"CPU": 1}] * n)
    ray_local.get(group.ready(), timeout=60)
    yield
    remove_placement_group(group)


def test_the_stream_reads_every_row_once_per_epoch_and_resumes_where_it_was(tmp_path, all_cpus_held):
    path = write_sums(tmp_path / "sums.jsonl", 50)
    cfg = DataConfig(train_files=[path], prompt_key="question", shuffle_buffer=8)
    tasks = DataTasks(cfg, cfg.train_files, seed=3, model_path=None)
    first = tasks.draw(20)
    state = tasks.state()
    rest = tasks.draw(30)
    ids = [t["extra"]["id"] for t in first + rest]
    assert sorted(ids) == list(range(50)) and ids != list(range(50))  # all once, shuffled
    assert first[0]["source"].startswith(path + ":") and first[0]["answer"] == str(
        first[0]["extra"]["id"] + 1
    )
    next_epoch = [t["extra"]["id"] for t in tasks.draw(50)]
    assert tasks.epoch == 1 and sorted(next_epoch) == list(range(50)) and next_epoch != ids  # reshuffled
    # a new stream set to the saved state draws what the old one drew after it
    again = DataTasks(cfg, cfg.train_files, seed=3, model_path=None)
    again.set_state(state)
    assert [t["extra"]["id"] for t in again.draw(30)] == ids[20:]
    tasks.close()
    again.close()


def test_malformed_rows_are_counted_with_their_line_up_to_the_budget(tmp_path, all_cpus_held):
    path = write_sums(tmp_path / "sums.jsonl", 40, bad_every=10)  # lines 10, 20, 30, 40 are bad
    cfg = DataConfig(train_files=[path], prompt_key="question", shuffle=False, error_budget=4)
    tasks = DataTasks(cfg, cfg.train_files, seed=None, model_path=None)
    assert len(tasks.draw(36)) == 36 and tasks.malformed == 3  # the 4th bad line is the last
    assert len(tasks.draw(1)) == 1 and tasks.malformed == 4 and tasks.epoch == 1
    assert tasks.problems[0] == f"{path}:10: no 'answer' (data.answer_key)"
    assert tasks.problems[1].startswith(f"{path}:20: not JSON")
    tight = DataTasks(cfg.model_copy(update={"error_budget": 2}), cfg.train_files, None, None)
    with pytest.raises(DataError, match=r"3 malformed rows, more than data.error_budget=2\n.*sums.jsonl:10"):
        tight.draw(36)
    tasks.close()
    tight.close()


class Recording(RayPPOTrainer):
    """Remembers the tasks of every batch it draws."""

    def draw_tasks(self, n):
        tasks = super().draw_tasks(n)
        self.drawn = [*getattr(self, "drawn", []), *(t["extra"]["id"] for t in tasks)]
        return tasks


def test_a_jsonl_file_trains_by_config_alone_and_resumes_at_its_read_position(
    ray_local, tiny_model, tmp_path
):
    train = write_sums(tmp_path / "train.jsonl", 64, bad_every=2)  # every other row is bad
    held_out = write_sums(tmp_path / "eval.jsonl", 8)

    def config(epochs, **checkpoint):
        return tiny_config(
            tiny_model,
            environment={"name": "dataset", "max_turns": 2},
            data={
                "train_files": train,
                "eval_files": held_out,
                "prompt_key": "question",
                "answer_key": "answer",
                "max_prompt_tokens": 64,
            },
            training={
                "num_epochs": epochs,
                "batch_size": 8,
                "group_size": 2,
                "kl_coef": 0.0,
                "eval_tasks": 4,
            },
            checkpoint={"run_dir": str(tmp_path), "run_name": "data", "save_final": False, **checkpoint},
        )

    trainer = Recording(config(2, save_interval=1))
    try:
        history = trainer.fit()
        held = trainer.evaluate(4)
    finally:
        trainer.cleanup()
    assert [r["step"] for r in history] == [1, 2] and all(r["episodes"] == 8 for r in history)
    assert all(r["env_errors"] == 0 and r["data_too_long"] == 0 for r in history)
    assert history[-1]["data_malformed"] >= 1  # counted, under the budget (100)
    assert held["episodes"] == 4
    samples = [json.loads(line) for line in (tmp_path / "data" / "samples.jsonl").read_text().splitlines()]
    text = "".join(s["text"] for s in samples[0]["episodes"][0]["spans"])
    assert "What is " in text and "+ 1?" in text  # a row of the file, as the user turn
    latest = tmp_path / "data" / "checkpoints" / "step_000002"
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["task_sampler"]["data"]["position"] >= 8  # the read position is saved
    assert state["step"] == 2 and state["weight_version"] == 2
    assert (latest / "policy" / "model.safetensors").is_file() and (latest / "learner" / "rank0.pt").is_file()
    with pytest.raises(ConfigError, match="checkpoint.resume=auto"):
        RayPPOTrainer(config(3)).setup()  # a run with checkpoints, before any actor starts

    # a new trainer resumes the run: its third step draws the rows an uninterrupted
    # stream draws next, none repeated and none skipped
    resumed = Recording(config(3, save_interval=1, resume="auto"))
    try:
        rows = resumed.fit()
    finally:
        resumed.cleanup()
    stream = DataTasks(resumed.config.data, [train], resumed.config.training.seed, None)
    expected = [t["extra"]["id"] for t in stream.draw(12)]
    stream.close()
    assert trainer.drawn == expected[:8] and resumed.drawn == expected[8:]
    assert [r["step"] for r in rows] == [1, 2, 3]
