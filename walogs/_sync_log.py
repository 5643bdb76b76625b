"""What the writers say about their fdatasync calls: the window their stats cover, and the slow-sync warning.

Imports nothing from walogs: all four writers (compiled and Python, exclusive
and shared) import it, and ``_stats`` reads their windows.
"""

from __future__ import annotations

import logging
import os

SYNC_WINDOW = 256
"""How many of a writer's latest fdatasync durations its stats' percentiles cover."""
SLOW_SYNC_SECONDS = 1.0
"""An fdatasync slower than this is logged as a warning on the ``walogs`` logger."""
_log = logging.getLogger("walogs")


def slow_sync(fd: int, seconds: float) -> None:
    """Warn that an fdatasync of ``fd`` took ``seconds`` (the writers call it only past SLOW_SYNC_SECONDS)."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        path = f"descriptor {fd}"
    _log.warning("%s: fdatasync took %.2f s (slower than %g s): appends waited that long for durability; "
                 "the disk is overloaded or failing (check its health and what else writes to it)",
                 path, seconds, SLOW_SYNC_SECONDS)
