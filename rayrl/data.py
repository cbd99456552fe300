"""Tasks from the user's files, read and checked by Ray Data, streamed to the run.

    rayrl train jobs/x.yaml environment.name=dataset data.train_files=train.jsonl \\
        data.prompt_key=question data.answer_key=answer

- Files: JSON lines (`.jsonl`, `.json`), Parquet (`.parquet`), Arrow (`.arrow`), and
  Hugging Face `datasets` folders written by `save_to_disk` (their Arrow files); lists
  and globs of them.
- Each row becomes a task `{"prompt", "answer", "extra", "source"}`: the prompt a string or
  chat messages, the answer a string, `extra` the other columns (or `extra_keys`), and
  `source` its `file:line`.
- Reading and checking happen in Ray Data read tasks (`TaskFiles`), file by file in
  blocks. The driver iterates the stream a batch at a time (`DataTasks`), so it never
  holds the dataset, and the first batch comes as soon as the first block is read,
  whatever the file's size.
- Rows that are malformed (a line that is not JSON, a missing key, a wrong type) are
  skipped and counted with their `file:line`, up to `data.error_budget`; one more stops
  the run with the list. Rows whose prompt is longer than `data.max_prompt_tokens` are
  dropped and counted (`data_too_long`).
- Each epoch is shuffled by `training.seed` and the epoch: the order of the files, and
  the rows within a buffer of `data.shuffle_buffer`. The read position (epoch, rows
  consumed) is part of a checkpoint's state, so a resumed run goes on from the next row.

The read tasks ask Ray for no CPU: a run's placement group holds every logical CPU of
a local Ray, and Ray Data's tasks would otherwise wait for one forever.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rayrl.config import ConfigError, DataConfig

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".arrow": "arrow"}
ROWS_PER_BLOCK = 1024
ROLES = ("system", "user", "assistant")


class DataError(ConfigError):
    """A data file that cannot be read, or more malformed rows than `data.error_budget`."""


def expand_files(patterns: list[str]) -> list[str]:
    """The files `patterns` name: paths, globs, and `save_to_disk` folders (their Arrow
    files, in order).

    Raises:
        DataError: a pattern matches nothing, or a file of an unknown kind.
    """
    out: list[str] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if any(ch in pattern for ch in "*?["):
            found = sorted(glob.glob(str(path), recursive=True))
        elif path.is_dir():
            state = path / "state.json"  # a Hugging Face `save_to_disk` folder
            if state.is_file():
                found = [str(path / f["filename"]) for f in json.loads(state.read_text())["_data_files"]]
            else:
                found = sorted(str(p) for p in path.iterdir() if p.suffix in SUFFIXES)
        else:
            found = [str(path)] if path.is_file() else []
        if not found:
            raise DataError(f"data file {pattern!r}: no such file, folder or match")
        for name in found:
            if Path(name).suffix not in SUFFIXES:
                raise DataError(f"data file {name!r}: unknown kind (read: {', '.join(SUFFIXES)})")
        out += found
    return out


def _messages_problem(prompt: list) -> str | None:
    for i, m in enumerate(prompt):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return f"message {i} must be {{'role': one of {ROLES}, 'content': a string}}"
    if not prompt or prompt[-1]["role"] != "user":
        return "the messages must end with a user message"
    return None


def check_row(row: Any, cfg: DataConfig) -> tuple[dict | None, str | None]:
    """A row as a task, or why it is malformed: `(task, None)` or `(None, reason)`."""
    if not isinstance(row, dict):
        return None, f"a row must be an object, got {type(row).__name__}"
    if cfg.prompt_key not in row:
        return None, f"no {cfg.prompt_key!r} (data.prompt_key); the row has {sorted(row)[:8]}"
    prompt = row[cfg.prompt_key]
    if isinstance(prompt, str):
        if not prompt.strip():
            return None, f"{cfg.prompt_key!r} is empty"
    elif isinstance(prompt, list):
        problem = _messages_problem(prompt)
        if problem:
            return None, f"{cfg.prompt_key!r}: {problem}"
    else:
        return None, f"{cfg.prompt_key!r} must be a string or chat messages, got {type(prompt).__name__}"
    answer = None
    if cfg.answer_key is not None:
        if cfg.answer_key not in row:
            return None, f"no {cfg.answer_key!r} (data.answer_key)"
        answer = row[cfg.answer_key]
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            return None, f"{cfg.answer_key!r} must be a string or a number, got {type(answer).__name__}"
        answer = str(answer)
    keys = (
        cfg.extra_keys
        if cfg.extra_keys is not None
        else [k for k in row if k not in (cfg.prompt_key, cfg.answer_key)]
    )
    missing = [k for k in keys if k not in row]
    if missing:
        return None, f"no {missing[0]!r} (data.extra_keys)"
    extra = {k: row[k] for k in keys}
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as err:
        return None, f"a column cannot be handed on as JSON: {err}"
    return {"prompt": prompt, "answer": answer, "extra": extra}, None


def prompt_tokens(prompt: str | list[dict], tokenizer: Any) -> int:
    """Tokens of a prompt as the model sees it (chat messages rendered by its template)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer.encode(text, add_special_tokens=False))


