"""The LSN floor side file: where LSNs continue, and how far the log has come.

``<dir>/LSN_FLOOR`` is a durable high-water mark: the LSN the next entry
gets when no entry is stored (the *floor*), and the highest segment number
made durable. The writer records it at the first rotation and after every
one, once the new segment exists durably (its directory synced) and the
completed one is synced (with preallocation, the preparer's thread just after
the rotation; and at open, for a log that has completed segments; checkpoint
writes what it needs if that has not happened yet), so:

* every completed segment's LSNs are below the floor before a checkpoint
  may delete it: a log whose every entry was checkpointed away continues
  from the floor, never from 1 (an LSN is never handed out twice), and a
  checkpoint writes nothing (on a full disk it frees space and never needs
  any);
* a log whose newest segments were deleted or lost is found out: the
  newest segment file must be at least the recorded one, else
  WalCorruptError, like a gap in the segment numbers, instead of handing
  out the lost LSNs again. (A log that never rotated has no record:
  deleting its one segment leaves a directory that opens as a new log.)

The file holds two slots, laid out in ``walogs._format`` (FLOOR_SLOT at
FLOOR_SLOT_OFFSETS; docs/format.md describes them): a magic, a counter
(the valid slot with the higher counter is the record), the floor, the
highest segment number made durable, and a CRC-32.

An update overwrites the older slot in place and fdatasyncs: no new
space on disk, and a torn write leaves the other slot whole. The file is
created (and an old 20-byte file, magic ``WALOGSFL`` with the floor only,
replaced) by writing ``LSN_FLOOR.tmp``, fdatasync, rename, directory sync.
The Rust crate ignores the file; a directory without it opens as before
(side files are optional, docs/format.md), without the two guarantees above.
"""

from __future__ import annotations

import errno
import os
import zlib
from dataclasses import dataclass
from typing import Optional

from walogs import _io
from walogs._format import FLOOR_FILE_SIZE as FILE_SIZE
from walogs._format import FLOOR_LEGACY as _LEGACY
from walogs._format import FLOOR_LEGACY_MAGIC as _LEGACY_MAGIC
from walogs._format import FLOOR_MAGIC as _MAGIC
from walogs._format import FLOOR_NAME
from walogs._format import FLOOR_SLOT as _SLOT
from walogs._format import FLOOR_SLOT_CRC_SPAN as _SLOT_CRC_SPAN
from walogs._format import FLOOR_SLOT_OFFSETS as SLOT_OFFSETS
from walogs._format import FLOOR_TEMP_NAME as TEMP_NAME
from walogs.errors import WalCorruptError

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@dataclass(frozen=True)
class Floor:
    """What LSN_FLOOR records."""

    next_lsn: int
    """The LSN the next entry gets when no entry is stored (0: none recorded)."""
    seq: int
    """The highest segment number made durable (0: none recorded)."""
    counter: int = 0
    slot: int = -1
    """Which slot holds it (-1: the old one-record layout, or no file)."""


NO_FLOOR = Floor(0, 0)


def no_space(exc: BaseException) -> bool:
    """True for a write refused for want of space (ENOSPC, EDQUOT, EFBIG): nothing was lost."""
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


def _pack_slot(counter: int, next_lsn: int, seq: int) -> bytes:
    body = _SLOT.pack(_MAGIC, counter, next_lsn, seq, 0)
    return _SLOT.pack(_MAGIC, counter, next_lsn, seq, zlib.crc32(body[:_SLOT_CRC_SPAN]))


def _unpack_slot(raw: bytes, slot: int) -> Optional[Floor]:
    if len(raw) < _SLOT.size:
        return None
    magic, counter, next_lsn, seq, crc = _SLOT.unpack_from(raw)
    if magic != _MAGIC or crc != zlib.crc32(raw[:_SLOT_CRC_SPAN]):
        return None
    return Floor(next_lsn, seq, counter, slot)


