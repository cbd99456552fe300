"""Full-state checkpoints of a run, and finding the one to resume from.

A checkpoint is a folder `<run>/checkpoints/step_000010/`:

    policy/              the policy in Hugging Face format (vLLM serves it; engines restart from it)
    learner/rank0.pt     each learner rank's module, optimizer and RNG state (torch strategy),
    learner/deepspeed/   or DeepSpeed's own checkpoint (deepspeed strategy)
    critic/, critic_state/   the critic's backbone + value head, and its training state (gae)
    trainer_state.json   step, weight version, KL coefficient, learning rate, task-sampler RNG

Every part is written into `.step_000010.tmp/`, which is renamed to `step_000010/` only when
all of it is on disk, so a crash mid-write never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from rayrl.config import CheckpointConfig, ConfigError

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointStore:
    """The checkpoints folder of one run.

    Args:
        run_path: the run directory.
        keep_last: how many complete checkpoints to keep (None: all).
    """

    def __init__(self, run_path: Path, keep_last: int | None = None):
        self.root = Path(run_path) / "checkpoints"
        self.keep_last = keep_last

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.root.iterdir()
            if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
        ]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        done = self.complete()
        return done[-1] if done else None

    def begin(self, step: int) -> Path:
        """An empty temporary folder to write step `step`'s checkpoint into."""
        tmp = self.root / f".step_{step:06d}.tmp"
        if tmp.exists():  # left by a crash during an earlier write
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, tmp: Path, step: int, state: dict[str, Any]) -> Path:
        """Write the trainer state last, rename `tmp` into place, prune; returns the checkpoint."""
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1))
        final = self.root / f"step_{step:06d}"
        if final.exists():  # the same step saved again (a resumed run repeating its last save)
            shutil.rmtree(final)
        tmp.rename(final)
        self.prune()
        return final

    def prune(self) -> list[Path]:
        """Delete complete checkpoints beyond `keep_last` (oldest first); never the newest."""
        done = self.complete()
        if self.keep_last is None or len(done) <= self.keep_last:
            return []
        doomed = done[: len(done) - self.keep_last]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        return doomed


def read_state(checkpoint: Path) -> dict[str, Any]:
    """The trainer state saved in `checkpoint`."""
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def find_resume(config: CheckpointConfig, run_path: Path) -> Path | None:
    """The checkpoint `checkpoint.resume` names for the run at `run_path`, or None to start fresh.

    Raises ConfigError when a path names no complete checkpoint, and when the run
    directory already has checkpoints but `resume` is unset (so nothing is overwritten
    by a run that did not mean to continue).
    """
    store = CheckpointStore(run_path)
    if config.resume is None:
        latest = store.latest()
        if latest is not None:
            raise ConfigError(
                f"run directory {run_path} already has checkpoints (newest: {latest.name}). "
                "Continue it with checkpoint.resume=auto (or checkpoint.resume=PATH for a given "
                "one), or choose a new checkpoint.run_name"
            )
        return None
    if config.resume == "auto":
        latest = store.latest()
        if latest is None:
            logger.info("checkpoint.resume=auto: %s has no complete checkpoint; starting fresh", run_path)
        return latest
    path = Path(config.resume).expanduser().resolve()
    if (path / STATE_FILE).is_file():
        return path
    latest = CheckpointStore(path).latest()
    if latest is None:
        raise ConfigError(
            f"checkpoint.resume={config.resume}: no complete checkpoint there (a checkpoint folder "
            f"holds {STATE_FILE}; a run directory holds checkpoints/step_*)"
        )
    return latest


def run_path_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (`<run>/checkpoints/step_N`)."""
    return Path(checkpoint).parent.parent
