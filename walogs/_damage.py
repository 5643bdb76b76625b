"""The one judge of a bad frame: a torn tail to cut, or damage to report.

The writer's open (recovery), the readers, ``walogs verify``, ``repair``
and ``salvage`` all ask here. Reading a segment stops at the first thing
that is not a valid frame continuing the log (``walogs._segments``); what
that thing is:

- a whole frame with a valid CRC but the wrong LSN: an LSN jump, never a
  torn write;
- anything else in a completed segment: damage (completed segments are
  never cut);
- in the last segment, before the visible end a live writer published:
  damage (the writer made it durable first);
- in the last segment, nothing but zeros from it to the end of the file:
  the *zero tail* of a segment the writer writes into (prepared with real
  zeros ahead of it, docs/format.md): a clean end, nothing to cut. A torn
  frame followed by zeros is not all zeros: it is judged as below;
- otherwise, in the last segment, a *torn tail*, the end of a write a crash
  cut short, which the next writer open cuts; unless a valid frame that
  could continue the log follows it, which makes it *mid-log damage*. Even
  then it is a torn tail when the bytes between show storage a power cut
  left unwritten: a zeroed header running to the end of its sector, or a
  whole zeroed sector (etcd's rule). Calling a torn tail damage loses
  nothing (an operator decides); the reverse would cut good entries.

Which frame "could continue the log" (its LSN window) is in docs/format.md.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Optional

from walogs import _io, _segments, _visible
from walogs._format import FRAME_HEADER_SIZE, SECTOR
from walogs._format import FRAME_HEADER as _HEADER
from walogs._impl import codec
from walogs.errors import WalCorruptError

# What a bad frame is; the first four are damage, the words name it in messages.
LSN_JUMP = "LSN discontinuity"
COMPLETED = "corruption in completed segment"
LIVE = "bad frame before the live writer's visible end"
MID_LOG = "mid-log damage"
TORN = "torn tail"
ZERO_TAIL = "zero tail"

_ADVICE = {
    LSN_JUMP: "entries between are missing; restore the segments from a backup",
    COMPLETED: "completed segments are never cut; restore the segment from a backup, "
               "or `walogs salvage` exports every intact entry",
    LIVE: "the disk returned damaged data for entries the writer made durable; stop the writer, "
          "then `walogs salvage` exports every intact entry",
    MID_LOG: "nothing was cut: `walogs repair DIR --truncate-corrupt-tail` cuts it and keeps the cut "
             "bytes in a side file",
}

_ZERO_SECTOR = bytes(SECTOR)


@dataclass(frozen=True)
class Verdict:
    """What the first bad frame of a segment is."""

    kind: str
    """LSN_JUMP, COMPLETED, LIVE, MID_LOG, TORN or ZERO_TAIL."""
    last_segment: bool
    """Whether it is in the last segment (only damage there may be cut, by ``walogs repair``)."""
    continuing_offset: Optional[int] = None
    """Offset of the first valid frame after the damage that could continue the log, if one was looked for."""

    @property
    def torn(self) -> bool:
        """True for a torn tail: safe to cut at the bad frame."""
        return self.kind == TORN

    @property
    def clean(self) -> bool:
        """True for a zero tail: the segment ends cleanly at the bad frame, and the zeros stay (they are written into)."""
        return self.kind == ZERO_TAIL

    @property
    def damage(self) -> bool:
        """True for damage: neither a torn tail nor a zero tail."""
        return not (self.torn or self.clean)

    def error(self, directory: str, scan: _segments.SegmentScan, expect_lsn: int) -> WalCorruptError:
        """The WalCorruptError for damage: what it is, where, why, and what the user can do."""
        what = self.kind
        if self.kind == MID_LOG:
            what += f" (a valid frame continuing the log follows at offset {self.continuing_offset})"
        return _segments.corrupt_error(directory, scan, expect_lsn, what, _ADVICE[self.kind],
                                       in_last_segment=self.last_segment)


def last_good_lsn(scan: _segments.SegmentScan, expect_lsn: int, floor: int) -> int:
    """The LSN of the last good entry before the bad frame of ``scan``: where a continuing frame's LSNs start.

    ``expect_lsn`` is the LSN the segment's first frame had to carry (0:
    any) and ``floor`` the LSN floor; 0 means no LSN is known, and then any
    valid frame counts as continuing.
    """
    return scan.last_lsn if scan.count else max(expect_lsn - 1, floor - 1, 0)


def judge(scan: _segments.SegmentScan, after_lsn: int, *, last_segment: bool, live: bool = False) -> Verdict:
    """Decide what the bad frame at ``scan.end`` is (see the module's docstring).

    ``after_lsn`` is the last good LSN before it (:func:`last_good_lsn`);
    ``last_segment``: the segment is the log's last (with a live writer,
    the one its visible end is in); ``live``: a live writer published a
    visible end beyond the bad frame.
    """
    if scan.status == codec.SCAN_BAD_LSN:
        return Verdict(LSN_JUMP, last_segment)
    if not last_segment:
        return Verdict(COMPLETED, False)
    if live:
        return Verdict(LIVE, True)
    if all_zero(scan.path, scan.end):
        return Verdict(ZERO_TAIL, True)
    continuing = find_continuing_frame(scan.path, scan.end, after_lsn)
    if continuing is None:
        return Verdict(TORN, True)
    unwritten = zeros_to_sector_end(scan.path, scan.end, continuing) or has_zero_sector(
        scan.path, scan.end, continuing
    )
    return Verdict(TORN if unwritten else MID_LOG, True, continuing)


def find_continuing_frame(path: str, bad_offset: int, after_lsn: int, limit: Optional[int] = None,
                          anchor: Optional[int] = None) -> Optional[int]:
    """The offset of the first valid frame after ``bad_offset`` that could continue the log.

    Such a frame means the damage is in the middle of written data, not a
    torn tail. Only frames that end by ``limit`` (default: the file's size)
    count. The LSN window (docs/format.md) counts the 16-byte headers that
    fit between ``anchor`` (default ``bad_offset``; negative when damage in
    earlier segments may also have held frames) and the candidate. Streams
    the file in chunks; a candidate frame larger than a chunk is read whole
    (at most MAX_ENTRY_SIZE + 16 bytes).
    """
    if anchor is None:
        anchor = bad_offset
    if not after_lsn:
        # No LSN known: move the window's anchor so far back that every LSN >= 1 fits in it.
        anchor = -(1 << 60)
    fd = _io.open_read(path)
    try:
        size = _io.file_size(fd)
        if limit is not None:
            size = min(size, limit)
        chunks = _segments.Chunks()
        pos = bad_offset + 1
        while pos + FRAME_HEADER_SIZE <= size:
            view = chunks.read(fd, pos, min(_segments.CHUNK, size - pos))
            found, kind = codec.find_frame(view, 0, after_lsn, anchor - pos)
            if kind == codec.FIND_FRAME:
                return pos + found
            if kind == codec.FIND_NONE:
                pos += found
                continue
            candidate = pos + found
            length = _HEADER.unpack_from(view, found)[0]
            if candidate + FRAME_HEADER_SIZE + length <= size:
                whole = chunks.read(fd, candidate, FRAME_HEADER_SIZE + length)
                if codec.find_frame(whole, 0, after_lsn, anchor - candidate) == (0, codec.FIND_FRAME):
                    return candidate
            pos = candidate + 1
        return None
    finally:
        _io.close(fd)


def has_zero_sector(path: str, start: int, end: int) -> bool:
    """True if a 512-byte-aligned block of zeros lies wholly inside [start, end).

    Such a block is storage a power failure left unwritten (etcd's rule), so
    the damage is a torn tail even if valid frames follow.
    """
    first = -(-start // SECTOR) * SECTOR
    if first + SECTOR > end:
        return False
    fd = _io.open_read(path)
    try:
        chunks = _segments.Chunks()
        pos = first
        while pos + SECTOR <= end:
            length = min(_segments.CHUNK, (end - pos) // SECTOR * SECTOR)
            view = chunks.read(fd, pos, length)
            for at in range(0, len(view) - SECTOR + 1, SECTOR):
                if view[at : at + SECTOR] == _ZERO_SECTOR:
                    return True
            if len(view) < length:
                return False
            pos += length
        return False
    finally:
        _io.close(fd)


def zeros_to_sector_end(path: str, bad_offset: int, end: int) -> bool:
    """True if the bytes from ``bad_offset`` to the next 512-byte boundary (16 at least) are zero.

    The sector that held the end of the last synced frame was rewritten but
    lost, so the disk shows that sector as it was: the old frames, then
    zeros. A real frame never has an all-zero header (LSN 0 is never
    written), so a zeroed header running to the boundary is unwritten storage.
    """
    stop = max(bad_offset + FRAME_HEADER_SIZE, (bad_offset // SECTOR + 1) * SECTOR)
    if stop > end:
        return False
    data = _io.read_at(path, stop - bad_offset, bad_offset)
    return len(data) == stop - bad_offset and not any(data)



def all_zero(path: str, start: int, end: Optional[int] = None) -> bool:
    """True if every byte of ``path`` from ``start`` to ``end`` (default: its end) is zero.

    A segment prepared with zeros and written into ends in such a run (or
    a finished one, none). Streams the file in chunks of one reused buffer.
    """
    fd = _io.open_read(path)
    try:
        stop = _io.file_size(fd) if end is None else end
        buf = bytearray(min(_segments.CHUNK, max(stop - start, 0)))
        pos = start
        while pos < stop:
            n = min(len(buf), stop - pos)
            got = _io.pread_into(fd, memoryview(buf)[:n], pos)
            if got < n:
                return False  # shorter than asked: the file shrank meanwhile
            if buf.count(0, 0, n) != n:
                return False
            pos += n
        return True
    finally:
        _io.close(fd)


def killed_write_cut(directory: str, seq: int, size: int, path: str) -> Optional[int]:
    """Where recovery cuts segment ``seq`` (file ``path``, ``size`` bytes) to drop a write a killed writer left half done.

    The offset of that write's start, or None. Only when the trusted
    in-flight record names this segment and the write stopped strictly
    inside the range it names. Into a segment that grows, the file's size
    says where: the kernel copies a write page by page (folio by folio) and
    stops a killed one between two, so the file ends strictly inside the
    write, at a page boundary. A file that ends at the write's start got
    none of it, one that ends at its end got all of it (the batch is
    whole), and one that ends elsewhere was written to afterwards by
    someone else (say, another implementation's writer), so the record is
    not about these bytes. Into a segment prepared with zeros (the file
    reaches the write's end, and holds only zeros after it) the size says
    nothing, the frames do: the write is whole when its frames run
    unbroken from its start to its end, else it stopped inside (the bytes it
    did not reach are zeros). A longer file with anything but zeros after
    the write was written to afterwards: not about these bytes. The caller
    checks that the start is a frame boundary.
    """
    record = _visible.read_in_flight(directory)
    if record is None or record.seq != seq or not record.start < size:
        return None
    if size < record.end:
        return None if size % mmap.PAGESIZE else record.start
    if size > record.end and not all_zero(path, record.end, size):
        return None
    scan = _segments.scan_segment(seq, path, 0, record.end, start=record.start)
    return None if scan.clean and scan.end == record.end else record.start