def read_rows(f: Any, path: str) -> Iterator[tuple[int, Any, str | None]]:
    """`(line or row number, row, why unreadable)` of one file, numbered from 1."""
    kind = SUFFIXES[Path(path).suffix]
    if kind == "jsonl":
        for number, line in enumerate(_lines(f), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except ValueError as err:  # not JSON, or not UTF-8
                yield number, None, f"not JSON ({err})"
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    batches = pq.ParquetFile(f).iter_batches() if kind == "parquet" else _arrow_batches(f, pa)
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield number, row, None


def _lines(f: Any, chunk: int = 1 << 20) -> Iterator[bytes]:
    """A file's lines, read a chunk at a time (a big file is never in memory whole)."""
    rest = b""
    while data := f.read(chunk):
        *lines, rest = (rest + data).split(b"\n")
        yield from lines
    if rest:
        yield rest


def _arrow_batches(f: Any, pa: Any) -> Iterator[Any]:
    try:  # `save_to_disk` writes the streaming format; files written by hand may not
        yield from pa.ipc.open_stream(f)
    except pa.ArrowInvalid:
        f.seek(0)
        reader = pa.ipc.open_file(f)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(model_path: str) -> Any:
    if model_path not in _TOKENIZERS:
        from rayrl.agent.chat_tokens import load_tokenizer

        _TOKENIZERS[model_path] = load_tokenizer(model_path)
    return _TOKENIZERS[model_path]


def checked_blocks(
    f: Any, path: str, cfg: DataConfig, model_path: str | None, rows_per_block: int = ROWS_PER_BLOCK
) -> Iterator[Any]:
    """One file's rows, checked, as Arrow tables: `task` (JSON, or null), `status`
    ("ok", "malformed", "too_long"), `detail` and `source` (`file:line`)."""
    import pyarrow as pa

    limit = cfg.max_prompt_tokens
    columns: dict[str, list] = {"task": [], "status": [], "detail": [], "source": []}
    for number, row, unreadable in read_rows(f, path):
        source = f"{path}:{number}"
        task, problem = (None, unreadable) if unreadable else check_row(row, cfg)
        status, detail = ("malformed", problem) if problem else ("ok", None)
        if task is not None and limit is not None and model_path is not None:
            n = prompt_tokens(task["prompt"], _tokenizer(model_path))
            if n > limit:
                task, status, detail = None, "too_long", f"{n} prompt tokens > data.max_prompt_tokens={limit}"
        columns["task"].append(json.dumps({**task, "source": source}) if task is not None else None)
        columns["status"].append(status)
        columns["detail"].append(detail)
        columns["source"].append(source)
        if len(columns["task"]) >= rows_per_block:
            yield pa.table(columns)
            columns = {k: [] for k in columns}
    if columns["task"]:
        yield pa.table(columns)


def _datasource(files: list[str], cfg: DataConfig, model_path: str | None, seed: int | None):
    from ray.data.datasource import FileBasedDatasource, FileShuffleConfig

    class TaskFiles(FileBasedDatasource):
        """The files' rows, checked (see `checked_blocks`)."""

        def _open_input_source(self, filesystem, path, **open_args):
            if SUFFIXES[Path(path).suffix] == "jsonl":
                return super()._open_input_source(filesystem, path, **open_args)
            return filesystem.open_input_file(path)  # Parquet and Arrow need random access

        def _read_stream(self, f, path):
            yield from checked_blocks(f, path, cfg, model_path)

    shuffle = FileShuffleConfig(seed=seed) if seed is not None else None
    return TaskFiles(files, shuffle=shuffle)


class DataTasks:
    """A run's tasks from files, a batch at a time (see the module docstring).

    Args:
        cfg: the `data` section.
        files: `cfg.train_files` or `cfg.eval_files`.
        seed: the run's seed (shuffling; None reads in order).
        model_path: the tokenizer's folder (for `max_prompt_tokens`).
    """

    def __init__(self, cfg: DataConfig, files: list[str], seed: int | None, model_path: str | None):
        self.cfg = cfg
        self.files = expand_files(files)
        self.seed = seed
        self.model_path = model_path
        self.epoch = 0
        self.position = 0  # rows of this epoch's stream consumed (malformed ones included)
        self.malformed = 0
        self.too_long = 0
        self.problems: list[str] = []  # the first malformed rows, `file:line: why`
        self._rows: Iterator[dict] | None = None
        self._ok_this_epoch = 0

    # ---- the stream ----------------------------------------------------------------
    def _open(self) -> None:
        import ray.data
        from ray.data import DataContext

        self.close()
        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True  # the same order again on resume
        ctx.enable_progress_bars = False  # the run has its own progress bar
        # blocks of about a MiB reach the driver as they are read (at the default 128 MiB a
        # million-row file came back as one block, after all of it was read)
        ctx.target_max_block_size = 1 << 20
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        seed = None if self.seed is None or not self.cfg.shuffle else self.seed * 1_000_003 + self.epoch
        source = _datasource(self.files, self.cfg, self.model_path, seed)
        dataset = ray.data.read_datasource(source, num_cpus=0, concurrency=2)
        batches = iter(
            dataset.iter_batches(
                batch_size=256,
                batch_format="pyarrow",
                local_shuffle_buffer_size=self.cfg.shuffle_buffer if seed is not None else None,
                local_shuffle_seed=seed,
            )
        )
        self._batches = batches  # closed by `close`: it holds Ray Data's executor
        self._rows = (row for batch in batches for row in batch.to_pylist())
        for _ in range(self.position):  # a resumed stream goes on after the rows it used
            next(self._rows)

    def close(self) -> None:
        """Stop reading (frees Ray Data's executor)."""
        batches, self._rows = getattr(self, "_batches", None), None
        if batches is not None and hasattr(batches, "close"):
            batches.close()
        self._batches = None

    def _next(self) -> dict | None:
        if self._rows is None:
            self._open()
        try:
            row = next(self._rows)
        except StopIteration:
            return None
        self.position += 1
        return row

    def draw(self, n: int) -> list[dict]:
        """The next `n` tasks; epochs roll over.

        Raises:
            DataError: more malformed rows than `data.error_budget`, or an epoch without
                one usable row.
        """
        tasks: list[dict] = []
        while len(tasks) < n:
            row = self._next()
            if row is None:
                if self._ok_this_epoch == 0:
                    raise DataError(
                        f"no usable row in {self.files} ({self.malformed} malformed, {self.too_long} too long)"
                        + self._problem_list()
                    )
                self.epoch, self.position, self._ok_this_epoch = self.epoch + 1, 0, 0
                self._open()
                continue
            if row["status"] == "ok":
                self._ok_this_epoch += 1
                tasks.append(json.loads(row["task"]))
            elif row["status"] == "too_long":
                self.too_long += 1
            else:
                self._malformed(row)
        return tasks

    def _malformed(self, row: dict) -> None:
        self.malformed += 1
        if len(self.problems) < 20:
            self.problems.append(f"{row['source']}: {row['detail']}")
        if self.malformed > self.cfg.error_budget:
            raise DataError(
                f"{self.malformed} malformed rows, more than data.error_budget={self.cfg.error_budget}"
                + self._problem_list()
            )

    def _problem_list(self) -> str:
        return "".join(f"\n  {p}" for p in self.problems[:20])

    def first(self, n: int) -> list[dict]:
        """The first `n` usable rows in file order (held-out evaluation)."""
        self.epoch = self.position = 0
        self._open()
        try:
            out: list[dict] = []
            while len(out) < n:
                row = self._next()
                if row is None:
                    break
                if row["status"] == "ok":
                    out.append(json.loads(row["task"]))
            return out
        finally:
            self.close()

    # ---- training state ------------------------------------------------------------
    def state(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "malformed": self.malformed,
            "too_long": self.too_long,
            "ok_this_epoch": self._ok_this_epoch,
        }

    def set_state(self, state: dict[str, int]) -> None:
        """Go back (or on) to a state `state()` returned."""
        if (state["epoch"], state["position"]) == (self.epoch, self.position) and self._rows is not None:
            return
        self.epoch, self.position = state["epoch"], state["position"]
        self.malformed, self.too_long = state["malformed"], state["too_long"]
        self._ok_this_epoch = state.get("ok_this_epoch", 1)
        self.close()  # reopened at the position on the next draw

    def counters(self) -> dict[str, int]:
        return {"data_epoch": self.epoch, "data_malformed": self.malformed, "data_too_long": self.too_long}


__all__ = ["DataError", "DataTasks", "check_row", "checked_blocks", "expand_files", "read_rows"]
