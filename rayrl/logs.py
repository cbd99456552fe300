"""Log lines from inside the actors.

The driver's `logging` level decides what the user sees. Ray starts actors in fresh
processes with logging unset, so the trainer hands the driver's level to them in
$RAYRL_LOG_LEVEL and each role calls `configure_logging()` once: a DEBUG run then
shows tool parsing and tool calls from the environment actors too, prefixed by Ray
with the actor's name and pid.
"""

from __future__ import annotations

import logging
import os

LEVEL_VAR = "RAYRL_LOG_LEVEL"


def driver_level() -> str:
    """The level name actors should log at: the driver's effective level for rayrl."""
    return logging.getLevelName(logging.getLogger("rayrl").getEffectiveLevel())


def configure_logging() -> None:
    """In an actor, log rayrl's records at $RAYRL_LOG_LEVEL to stderr (no-op when unset)."""
    level = os.environ.get(LEVEL_VAR)
    log = logging.getLogger("rayrl")
    if not level or getattr(log, "_rayrl_configured", False):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    log._rayrl_configured = True
