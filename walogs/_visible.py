"""The visible end, and the write in flight: what a live writer shares in ``<dir>/VISIBLE``.

``VISIBLE`` is 80 bytes: two records, little-endian. At offset 0 the
*visible end* (32 bytes), where readers may read up to (P4)::

    magic  4s  b"WLVE"
    crc    u32 CRC-32 of the 24 bytes that follow
    state  u32 0 closed, 1 recovering, 2 published
    seq    u32 segment number of the visible end
    lsn    u64 highest LSN a reader may yield (0: none)
    offset u64 byte offset in segment ``seq`` just past that LSN's frame

At offset 32 the *write in flight* (48 bytes), for recovery only::

    magic  4s  b"WLIF"
    crc    u32 CRC-32 of the 40 bytes that follow
    boot   16s the kernel's boot id when it was stored
    seq    u64 segment the write goes to
    start  u64 offset where the write starts (the end of every earlier write)
    end    u64 offset where it ends

The writer maps the file and rewrites the visible end in place after every
sync (``"always"``, ``"interval"``) or every write (``"none"``), and the
in-flight record before every write of frames: memory stores, no system
call on the append path. Readers ``pread`` the visible end and retry when
the CRC shows they caught a half-updated record. It is only trusted while
some process holds the writer lock; it is never fsynced, because it means
nothing once the writer is gone (readers then read every valid frame). A
writer that opens over a record left ``published`` by a crashed writer
marks it ``recovering`` before it scans, and publishes only after recovery
made the kept entries durable (P11).

The in-flight record makes a batch all or nothing across a process crash.
A process killed inside a large ``pwrite`` leaves the file cut at a page
boundary: whole frames of the batch, then a torn one. The pages of the
mapping outlive the process (they are the file's page cache), so the next
writer's recovery reads exactly what the dead writer last stored, and when
the segment ends strictly inside the write it names (at a page boundary, as
a killed write does), it cuts the segment at the write's start
(:func:`in_flight_cut`). After a power loss the page may
have reached the disk at any earlier moment, so the record is trusted only
on the boot that stored it: an unacknowledged batch can then still be kept
in part, as any unsynced write can.
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

IN_FLIGHT_OFFSET = SIZE
_IN_FLIGHT_MAGIC = b"WLIF"
_IN_FLIGHT = struct.Struct("<4sI16sQQQ")
_IN_FLIGHT_TAIL = struct.Struct("<QQQ")
IN_FLIGHT_SIZE = _IN_FLIGHT.size
FILE_SIZE = IN_FLIGHT_OFFSET + IN_FLIGHT_SIZE
"""Bytes of the VISIBLE file: both records, written for real before it is mapped."""
if _codec.IN_FLIGHT_SIZE != IN_FLIGHT_SIZE:
    raise ImportError(f"the codec writes {_codec.IN_FLIGHT_SIZE}-byte in-flight records, not {IN_FLIGHT_SIZE}")


def _boot_id() -> bytes:
    # Linux gives every boot a random UUID; all zeros (never trusted) where there is none.
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            raw = bytes.fromhex(f.read().strip().replace("-", ""))
    except (OSError, ValueError):
        return bytes(_codec.BOOT_ID_SIZE)
    return raw if len(raw) == _codec.BOOT_ID_SIZE else bytes(_codec.BOOT_ID_SIZE)


BOOT_ID = _boot_id()
"""This boot's id, stored in every in-flight record: a record from another boot is stale."""
_BOOT_CRC = zlib.crc32(BOOT_ID)  # the record's CRC covers boot ++ seq ++ start ++ end: chained from here


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


@dataclass(frozen=True)
class InFlight:
    """A decoded in-flight record: the last write the writer started in segment ``seq``."""

    seq: int
    start: int
    end: int


