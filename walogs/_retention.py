"""What named cursors pin: which segments a checkpoint may delete, which cursors are lost, how far each lags.

The one home of the retention rule. A checkpoint deletes, oldest
first, the completed segments whose every LSN is at most the limit it was
given and at most every live cursor's position; past
``WalConfig.max_retained_bytes`` it deletes further (still only within its
limit), and the cursors whose uncommitted entries that deletes are *lost*.

Lost is not a flag that could disagree with the log: a cursor is lost when
the first LSN it has not committed (``position + 1``) is older than the
oldest LSN the log still stores. Deletion is durable (the directory is
synced after each unlink) and goes oldest first, so the state survives any
crash exactly as the deletions did. A lost cursor pins nothing; committing
``first_lsn - 1`` makes it live again.

A checkpoint holds an exclusive ``flock`` on the log directory from
reading the positions to its last deletion; creating a cursor holds it
too, from choosing its position to the file's rename. So a cursor is
either seen by a checkpoint, or created after its deletions and placed
after them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from walogs import _cursor_file, _floor, _lock, _segments

if TYPE_CHECKING:
    from walogs._recovery import SegmentInfo

_log = logging.getLogger("walogs")


def oldest_lsn(directory: str) -> int:
    """The oldest LSN the log stores, or, when it stores none, the LSN the next entry gets (1 for a new log)."""
    for name in _segments.segment_files(directory)[0].values():
        try:
            lsn = _segments.peek_lsn(os.path.join(directory, name))
        except FileNotFoundError:
            continue  # checkpointed since the listing: the rest are newer
        if lsn is not None:
            return lsn
    return max(_floor.read_floor(directory), 1)


def is_lost(position: int, oldest: int) -> bool:
    """Whether a cursor at ``position`` lost entries: the first it has not committed is no longer stored."""
    return position + 1 < oldest


@contextlib.contextmanager
def cursors_held(directory: str) -> Iterator[None]:
    """Hold the log directory's ``flock``, exclusively: a checkpoint, or a cursor being created.

    The directory itself, which always exists (no writer has to make a
    ``cursors`` folder for this); nothing else locks it.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield  # the caller's own checks say what is wrong (a closed Wal, a removed log)
        return
    generation = _lock.fork_generation()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        # Unlocked explicitly: a child forked meanwhile holds a copy of fd, and a flock lasts
        # until the last copy closes. A forked child that leaves the block never unlocks.
        if _lock.fork_generation() == generation:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def positions(directory: str) -> dict[str, int]:
    """Every cursor's committed position, read without taking any cursor."""
    found = {}
    for name in _cursor_file.names(directory):
        record = _cursor_file.read(_cursor_file.path_of(directory, name))
        if record is not None:  # dropped since the listing
            found[name] = record.position
    return found


@dataclass
class Plan:
    """What one checkpoint deletes, and whom that makes lost."""

    victims: int
    lost: list[tuple[str, int]] = field(default_factory=list)
    """(cursor, position) of each live cursor whose uncommitted entries the victims hold."""

    def report(self, directory: str, deleted: Sequence[SegmentInfo], cap: Optional[int]) -> None:
        """Log a warning for each cursor the deletion of ``deleted`` made lost."""
        if not deleted:
            return
        last = max(seg.last_lsn for seg in deleted)
        for name, position in self.lost:
            if position < last:
                _log.warning(
                    "%s: cursor %r is lost: the log passed max_retained_bytes (%s bytes), so checkpoint "
                    "deleted LSNs up to %d, and the cursor had committed only up to %d (LSN %d is the first "
                    "it will never see); its iter/follow raise CursorLostError until it commits first_lsn - 1",
                    directory, name, cap, last, position, position + 1,
                )


def plan(directory: str, completed: Sequence[SegmentInfo], active_end: int, active_first: int,
         applied_up_to: Optional[int], cap: Optional[int]) -> Plan:
    """How many of ``completed`` (oldest first) a checkpoint deletes, given the cursors now.

    ``applied_up_to`` None: as far as every live cursor allows (no cursor:
    nothing), and past the cap as far as needed. Call with the cursors
    folder held exclusively (:func:`cursors_held`).
    """
    cursors = positions(directory)
    if applied_up_to is None and not cursors:
        return Plan(0)
    oldest = next((s.first_lsn for s in completed if s.first_lsn), active_first) or oldest_lsn(directory)
    live = {name: pos for name, pos in cursors.items() if not is_lost(pos, oldest)}
    pin = min(live.values(), default=None)
    if applied_up_to is None:
        limit = pin if pin is not None else 0
        bound = 1 << 64  # the cap may go past every cursor
    else:
        limit = applied_up_to if pin is None else min(applied_up_to, pin)
        bound = applied_up_to
    victims = 0
    for seg in completed:
        if seg.last_lsn > limit:
            break
        victims += 1
    if cap is not None:
        kept = sum(seg.end for seg in completed[victims:]) + active_end
        while victims < len(completed) and kept > cap and completed[victims].last_lsn <= bound:
            kept -= completed[victims].end
            victims += 1
    deleted_up_to = max((seg.last_lsn for seg in completed[:victims]), default=0)
    lost = sorted((name, pos) for name, pos in live.items() if pos < deleted_up_to)
    return Plan(victims, lost)


@dataclass(frozen=True)
class CursorInfo:
    """A cursor as ``walogs info`` and ``stats()`` show it."""

    name: str
    position: int
    lost: bool
    lag: int
    """Entries after the position up to the visible end."""
    lag_bytes: int
    """Bytes of the segments holding entries after the position (what the cursor keeps on disk)."""
    owned: bool
    owner_pid: Optional[int]


def describe(directory: str, durable_lsn: int) -> list[CursorInfo]:
    """Every cursor's state, read without taking any cursor."""
    spans = []  # (first LSN or 0, bytes) of each segment, oldest first
    for name in _segments.segment_files(directory)[0].values():
        path = os.path.join(directory, name)
        try:
            first = _segments.peek_lsn(path) or 0
            size = os.stat(path).st_size
        except FileNotFoundError:
            continue
        spans.append((first, size))
    oldest = next((first for first, _ in spans if first), 0) or max(_floor.read_floor(directory), 1)
    # Each segment's last LSN: one before the next stored segment's first; the visible end for the newest.
    lasts = []
    following = durable_lsn + 1
    for first, _ in reversed(spans):
        lasts.append(following - 1 if first else 0)
        following = first or following
    lasts.reverse()
    found = []
    for name in _cursor_file.names(directory):
        path = _cursor_file.path_of(directory, name)
        record = _cursor_file.read(path)
        if record is None:
            continue
        position = record.position
        lag_bytes = sum(size for (first, size), last in zip(spans, lasts) if first and last > position)
        owned = _lock.file_is_locked(path)
        found.append(CursorInfo(name, position, is_lost(position, oldest), max(durable_lsn - position, 0),
                                lag_bytes, owned, record.owner_pid if owned else None))
    return found
