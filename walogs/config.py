"""Value types: the writer's configuration, what recovery found at open, and what build runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, get_args

DEFAULT_MAX_SEGMENT_SIZE = 64 * 1024 * 1024
"""Default size at which the writer starts a new segment."""

PREALLOCATE_MAX = 64 * 1024 * 1024
"""Largest prepared segment: a larger ``max_segment_size`` (or None) grows the file past this."""

SyncMode = Literal["always", "interval", "none"]
"""The type of ``WalConfig.sync``: a type checker flags any other string."""
SYNC_MODES: tuple[SyncMode, ...] = get_args(SyncMode)
"""The values of ``WalConfig.sync``."""

MIN_SYNC_INTERVAL = 0.001
"""Shortest ``sync_interval`` in seconds: more often than this, use ``sync="always"``."""
MAX_SYNC_INTERVAL = 86400.0
"""Longest ``sync_interval`` in seconds (one day): rarer syncs, use ``sync="none"`` and ``sync()``."""


@dataclass(frozen=True)
class WalConfig:
    """How the writer rotates segments and when it makes entries durable.

    ``max_segment_size``: bytes at which a new segment starts (None: only by
    ``rotate()``). ``sync``: ``"always"`` (fdatasync before ``append``
    returns), ``"interval"`` (a background sync every ``sync_interval``
    seconds, from MIN_SYNC_INTERVAL to MAX_SYNC_INTERVAL) or ``"none"``
    (only on ``sync()``, ``rotate()``, ``close()``). ``max_retained_bytes``:
    the most bytes of segments named cursors may keep from a checkpoint
    (None: no limit); past it, checkpoint deletes anyway and the cursors
    that fell behind are lost. ``preallocate``: write into segments
    prepared with zeros ahead of time (None: for ``sync="always"``, where
    the filesystem gains from it). Invalid values raise ValueError here, not later.
    """

    max_segment_size: Optional[int] = DEFAULT_MAX_SEGMENT_SIZE
    sync: SyncMode = "always"
    sync_interval: float = 0.05
    max_retained_bytes: Optional[int] = None
    preallocate: Optional[bool] = None

    def __post_init__(self) -> None:
        cap = self.max_retained_bytes
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise ValueError(f"max_retained_bytes must be an int >= 0 or None, not {cap!r}")
        size = self.max_segment_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ValueError(f"max_segment_size must be a positive int or None, not {size!r}")
        if self.preallocate is not None and not isinstance(self.preallocate, bool):
            raise ValueError(f"preallocate must be True, False or None, not {self.preallocate!r}")
        if self.sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {', '.join(map(repr, SYNC_MODES))}, not {self.sync!r}")
        interval = self.sync_interval
        if (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not math.isfinite(interval)
            or not MIN_SYNC_INTERVAL <= interval <= MAX_SYNC_INTERVAL
        ):
            # The background thread waits this long between syncs; a longer wait overflows the
            # thread's timer (OverflowError there, where no one sees it).
            raise ValueError(
                f"sync_interval must be a number of seconds from {MIN_SYNC_INTERVAL:g} to "
                f"{MAX_SYNC_INTERVAL:g} (one day), not {interval!r}"
            )


@dataclass(frozen=True)
class TailState:
    """What recovery found at the end of the last segment at open.

    ``truncated_at`` is the byte offset in the last segment where a torn
    tail was cut off when the writer opened, or None when the tail was clean.
    """

    truncated_at: Optional[int] = None
    CLEAN: ClassVar[TailState]

    @property
    def clean(self) -> bool:
        """True when recovery cut nothing."""
        return self.truncated_at is None


TailState.CLEAN = TailState(None)


@dataclass(frozen=True)
class BuildInfo:
    """What this installation of walogs runs: ``walogs.BUILD_INFO``.

    ``implementation`` is ``walogs.IMPLEMENTATION`` ("cython" or "python");
    ``codec``, ``writer`` and ``shared_writer`` (``Wal.open(..., shared=True)``)
    name the modules in use; ``crc`` is the library
    that computes CRC-32 ("libdeflate", "zlib", or "zlib (Python)" for the
    fallback); ``fallback`` says why a compiled module is not in use (None
    when both are).
    """

    implementation: str
    codec: str
    writer: str
    crc: str
    fallback: Optional[str]
    shared_writer: str = "walogs._shared_writer_py"

    def describe(self) -> str:
        """One line for ``walogs info`` and bug reports."""
        line = (f"{self.implementation} (codec {self.codec}, writer {self.writer}, shared writer "
                f"{self.shared_writer}, CRC-32 from {self.crc})")
        return line if self.fallback is None else f"{line}; {self.fallback}"