def read_in_flight(directory: str) -> Optional[InFlight]:
    """The in-flight record a writer stored on this boot; None if there is none to trust.

    Called by recovery with the writer lock held, so no writer stores into
    it meanwhile. Not trusted (None): no file or record, a record cut by a
    kill in the middle of its store (the CRC), or one stored on another
    boot (a power loss since: the page may have reached the disk at any
    earlier moment).
    """
    try:
        fd = _io.open_read(os.path.join(directory, VISIBLE_NAME))
    except FileNotFoundError:
        return None
    try:
        raw = os.pread(fd, IN_FLIGHT_SIZE, IN_FLIGHT_OFFSET)
    finally:
        _io.close(fd)
    if len(raw) < IN_FLIGHT_SIZE:
        return None
    magic, crc, boot, seq, start, end = _IN_FLIGHT.unpack(raw)
    if magic != _IN_FLIGHT_MAGIC or crc != zlib.crc32(raw[8:]) or boot != BOOT_ID or not any(BOOT_ID):
        return None
    return InFlight(seq, start, end)


def in_flight_cut(directory: str, seq: int, size: int) -> Optional[int]:
    """Where recovery cuts segment ``seq`` (``size`` bytes) to drop a write a killed writer left half done.

    The offset of that write's start, or None. Only when the trusted
    in-flight record names this segment and the file ends strictly inside
    the write it names, at a page boundary: the kernel copies a write page
    by page (folio by folio) and stops a killed one between two. A file
    that ends at the write's start got none of it, one that ends at its end
    got all of it (the batch is whole), and one that is longer, or ends
    elsewhere, was written to afterwards by someone else (say, another
    implementation's writer), so the record is not about these bytes. The
    caller checks that the start is a frame boundary.
    """
    record = read_in_flight(directory)
    if record is None or record.seq != seq or not record.start < size < record.end or size % mmap.PAGESIZE:
        return None
    return record.start


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

    boot_id = BOOT_ID
    """The boot id the writer stores in every in-flight record."""

    def __init__(self, directory: str) -> None:
        """Map VISIBLE, first writing all of it for real (OSError such as ENOSPC, never SIGBUS).

        A page of a shared mapping is allocated when it is first stored
        into; a file sized with ftruncate is a hole, and on a full disk that
        store is SIGBUS. Written, the pages are the file's own.
        """
        path = os.path.join(directory, VISIBLE_NAME)
        fd = _io.open_or_create(path)
        try:
            # No writer publishes until recovery is done (P11); nothing is in flight yet.
            _io.pwrite_all(fd, _encode(RECOVERING, 0, 0, 0) + bytes(IN_FLIGHT_SIZE), 0)
            self._map: Optional[mmap.mmap] = mmap.mmap(fd, FILE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
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

    def mark_in_flight(self, seq: int, start: int, end: int) -> None:
        """Record that a write of bytes ``start..end`` of segment ``seq`` starts now (before it starts).

        The pure-Python writer's store (the compiled one builds the same bytes
        in C, ``_codec.pack_in_flight``): on its append path, so packed here
        with the boot id's CRC computed once.
        """
        mapping = self._map
        if mapping is not None:
            crc = zlib.crc32(_IN_FLIGHT_TAIL.pack(seq, start, end), _BOOT_CRC)
            _IN_FLIGHT.pack_into(mapping, IN_FLIGHT_OFFSET, _IN_FLIGHT_MAGIC, crc, BOOT_ID, seq, start, end)

    def close(self, mark_closed: bool) -> None:
        """Unmap; ``mark_closed`` (only in the writer's own process) records that no writer publishes.

        A clean close also clears the in-flight record: nothing is in
        flight, and bytes appended later (by any writer) are not its.
        """
        if self._map is None:
            return
        if mark_closed:
            self.publish(CLOSED, 0, 0, 0)
            self._map[IN_FLIGHT_OFFSET:FILE_SIZE] = bytes(IN_FLIGHT_SIZE)
        self._map.close()
        self._map = None
