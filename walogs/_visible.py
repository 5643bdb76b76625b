"""The visible end, and the write in flight: what a live writer shares in ``<dir>/VISIBLE``.

``VISIBLE`` holds two records, laid out in ``walogs._format`` (docs/format.md
describes them). At offset 0 the *visible end*: a state, and the segment,
LSN and offset readers may read up to. After it the *write in flight*, for
recovery only: the boot id and the segment, start and end of the last write
of frames the writer started.

The writer maps the file and rewrites the visible end in place after every
sync (``"always"``, ``"interval"``) or every write (``"none"``), and the
in-flight record before every write of frames: memory stores, no system
call on the append path. Readers ``pread`` the visible end and retry when
the CRC shows they caught a half-updated record. It is only trusted while
some process holds the writer lock; it is never fsynced, because it means
nothing once the writer is gone (readers then read every valid frame). A
writer that opens over a record left ``published`` by a crashed writer
marks it ``recovering`` before it scans, and publishes only after recovery
made the kept entries durable.

The in-flight record makes a batch all or nothing across a process crash.
A process killed inside a large ``pwrite`` leaves the file cut at a page
boundary: whole frames of the batch, then a torn one. The pages of the
mapping outlive the process (they are the file's page cache), so the next
writer's recovery reads exactly what the dead writer last stored, and when
the segment ends strictly inside the write it names (at a page boundary, as
a killed write does), it cuts the segment at the write's start
(``walogs._damage.killed_write_cut``). After a power loss the page may
have reached the disk at any earlier moment, so the record is trusted only
on the boot that stored it: an unacknowledged batch can then still be kept
in part, as any unsynced write can.
"""

from __future__ import annotations

import mmap
import os
import zlib
from dataclasses import dataclass
from typing import Optional

from walogs import _io
from walogs._format import (
    BOOT_ID_SIZE,
    IN_FLIGHT_FIELDS,
    IN_FLIGHT_MAGIC,
    IN_FLIGHT_OFFSET,
    IN_FLIGHT_RECORD,
    IN_FLIGHT_SIZE,
    RECORD_CRC_FROM,
    VISIBLE_MAGIC,
    VISIBLE_NAME,
    VISIBLE_RECORD,
    VISIBLE_SIZE,
)
from walogs._format import VISIBLE_CLOSED as CLOSED
from walogs._format import VISIBLE_FILE_SIZE as FILE_SIZE
from walogs._format import VISIBLE_PUBLISHED as PUBLISHED
from walogs._format import VISIBLE_RECOVERING as RECOVERING

# The pure codec packs the visible end here. Not the live codec's: walogs._impl, which chooses
# it, imports the Python writer, and that imports this module. (The compiled writer stores
# both records itself, in C; the Python writer's append path is Python either way.)
from walogs._frame_py import pack_visible as _pack_visible

# Also read from here by walogs._writer, _writer_py and the tests: FILE_SIZE, IN_FLIGHT_OFFSET,
# IN_FLIGHT_SIZE, PUBLISHED, VISIBLE_NAME.
__all__ = ["BOOT_ID", "CLOSED", "FILE_SIZE", "IN_FLIGHT_OFFSET", "IN_FLIGHT_SIZE", "PUBLISHED", "RECOVERING",
           "VISIBLE_NAME", "InFlight", "Publisher", "VisibleEnd", "decode", "mark_recovering",
           "read", "read_fd", "read_in_flight"]


def _boot_id() -> bytes:
    # Linux gives every boot a random UUID; all zeros (never trusted) where there is none.
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            raw = bytes.fromhex(f.read().strip().replace("-", ""))
    except (OSError, ValueError):
        return bytes(BOOT_ID_SIZE)
    return raw if len(raw) == BOOT_ID_SIZE else bytes(BOOT_ID_SIZE)


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
    record = bytearray(VISIBLE_SIZE)
    _pack_visible(record, state, seq, lsn, offset)
    return bytes(record)


