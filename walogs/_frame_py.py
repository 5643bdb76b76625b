"""Frame codec in plain Python: the readable specification of ``_frame.pyx``.

Both modules expose the same names with the same signatures, results,
exceptions and bytes; ``tests/test_codec.py`` holds them to it. Nothing here
does I/O: callers hand in buffers and get back frames, offsets and verdicts.
The layouts are ``walogs._format``'s (docs/format.md): a frame is a
FRAME_HEADER (len u32, crc u32, lsn u64) and then the data, its CRC-32
computed over len ++ lsn ++ data.
"""

from __future__ import annotations

import operator
import zlib
from collections.abc import Iterable, Iterator

from walogs._format import (
    BOOT_ID_SIZE,
    FRAME_HEADER_SIZE,
    IN_FLIGHT_BODY,
    IN_FLIGHT_MAGIC,
    IN_FLIGHT_RECORD,
    IN_FLIGHT_SIZE,
    MAX_ENTRY_SIZE,
    VISIBLE_BODY,
    VISIBLE_MAGIC,
    VISIBLE_RECORD,
    VISIBLE_SIZE,
)
from walogs._format import FRAME_CRC_PREFIX as _LEN_LSN
from walogs._format import FRAME_HEADER as _HEADER
from walogs._format import MAX_LSN as _MAX_LSN
from walogs._types import as_batch
from walogs.errors import EntryTooLargeError

# Why a scan or a reader stopped.
SCAN_END = 0
"""Stopped exactly at the end of the buffer: every byte was a whole frame."""
SCAN_SHORT = 1
"""The bytes at the stop offset are a header or frame cut off by the end of the buffer."""
SCAN_BAD_LEN = 2
"""The len field exceeds MAX_ENTRY_SIZE: not a frame."""
SCAN_BAD_CRC = 3
"""The CRC does not match: not a frame."""
SCAN_BAD_LSN = 4
"""A whole frame with a valid CRC but not the expected LSN (LSN 0, or not the previous LSN plus one)."""
SCAN_RUNNING = -1
"""FrameReader.status while the reader has not stopped yet."""

# What find_frame found.
FIND_NONE = 0
"""No plausible frame header starts before the last 15 bytes of the buffer."""
FIND_FRAME = 1
"""A whole, valid, continuing frame starts at the returned offset."""
FIND_SHORT = 2
"""A plausible header starts at the returned offset, but its frame runs past the buffer."""


