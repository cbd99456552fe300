"""Data files: what a row becomes, and every kind of bad input, with file and line."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayrl.config import DataConfig
from rayrl.data import DataError, check_row, checked_blocks, expand_files, read_rows

CFG = DataConfig(prompt_key="question", answer_key="answer")


@pytest.mark.parametrize(
    "row, why",
    [
        ([1, 2], "must be an object"),
        ({"answer": "3"}, "no 'question'"),
        ({"question": "", "answer": "3"}, "empty"),
        ({"question": 7, "answer": "3"}, "must be a string or chat messages, got int"),
        ({"question": [{"role": "user"}], "answer": "3"}, "message 0"),
        ({"question": [{"role": "assistant", "content": "hi"}], "answer": "3"}, "end with a user message"),
        ({"question": "1+2?"}, "no 'answer'"),
        ({"question": "1+2?", "answer": None}, "string or a number, got NoneType"),
        ({"question": "1+2?", "answer": True}, "got bool"),
    ],
)
def test_a_malformed_row_says_why(row, why):
    task, problem = check_row(row, CFG)
    assert task is None and why in problem


def test_a_row_becomes_a_task_with_its_other_columns():
    task, problem = check_row({"question": "1+2?", "answer": 3, "level": 2, "tags": ["a"]}, CFG)
    assert problem is None and task == {"prompt": "1+2?", "answer": "3", "extra": {"level": 2, "tags": ["a"]}}
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+2?"}]
    task, _ = check_row(
        {"question": chat, "answer": "3", "level": 2}, DataConfig(prompt_key="question", extra_keys=[])
    )
    assert task["prompt"] == chat and task["extra"] == {}
    _, problem = check_row(
        {"question": "q", "answer": "3"}, DataConfig(prompt_key="question", extra_keys=["level"])
    )
    assert "no 'level'" in problem


def write_jsonl(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_json_lines_keep_their_line_numbers_and_bad_lines_are_reported(tmp_path):
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            json.dumps({"question": "1+1?", "answer": 2}),
            "{not json",
            "",
            json.dumps({"question": "2+2?"}),
            json.dumps({"question": "3+3?", "answer": 6}),
        ],
    )
    with pa.input_stream(path) as f:
        (block,) = list(checked_blocks(f, path, CFG, None))
    rows = block.to_pylist()
    assert [(r["status"], r["source"].rsplit(":", 1)[1]) for r in rows] == [
        ("ok", "1"),
        ("malformed", "2"),
        ("malformed", "4"),
        ("ok", "5"),
    ]
    assert "not JSON" in rows[1]["detail"] and "no 'answer'" in rows[2]["detail"]
    assert json.loads(rows[3]["task"]) == {
        "prompt": "3+3?",
        "answer": "6",
        "extra": {},
        "source": f"{path}:5",
    }


def test_prompts_over_the_token_limit_are_dropped_and_counted(tmp_path, default_model):
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [json.dumps({"question": "1+1?", "answer": 2}), json.dumps({"question": "word " * 300, "answer": 1})],
    )
    cfg = DataConfig(prompt_key="question", max_prompt_tokens=64)
    with pa.input_stream(path) as f:
        rows = [r for block in checked_blocks(f, path, cfg, default_model) for r in block.to_pylist()]
    assert [r["status"] for r in rows] == ["ok", "too_long"] and "> data.max_prompt_tokens=64" in rows[1][
        "detail"
    ]


def test_parquet_arrow_and_save_to_disk_folders_are_read_in_order(tmp_path):
    table = pa.table({"question": [f"{i}+1?" for i in range(5)], "answer": [str(i + 1) for i in range(5)]})
    pq.write_table(table, tmp_path / "t.parquet")
    folder = tmp_path / "hf"
    folder.mkdir()
    with (
        pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as w,
    ):
        w.write_table(table)
    (folder / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]})
    )
    files = expand_files([str(tmp_path / "*.parquet"), str(folder)])
    assert [f.rsplit("/", 1)[1] for f in files] == ["t.parquet", "data-00000-of-00001.arrow"]
    for path in files:
        with pa.memory_map(path) as f:
            rows = list(read_rows(f, path))
        assert [(n, r["question"]) for n, r, _ in rows] == [(i + 1, f"{i}+1?") for i in range(5)]


def test_missing_or_unknown_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        expand_files([str(tmp_path / "nope.jsonl")])
    with pytest.raises(DataError, match="no such file, folder or match"):
        expand_files([str(tmp_path / "*.jsonl")])
    (tmp_path / "t.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown kind"):
        expand_files([str(tmp_path / "t.csv")])


def test_the_dataset_environment_checks_answers_and_gives_feedback_turns():
    from rayrl.config import ConfigError, EnvironmentConfig
    from rayrl.envs import make_environment

    env = make_environment(EnvironmentConfig(name="dataset", max_turns=2))
    task = {"prompt": "What is 2 + 3?", "answer": "5", "extra": {}, "source": "f.jsonl:1"}
    assert env.reset(task) == "What is 2 + 3?"
    obs, reward, done, info = env.step("2 + 3 = 6")
    assert (reward, done, info["correct"]) == (0.0, False, False) and "Try again" in obs
    obs, reward, done, info = env.step("It is 5.")
    assert (reward, done, info["correct"], info["first_try"]) == (0.5, True, True, False)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    assert env.reset({"prompt": chat, "answer": "Paris", "extra": {}}) == chat
    assert env.step("paris.")[1] == 1.0  # a text answer: exact after normalising
    with pytest.raises(ConfigError, match="data.train_files"):
        env.sample_task(None)
