"""The visible end: where a live writer tells readers they may read up to (P4).

``<dir>/VISIBLE`` holds one 32-byte record, little-endian::

    magic  4s  b"WLVE"
    crc    u32 CRC-32 of the 24 bytes that follow
    state  u32 0 closed, 1 recovering, 2 published
    seq    u32 segment number of the visible end
    lsn    u64 highest LSN a reader may yield (0: none)
    offset u64 byte offset in segment ``seq`` just past that LSN's frame

The writer maps the file and rewrites the record in place after every sync
(``"always"``, ``"interval"``) or every write (``"none"``): a memory store,
no system call on the append path. Readers ``pread`` it and retry when the
CRC shows they caught a half-updated record. The record is only trusted
while some process holds the writer lock; it is never fsynced, because it
means nothing once the writer is gone (readers then read every valid frame).
A writer that opens over a record left ``published`` by a crashed writer
marks it ``recovering`` before it scans, and publishes only after recovery
made the kept entries durable (P11).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Optional

from walogs import _codec, _io

VISIBLE_NAME = "VISIBLE"
CLOSED, RECOVERING, PUBLISHED = 0, 1, 2
_MAGIC = b"WLVE"
_RECORD = struct.Struct("<4sIIIQQ")
SIZE = _RECORD.size
_pack_visible = _codec.pack_visible  # the codec writes the record: one C call on the append path
if _codec.VISIBLE_SIZE != SIZE:
    raise ImportError(f"the codec writes {_codec.VISIBLE_SIZE}-byte VISIBLE records, not {SIZE}")


@dataclass(frozen=True)
class VisibleEnd:
    """A decoded record."""

    state: int
    seq: int
    lsn: int
    offset: int


def _encode(state: int, seq: int, lsn: int, offset: int) -> bytes:
    record = bytearray(SIZE)
    _pack_visible(record, state, seq, lsn, offset)
    return bytes(record)


def decode(raw: bytes) -> Optional[VisibleEnd]:
    """The record in ``raw``, or None if it is missing, foreign or half-written."""
    if len(raw) < SIZE:
        return None
    magic, crc, state, seq, lsn, offset = _RECORD.unpack_from(raw)
    if magic != _MAGIC or crc != zlib.crc32(raw[8:SIZE]):
        return None
    return VisibleEnd(state, seq, lsn, offset)


def read(directory: str, attempts: int = 100) -> Optional[VisibleEnd]:
    """Read the published record; None when there is none (or it stays unreadable)."""
    try:
        fd = _io.open_read(os.path.join(directory, VISIBLE_NAME))
    except FileNotFoundError:
        return None
    try:
        for _ in range(attempts):
            raw = os.pread(fd, SIZE, 0)
            if len(raw) < SIZE:
                return None
            record = decode(raw)
            if record is not None:
                return record
        return None
    finally:
        _io.close(fd)


def mark_recovering(directory: str) -> None:
    """Before recovery (lock held): withdraw an end a crashed writer left published.

    It may name entries recovery is about to cut. A record already closed,
    or no record at all, is left alone, so an open that then fails has
    changed no file.
    """
    record = read(directory)
    if record is None or record.state == CLOSED:
        return
    fd = _io.open_write(os.path.join(directory, VISIBLE_NAME))
    try:
        _io.pwrite_all(fd, _encode(RECOVERING, 0, 0, 0), 0)
    finally:
        _io.close(fd)


class Publisher:
    """The writer's side: a shared mapping of VISIBLE, rewritten in place."""

    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, VISIBLE_NAME)
        fd = _io.open_or_create(path)
        try:
            if _io.file_size(fd) != SIZE:
                _io.ftruncate(fd, SIZE)
            self._map: Optional[mmap.mmap] = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            _io.close(fd)

    def buffer(self) -> mmap.mmap:
        """The shared mapping itself, for the compiled writer to publish into without the GIL.

        Whoever takes a buffer export of it must release it before :meth:`close`.
        """
        if self._map is None:
            raise ValueError("the VISIBLE mapping is closed")
        return self._map

    def publish(self, state: int, seq: int, lsn: int, offset: int) -> None:
        """Make (seq, lsn, offset) the end readers may read up to."""
        mapping = self._map
        if mapping is not None:
            _pack_visible(mapping, state, seq, lsn, offset)

    def close(self, mark_closed: bool) -> None:
        """Unmap; ``mark_closed`` (only in the writer's own process) records that no writer publishes."""
        if self._map is None:
            return
        if mark_closed:
            self.publish(CLOSED, 0, 0, 0)
        self._map.close()
        self._map = None