def _entry_view(data: object) -> memoryview:
    """A flat byte view of ``data``, or TypeError for anything not bytes-like."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"an entry must be a bytes-like object, not {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        raise TypeError("an entry must be a C-contiguous bytes-like object")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _check_lsn(lsn: int) -> None:
    if not 1 <= operator.index(lsn) <= _MAX_LSN:
        raise ValueError(f"LSN {lsn} is out of range: LSNs run from 1 to 2**64-1")


def _frame_crc(length: int, lsn: int, data: object) -> int:
    # I1: the CRC covers len ++ lsn ++ data, skipping the crc field itself.
    return zlib.crc32(data, zlib.crc32(_LEN_LSN.pack(length, lsn)))  # type: ignore[arg-type]


def encode(lsn: int, data: object) -> bytes:
    """Return the frame holding ``data`` with LSN ``lsn``.

    Raises TypeError if ``data`` is not bytes-like, EntryTooLargeError if it
    is longer than MAX_ENTRY_SIZE, ValueError if ``lsn`` is not in
    1..2**64-1.
    """
    view = _entry_view(data)
    size = view.nbytes
    if size > MAX_ENTRY_SIZE:
        raise EntryTooLargeError(size, MAX_ENTRY_SIZE)
    _check_lsn(lsn)
    return _HEADER.pack(size, _frame_crc(size, lsn, view), lsn) + view


def encode_batch(first_lsn: int, items: Iterable[object]) -> bytes:
    """Return the frames of ``items`` back to back, LSNs counting up from ``first_lsn``.

    Every item is checked before any frame is built, so a bad item raises
    (TypeError, EntryTooLargeError) with nothing encoded. An empty ``items``
    gives ``b""``; one bytes-like object or str instead of an iterable of
    entries is a TypeError that says so.
    """
    views = [_entry_view(item) for item in as_batch(items)]
    for view in views:
        if view.nbytes > MAX_ENTRY_SIZE:
            raise EntryTooLargeError(view.nbytes, MAX_ENTRY_SIZE)
    if not views:
        return b""
    _check_lsn(first_lsn)
    _check_lsn(first_lsn + len(views) - 1)
    return b"".join(encode(first_lsn + i, view) for i, view in enumerate(views))


def _examine(buf: memoryview, offset: int, expect_lsn: int) -> tuple[int, int, int]:
    """Look at the frame at ``offset``: (status, frame length, lsn); status -1 means valid."""
    remaining = len(buf) - offset
    if remaining < FRAME_HEADER_SIZE:
        return SCAN_SHORT, 0, 0
    length, crc, lsn = _HEADER.unpack_from(buf, offset)
    if length > MAX_ENTRY_SIZE:
        return SCAN_BAD_LEN, 0, lsn
    total = FRAME_HEADER_SIZE + length
    if remaining < total:
        return SCAN_SHORT, total, lsn
    data = buf[offset + FRAME_HEADER_SIZE : offset + total]
    if _frame_crc(length, lsn, data) != crc:
        return SCAN_BAD_CRC, total, lsn
    # I9, I12: LSN 0 is never written and LSNs count up by exactly one.
    if lsn == 0 or (expect_lsn and lsn != expect_lsn):
        return SCAN_BAD_LSN, total, lsn
    return SCAN_RUNNING, total, lsn


def _byte_view(buf: object) -> memoryview:
    if buf is None:
        raise TypeError("buffer must be a bytes-like object, not None")
    view = memoryview(buf)  # type: ignore[arg-type]
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")  # as Cython says it
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _check_offset(offset: int, size: int) -> None:
    if not 0 <= operator.index(offset) <= size:
        raise ValueError(f"offset {offset} is outside the buffer of {size} bytes")


def scan(buf: object, offset: int = 0, expect_lsn: int = 0) -> tuple[int, int, int, int, int]:
    """Validate frames from ``offset`` on without building an object per frame.

    ``expect_lsn`` is the LSN the first frame must carry (0: any LSN >= 1);
    each later frame must carry the previous LSN plus one. Stops at the end of
    the buffer or at the first thing that is not such a frame.

    Returns ``(end_offset, count, first_lsn, last_lsn, status)``: the offset
    just past the last valid frame, how many valid frames there were, their
    first and last LSN (0 when none), and one of the SCAN_* reasons.
    """
    view = _byte_view(buf)
    _check_offset(offset, len(view))
    count = first = last = 0
    expect = operator.index(expect_lsn)
    while offset < len(view):
        status, total, lsn = _examine(view, offset, expect)
        if status != SCAN_RUNNING:
            return offset, count, first, last, status
        if not count:
            first = lsn
        count += 1
        last = lsn
        expect = lsn + 1
        offset += total
    return offset, count, first, last, SCAN_END


_NO_BUFFER = memoryview(b"")
"""What a stopped FrameReader holds instead of its buffer."""


class FrameReader:
    """Iterator of ``(lsn, data)`` over the frames of a buffer, one per ``next``.

    ``expect_lsn`` works as in :func:`scan`. Frames with an LSN below
    ``skip_before`` are validated but not returned. After the iterator is
    exhausted, ``status`` tells why (a SCAN_* value), ``offset`` is just past
    the last valid frame and ``last_lsn`` is that frame's LSN (or the
    ``expect_lsn - 1`` it started from, 0 if none). Once stopped, it lets go
    of ``buf`` (the buffer can be resized or freed).
    """

    def __init__(self, buf: object, offset: int = 0, expect_lsn: int = 0, skip_before: int = 0) -> None:
        self._view = _byte_view(buf)
        _check_offset(offset, len(self._view))
        expect_lsn, skip_before = operator.index(expect_lsn), operator.index(skip_before)
        self.offset = offset
        self.status = SCAN_RUNNING
        self.last_lsn = expect_lsn - 1 if expect_lsn else 0
        self._expect = expect_lsn
        self._skip_before = skip_before

    def __iter__(self) -> FrameReader:
        return self

    def __next__(self) -> tuple[int, bytes]:
        view = self._view
        while self.status == SCAN_RUNNING:
            offset = self.offset
            if offset >= len(view):
                self.status = SCAN_END
                self._view = _NO_BUFFER
                break
            status, total, lsn = _examine(view, offset, self._expect)
            if status != SCAN_RUNNING:
                self.status = status
                self._view = _NO_BUFFER
                break
            self.offset = offset + total
            self.last_lsn = lsn
            self._expect = lsn + 1
            if lsn >= self._skip_before:
                return lsn, bytes(view[offset + FRAME_HEADER_SIZE : offset + total])
        raise StopIteration


_END = object()
""""No frame": a reader or ``readers`` is exhausted."""


class ChainReader:
    """Iterator of ``(lsn, data)`` over the frames of each FrameReader from ``readers``, in turn.

    ``readers`` is an iterable of FrameReader objects, typically a generator.
    The next reader is asked for only when the current one is exhausted, so
    whatever produces them can look at the exhausted reader (``status``,
    ``offset``, ``last_lsn``) before it makes the next one: read on from
    where that one stopped, or end the chain. Each reader's frames come out
    exactly as its own ``next`` gives them.

    The chain ends when ``readers`` is exhausted, or when ``readers`` or a
    reader raises: the exception propagates and ``readers`` is closed (if it
    has a ``close`` method). An ended chain raises StopIteration. Anything
    but a FrameReader from ``readers`` is a TypeError. :meth:`close` ends
    the chain early. Like a generator, a chain cannot be re-entered while a
    ``next`` runs (ValueError).
    """

    _running = False  # inside __next__: re-entry is a ValueError, as for generators

    def __init__(self, readers: Iterable[FrameReader]) -> None:
        self._readers: Iterator[FrameReader] | None = iter(readers)  # None once the chain has ended
        self._reader: FrameReader | None = None  # the reader being read; None before the first one

    def __iter__(self) -> ChainReader:
        return self

    def __next__(self) -> tuple[int, bytes]:
        reader = self._reader
        if self._running:
            raise ValueError("ChainReader already executing")
        self._running = True
        try:
            if reader is not None:
                # reader.__next__() rather than next(reader, _END): a direct call
                # of a Python method is the cheapest per frame.
                try:
                    item = reader.__next__()
                except StopIteration:
                    reader = None
            if reader is None:
                item = self._refill()  # outside the handler: its errors get no StopIteration context
        except BaseException:
            self._running = False
            self._end(True)
            raise
        self._running = False
        if reader is None and item is _END:  # (reader is None: only after a refill)
            raise StopIteration
        return item  # type: ignore[return-value]

    def _refill(self) -> object:
        """The first frame of the next readers, or _END when ``readers`` is exhausted (the chain ends)."""
        while self._readers is not None:
            reader = next(self._readers, _END)
            if reader is _END:
                self._end(False)
                break
            if not isinstance(reader, FrameReader):
                raise TypeError(
                    f"ChainReader: readers must yield FrameReader objects, not {type(reader).__name__}"
                )
            self._reader = reader
            item = next(reader, _END)
            if item is not _END:
                return item
        return _END

    def _end(self, close: bool) -> None:
        readers = self._readers
        self._readers = None
        self._reader = None
        if close and readers is not None:
            closer = getattr(readers, "close", None)
            if closer is not None:
                closer()

    def close(self) -> None:
        """End the chain now and close ``readers`` (a generator runs its ``finally`` blocks)."""
        if self._running:
            raise ValueError("ChainReader already executing")
        self._end(True)


def decode(buf: object, offset: int = 0, expect_lsn: int = 0) -> tuple[list[tuple[int, bytes]], int, int]:
    """Decode frames from ``offset`` on: ``(frames, end_offset, status)``.

    ``frames`` is the list of ``(lsn, data)`` pairs before the first thing
    that is not a frame; the rest is as in :func:`scan`.
    """
    reader = FrameReader(buf, offset, expect_lsn)
    frames = list(reader)
    return frames, reader.offset, reader.status


def find_frame(buf: object, offset: int, after_lsn: int, bad_offset: int) -> tuple[int, int]:
    """Find the first frame at or after ``offset`` that could continue the log.

    A candidate is a header at any byte offset ``o`` whose len is at most
    MAX_ENTRY_SIZE and whose LSN lies in ``after_lsn + 1`` ..
    ``after_lsn + 1 + (o - bad_offset) // 16``: more frames than that cannot
    fit between the bad frame at ``bad_offset`` (relative to ``buf``, may be
    negative) and ``o``. The window keeps random bytes from passing for a
    frame (docs/format.md).

    Returns ``(o, FIND_FRAME)`` for the first whole candidate with a valid
    CRC, ``(o, FIND_SHORT)`` for a candidate whose frame runs past the
    buffer (the caller must read more to judge it), or ``(o, FIND_NONE)``
    where ``o`` is the first offset whose header the buffer could not hold.
    """
    view = _byte_view(buf)
    _check_offset(offset, len(view))
    after_lsn, bad_offset = operator.index(after_lsn), operator.index(bad_offset)
    end = len(view) - FRAME_HEADER_SIZE
    o = offset
    while o <= end:
        length, crc, lsn = _HEADER.unpack_from(view, o)
        if length <= MAX_ENTRY_SIZE and after_lsn < lsn <= after_lsn + 1 + (o - bad_offset) // FRAME_HEADER_SIZE:
            total = FRAME_HEADER_SIZE + length
            if o + total > len(view):
                return o, FIND_SHORT
            if _frame_crc(length, lsn, view[o + FRAME_HEADER_SIZE : o + total]) == crc:
                return o, FIND_FRAME
        o += 1
    return max(o, offset), FIND_NONE


_U32_MAX = (1 << 32) - 1


def pack_visible(buf: object, state: int, seq: int, lsn: int, offset: int) -> None:
    """Write the visible-end record for ``(state, seq, lsn, offset)`` into ``buf[:VISIBLE_SIZE]``.

    The record is ``walogs._format.VISIBLE_RECORD`` (docs/format.md), its
    CRC-32 computed. ``buf`` must be a writable buffer of at least
    VISIBLE_SIZE bytes (TypeError, ValueError); state and seq must fit a
    u32, lsn and offset a u64 (ValueError). The writer publishes through
    this after every write under ``sync="none"``, so it is on the append path.
    """
    fields = []
    for name, value, top in (("state", state, _U32_MAX), ("seq", seq, _U32_MAX),
                             ("lsn", lsn, _MAX_LSN), ("offset", offset, _MAX_LSN)):
        value = operator.index(value)
        if not 0 <= value <= top:
            raise ValueError(f"VISIBLE {name} {value} is out of range 0..{top}")
        fields.append(value)
    with _byte_view(buf) as view:  # released at once: an mmap with a live export cannot close
        if view.readonly:
            raise TypeError(f"pack_visible needs a writable buffer, not a read-only {type(buf).__name__}")
        if len(view) < VISIBLE_SIZE:
            raise ValueError(f"a VISIBLE record needs {VISIBLE_SIZE} bytes, the buffer has {len(view)}")
        crc = zlib.crc32(VISIBLE_BODY.pack(*fields))
        VISIBLE_RECORD.pack_into(view, 0, VISIBLE_MAGIC, crc, *fields)


def pack_in_flight(buf: object, boot: object, seq: int, start: int, end: int) -> None:
    """Write the in-flight record for ``(boot, seq, start, end)`` into ``buf[:IN_FLIGHT_SIZE]``.

    The record is ``walogs._format.IN_FLIGHT_RECORD`` (docs/format.md), its
    CRC-32 computed. ``buf`` must be a writable buffer of at least
    IN_FLIGHT_SIZE bytes and ``boot`` a bytes-like object of exactly
    BOOT_ID_SIZE bytes (TypeError, ValueError); seq, start and end must fit
    a u64 (ValueError). The writer stores it before every write of frames,
    so it is on the append path.
    """
    fields = []
    for name, value in (("seq", seq), ("start", start), ("end", end)):
        value = operator.index(value)
        if not 0 <= value <= _MAX_LSN:
            raise ValueError(f"in-flight {name} {value} is out of range 0..{_MAX_LSN}")
        fields.append(value)
    with _byte_view(boot) as boot_view:
        if len(boot_view) != BOOT_ID_SIZE:
            raise ValueError(f"a boot id has {BOOT_ID_SIZE} bytes, not {len(boot_view)}")
        boot_id = boot_view.tobytes()
    with _byte_view(buf) as view:  # released at once: an mmap with a live export cannot close
        if view.readonly:
            raise TypeError(f"pack_in_flight needs a writable buffer, not a read-only {type(buf).__name__}")
        if len(view) < IN_FLIGHT_SIZE:
            raise ValueError(f"an in-flight record needs {IN_FLIGHT_SIZE} bytes, the buffer has {len(view)}")
        crc = zlib.crc32(IN_FLIGHT_BODY.pack(boot_id, *fields))
        IN_FLIGHT_RECORD.pack_into(view, 0, IN_FLIGHT_MAGIC, crc, boot_id, *fields)