def decode(raw: bytes) -> Optional[VisibleEnd]:
    """The record in ``raw``, or None if it is missing, foreign or half-written."""
    if len(raw) < VISIBLE_SIZE:
        return None
    magic, crc, state, seq, lsn, offset = VISIBLE_RECORD.unpack_from(raw)
    if magic != VISIBLE_MAGIC or crc != zlib.crc32(raw[RECORD_CRC_FROM:VISIBLE_SIZE]):
        return None
    return VisibleEnd(state, seq, lsn, offset)


def read(directory: str, attempts: int = 100) -> Optional[VisibleEnd]:
    """Read the published record; None when there is none (or it stays unreadable)."""
    try:
        fd = _io.open_read(os.path.join(directory, VISIBLE_NAME))
    except FileNotFoundError:
        return None
    try:
        return read_fd(fd, attempts)
    finally:
        _io.close(fd)


def read_fd(fd: int, attempts: int = 100) -> Optional[VisibleEnd]:
    """:func:`read` from an open descriptor of VISIBLE."""
    for _ in range(attempts):
        raw = os.pread(fd, VISIBLE_SIZE, 0)
        if len(raw) < VISIBLE_SIZE:
            return None
        record = decode(raw)
        if record is not None:
            return record
    return None


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
        raw = _io.read_at(os.path.join(directory, VISIBLE_NAME), IN_FLIGHT_SIZE, IN_FLIGHT_OFFSET)
    except FileNotFoundError:
        return None
    if len(raw) < IN_FLIGHT_SIZE:
        return None
    magic, crc, boot, seq, start, end = IN_FLIGHT_RECORD.unpack(raw)
    if magic != IN_FLIGHT_MAGIC or crc != zlib.crc32(raw[RECORD_CRC_FROM:]) or boot != BOOT_ID or not any(BOOT_ID):
        return None
    return InFlight(seq, start, end)


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

    def __init__(self, directory: str, attach: bool = False) -> None:
        """Map VISIBLE, first writing all of it for real (OSError such as ENOSPC, never SIGBUS).

        A page of a shared mapping is allocated when it is first stored
        into; a file sized with ftruncate is a hole, and on a full disk that
        store is SIGBUS. Written, the pages are the file's own. ``attach``:
        a shared writer joining others maps the file the first one wrote,
        as it is.
        """
        path = os.path.join(directory, VISIBLE_NAME)
        fd = _io.open_or_create(path)
        try:
            if not attach:
                # No writer publishes until recovery is done (P11); nothing is in flight yet.
                _io.pwrite_all(fd, _encode(RECOVERING, 0, 0, 0) + bytes(IN_FLIGHT_SIZE), 0)
            self._map: Optional[mmap.mmap] = mmap.mmap(fd, FILE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            _io.close(fd)
            raise
        self.fd: int = fd
        """Kept open for :meth:`notify`: followers sleep on inotify, and a store into the mapping raises no event."""

    def notify(self) -> None:
        """Wake followers after a sync published a new end: rewrite VISIBLE's first byte, unchanged.

        A ``write(2)`` raises ``IN_MODIFY``, which followers sleeping on inotify
        wait for; the byte is the record's own (its magic's first), so no
        reader can see the record change. The compiled writers make the same
        call in C.
        """
        if self._map is not None:
            os.pwrite(self.fd, VISIBLE_MAGIC[:1], 0)

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
        in C, as the codecs' ``pack_in_flight`` does): on its append path, so
        packed here with the boot id's CRC computed once (tests/test_codec.py
        checks that the three agree).
        """
        mapping = self._map
        if mapping is not None:
            crc = zlib.crc32(IN_FLIGHT_FIELDS.pack(seq, start, end), _BOOT_CRC)
            IN_FLIGHT_RECORD.pack_into(mapping, IN_FLIGHT_OFFSET, IN_FLIGHT_MAGIC, crc, BOOT_ID, seq, start, end)

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
            os.pwrite(self.fd, VISIBLE_MAGIC[:1], 0)  # followers wake and read every valid frame
        self._map.close()  # BufferError while a half-built writer still views it: the caller copes
        self._map = None
        fd, self.fd = self.fd, -1
        _io.close(fd)