def read(directory: str) -> Floor:
    """What LSN_FLOOR records; NO_FLOOR if there is no file.

    A file with no valid slot raises WalCorruptError: once renamed into
    place it always holds one, and an update never touches both.
    """
    path = os.path.join(directory, FLOOR_NAME)
    try:
        raw = _io.read_at(path, FILE_SIZE + 1, 0)
    except FileNotFoundError:
        return NO_FLOOR
    if len(raw) == _LEGACY.size and raw[:8] == _LEGACY_MAGIC:
        magic, next_lsn, crc = _LEGACY.unpack(raw)
        if crc == zlib.crc32(raw[:16]):
            return Floor(next_lsn, 0)
    slots = [_unpack_slot(raw[at : at + _SLOT.size], i) for i, at in enumerate(SLOT_OFFSETS)]
    valid = [s for s in slots if s is not None]
    if not valid:
        raise WalCorruptError(
            f"{path}: damaged LSN floor file ({len(raw)} bytes, no valid record); it says where LSNs "
            "continue when no entry is stored: if the segments still hold entries, move the file "
            "away and open again"
        )
    return max(valid, key=lambda s: s.counter)


def read_floor(directory: str) -> int:
    """The LSN the next entry gets when no entry is stored; 0 if no floor is recorded."""
    return read(directory).next_lsn


def remove_temp(directory: str) -> None:
    """Remove an ``LSN_FLOOR.tmp`` an interrupted update left (writer only)."""
    try:
        _io.unlink(os.path.join(directory, TEMP_NAME))
    except FileNotFoundError:
        pass


def advance(directory: str, next_lsn: int, seq: int, current: Optional[Floor] = None) -> Floor:
    """Durably record at least ``next_lsn`` and ``seq`` (never lowering either); the record now.

    Writes nothing when LSN_FLOOR already says as much. Caller holds the
    writer lock and has made durable what it records: segment ``seq`` exists
    durably, entries below ``next_lsn`` are in synced segments. Raises the
    OSError of a failed write or sync; :func:`no_space` tells whether it
    was only a full disk. On any failure nothing changed durably, and no
    temp file is left.
    """
    if current is None:
        current = read(directory)
    want = Floor(max(next_lsn, current.next_lsn), max(seq, current.seq))
    if (want.next_lsn, want.seq) == (current.next_lsn, current.seq) and current.slot >= 0:
        return current
    counter = current.counter + 1
    if current.slot < 0:
        _create(directory, _pack_slot(counter, want.next_lsn, want.seq))
        return Floor(want.next_lsn, want.seq, counter, 0)
    slot = 1 - current.slot  # the older one: the newest record stays whole if this write tears
    fd = _io.open_write(os.path.join(directory, FLOOR_NAME))
    try:
        _io.pwrite_all(fd, _pack_slot(counter, want.next_lsn, want.seq), SLOT_OFFSETS[slot])
        _io.fdatasync(fd)
    finally:
        _io.close(fd)
    return Floor(want.next_lsn, want.seq, counter, slot)


def close_strays(directory: str) -> None:
    """Close descriptors of LSN_FLOOR (and its temp file) that an interrupted update left open.

    For a KeyboardInterrupt raised inside :func:`advance` at an instant where
    no ``finally`` could close them (as ``open(2)`` or ``close(2)`` returns).
    """
    for name in (FLOOR_NAME, TEMP_NAME):
        _io.close_strays(os.path.join(directory, name))


def _create(directory: str, first_slot: bytes) -> None:
    # I3: temp file, fdatasync, rename, directory sync. A write that fails (a full disk)
    # leaves no temp file; after a failed sync nothing more is done (P2): the next writer
    # open removes the temp file.
    temp = os.path.join(directory, TEMP_NAME)
    content = bytearray(FILE_SIZE)
    content[: len(first_slot)] = first_slot
    fd = _io.open_or_create(temp, os.O_WRONLY | os.O_TRUNC)
    try:
        try:
            _io.pwrite_all(fd, bytes(content), 0)
        except BaseException:
            _io.close(fd)
            fd = -1
            remove_temp(directory)
            raise
        _io.fdatasync(fd)  # data and size: all a rename needs
    finally:
        if fd >= 0:
            _io.close(fd)
    _io.rename(temp, os.path.join(directory, FLOOR_NAME))
    _io.sync_dir(directory)
