"""Segment files: names, listing, streaming validation and tail judgement.

Shared by the writer's recovery, the readers and the CLI. Memory stays
bounded by one chunk plus the largest frame (P9): files are read in chunks
of at most CHUNK bytes into one reused buffer, and only a frame larger than
a chunk gets a buffer of its own size, dropped once it has been read.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

from walogs import _codec, _io
from walogs._codec import codec
from walogs.errors import FRAME_HEADER_SIZE, MAX_ENTRY_SIZE, LsnOutOfRangeError, WalCorruptError

SEGMENT_RE = re.compile(r"wal-([0-9]+)\.log")
V1_NAME = "wal.log"
# Small, because every live iterator holds one chunk (thousands of followers
# of one log must not cost gigabytes); larger chunks read no faster.
CHUNK = 64 << 10
SECTOR = 512
_ZERO_SECTOR = bytes(SECTOR)
_HEADER = struct.Struct("<IIQ")


def segment_name(seq: int) -> str:
    """The canonical file name of segment ``seq``: ``wal-`` + 6+ digits + ``.log``."""
    return f"wal-{seq:06d}.log"


def list_segments(directory: str) -> dict[int, str]:
    """Segment number -> file name for every segment in ``directory``, in order.

    Names that are not exactly ``wal-`` + decimal digits + ``.log`` are
    ignored (side files). Two names for one number, or number 0, are
    WalCorruptError (FORMAT.md).
    """
    found: dict[int, str] = {}
    for name in _io.listdir(directory):
        match = SEGMENT_RE.fullmatch(name)
        if match is None:
            continue
        seq = int(match.group(1))
        if seq == 0:
            raise WalCorruptError(f"{directory}: segment file {name} has number 0; numbers start at 1")
        if seq in found:
            first, second = sorted((found[seq], name))
            raise WalCorruptError(
                f"{directory}: two files for segment {seq}: {first} and {second}; "
                "keep the right one and move the other out of the directory"
            )
        found[seq] = name
    return dict(sorted(found.items()))


def check_contiguous(directory: str, segments: dict[int, str]) -> None:
    """I11: segment numbers have no gaps (a gap means a lost segment)."""
    seqs = list(segments)
    for before, after in zip(seqs, seqs[1:]):
        if after != before + 1:
            raise WalCorruptError(
                f"{directory}: gap in segment sequence: {segments[before]} is followed by "
                f"{segments[after]}; segments {before + 1}..{after - 1} are missing "
                "(restore them from a backup; the log cannot be read past the gap)"
            )


_REASONS = {
    _codec.codec.SCAN_SHORT: "frame runs past the end of the file",
    _codec.codec.SCAN_BAD_LEN: f"length field exceeds the {MAX_ENTRY_SIZE}-byte maximum",
    _codec.codec.SCAN_BAD_CRC: "CRC mismatch",
    _codec.codec.SCAN_BAD_LSN: "unexpected LSN",
}


@dataclass
class SegmentScan:
    """What a streaming validation of one segment found."""

    seq: int
    path: str
    size: int
    end: int
    """Offset just past the last valid frame."""
    count: int
    first_lsn: int
    """LSN of the first valid frame, 0 if none."""
    last_lsn: int
    """LSN of the last valid frame, 0 if none."""
    status: int
    """SCAN_END when every byte up to the limit is a valid frame."""
    bad_lsn: int = 0
    """The LSN field read at ``end`` when a bad frame sits there."""

    @property
    def clean(self) -> bool:
        """True when the segment is whole frames up to its end."""
        return self.status == codec.SCAN_END

    def reason(self, expect_lsn: int) -> str:
        """Why the frame at ``end`` is not a frame, in words."""
        text = _REASONS[self.status]
        if self.status == codec.SCAN_BAD_LSN:
            text += f" {self.bad_lsn} (expected {expect_lsn})" if expect_lsn else f" {self.bad_lsn}"
        return text


class _Chunks:
    """A read buffer sized to what is read: never more than CHUNK bytes kept (P9).

    It starts empty and grows to the largest read so far, up to CHUNK, so
    reading a small segment, or the few new bytes a follower polls for,
    costs a small buffer. A read larger than CHUNK (one frame larger than a
    chunk) gets a buffer of its own that is not kept: it is freed once its
    FrameReader has stopped, so one large entry does not leave every reader
    holding a buffer its size. A new bytearray replaces the kept one when it
    grows, since a FrameReader may still hold a view of the old one.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def read(self, fd: int, offset: int, length: int) -> memoryview:
        """Up to ``length`` bytes of ``fd`` from ``offset`` (fewer at the end of the file)."""
        if length > CHUNK:
            buf = bytearray(length)
        else:
            if length > len(self._buf):
                self._buf = bytearray(length)
            buf = self._buf
        view = memoryview(buf)[:length]
        got = _io.pread_into(fd, view, offset)
        return view[:got]


def _header_at(view: memoryview, offset: int) -> tuple[int, int, int] | None:
    if len(view) - offset < FRAME_HEADER_SIZE:
        return None
    return _HEADER.unpack_from(view, offset)


def scan_segment(seq: int, path: str, expect_lsn: int = 0, limit: Optional[int] = None) -> SegmentScan:
    """Validate the frames of one segment up to ``limit`` (default: its size).

    ``expect_lsn`` is the LSN its first frame must carry (0: any). Streams
    the file; creates no object per frame.
    """
    fd = _io.open_read(path)
    try:
        size = _io.file_size(fd)
        stop = size if limit is None else min(limit, size)
        chunks = _Chunks()
        result = SegmentScan(seq, path, size, 0, 0, 0, 0, codec.SCAN_END)
        pos, expect = 0, expect_lsn
        while pos < stop:
            view = chunks.read(fd, pos, min(CHUNK, stop - pos))
            end, count, first, last, status = codec.scan(view, 0, expect)
            if count:
                result.first_lsn = result.first_lsn or first
                result.last_lsn, result.count, expect = last, result.count + count, last + 1
            pos += end
            if status == codec.SCAN_END:
                continue
            header = _header_at(view, end)
            if status == codec.SCAN_SHORT and pos + len(view) - end < stop:
                # Cut by the chunk, not by the file: read on (a big frame gets its own buffer).
                if end == 0 and header is not None:
                    view = chunks.read(fd, pos, min(FRAME_HEADER_SIZE + header[0], stop - pos))
                    end, count, first, last, status = codec.scan(view, 0, expect)
                    if count:
                        result.first_lsn = result.first_lsn or first
                        result.last_lsn, result.count, expect = last, result.count + count, last + 1
                        pos += end
                        continue
                    header = _header_at(view, 0)
                else:
                    continue
            result.status = status
            result.bad_lsn = header[2] if header else 0
            break
        result.end = pos
        return result
    finally:
        _io.close(fd)


def find_continuing_frame(path: str, bad_offset: int, after_lsn: int, limit: Optional[int] = None,
                          anchor: Optional[int] = None) -> Optional[int]:
    """The offset of the first valid frame after ``bad_offset`` that could continue the log.

    P10: such a frame means the damage is in the middle of written data, not
    a torn tail. Only frames that end by ``limit`` (default: the file's
    size) count. The LSN window (FORMAT.md) counts the 16-byte headers that
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
        chunks = _Chunks()
        pos = bad_offset + 1
        while pos + FRAME_HEADER_SIZE <= size:
            view = chunks.read(fd, pos, min(CHUNK, size - pos))
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

    P10, etcd's rule: such a block is storage a power failure left
    unwritten, so the damage is a torn tail even if valid frames follow.
    """
    first = -(-start // SECTOR) * SECTOR
    if first + SECTOR > end:
        return False
    fd = _io.open_read(path)
    try:
        chunks = _Chunks()
        pos = first
        while pos + SECTOR <= end:
            length = min(CHUNK, (end - pos) // SECTOR * SECTOR)
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


@dataclass
class TailVerdict:
    """How to read damage found in the last segment (FORMAT.md, P10)."""

    torn: bool
    """True: a torn tail, safe to cut at the bad offset. False: mid-log damage."""
    continuing_offset: Optional[int]
    """Offset of the first valid continuing frame after the damage, if any."""


def judge_tail(scan: SegmentScan, after_lsn: int) -> TailVerdict:
    """Decide whether the first bad frame of the last segment is a torn tail (P10).

    ``after_lsn`` is the last good LSN before the bad frame (from earlier
    segments or the LSN floor when this one has no good frame). 0 means no
    LSN is known: then any valid frame counts as continuing, because
    calling a torn tail corrupt loses nothing, while the reverse would cut
    good frames.
    """
    continuing = find_continuing_frame(scan.path, scan.end, after_lsn)
    if continuing is None:
        return TailVerdict(True, None)
    unwritten = zeros_to_sector_end(scan.path, scan.end, continuing) or has_zero_sector(
        scan.path, scan.end, continuing
    )
    return TailVerdict(unwritten, continuing)


def zeros_to_sector_end(path: str, bad_offset: int, end: int) -> bool:
    """True if the bytes from ``bad_offset`` to the next 512-byte boundary (16 at least) are zero.

    P10: the sector that held the end of the last synced frame was rewritten
    but lost, so the disk shows that sector as it was: the old frames, then
    zeros. A real frame never has an all-zero header (LSN 0 is never
    written), so a zeroed header running to the boundary is unwritten storage.
    """
    stop = max(bad_offset + FRAME_HEADER_SIZE, (bad_offset // SECTOR + 1) * SECTOR)
    if stop > end:
        return False
    fd = _io.open_read(path)
    try:
        data = os.pread(fd, stop - bad_offset, bad_offset)
    finally:
        _io.close(fd)
    return len(data) == stop - bad_offset and not any(data)


def corrupt_error(directory: str, scan: SegmentScan, expect_lsn: int, what: str, advice: str,
                  in_last_segment: bool = False) -> WalCorruptError:
    """A WalCorruptError naming the directory, segment, offset and reason.

    ``what`` names the kind of damage ("LSN discontinuity", "corruption in
    completed segment"); the message reads ``DIR: WHAT: REASON in segment
    NAME at offset N (last good LSN L); ADVICE``.
    """
    name = os.path.basename(scan.path)
    last_good = scan.last_lsn or max(expect_lsn - 1, 0)
    return WalCorruptError(
        f"{directory}: {what}: {scan.reason(expect_lsn)} in segment {name} at offset {scan.end} "
        f"(last good LSN {last_good or 'none'}); {advice}",
        segment=name, offset=scan.end, in_last_segment=in_last_segment,
    )


def peek_first_lsn(path: str) -> Optional[int]:
    """The LSN field of a segment's first frame header (unchecked), None if empty."""
    fd = _io.open_read(path)
    try:
        header = os.pread(fd, FRAME_HEADER_SIZE, 0)
    finally:
        _io.close(fd)
    if len(header) < FRAME_HEADER_SIZE:
        return None
    return _HEADER.unpack(header)[2]


class SegmentCursor:
    """Sequential reader of one segment's frames; keeps its descriptor open.

    Holding the descriptor lets a reader finish a segment that a checkpoint
    deletes meanwhile. Reading stops quietly at the first thing that is not
    a valid continuing frame; ``status`` and ``offset`` then say what and
    where, and the caller decides whether that is a torn tail or corruption.
    """

    def __init__(self, directory: str, seq: int, name: str, expect_lsn: int = 0, skip_before: int = 0) -> None:
        self.directory = directory
        self.seq = seq
        self.path = os.path.join(directory, name)
        try:
            self._fd: Optional[int] = _io.open_read(self.path)
        except FileNotFoundError:
            raise LsnOutOfRangeError(
                f"{directory}: segment {name} was removed (by a checkpoint) while entries from "
                f"LSN {max(expect_lsn, skip_before)} were still to be read; start again from first_lsn"
            ) from None
        self.offset = 0
        self.expect = expect_lsn
        self.skip_before = skip_before
        self.status = codec.SCAN_END
        self.bad_lsn = 0

    @property
    def last_lsn(self) -> int:
        """LSN of the last frame read (or skipped), 0 if none."""
        return self.expect - 1 if self.expect else 0

    def size(self) -> int:
        """The file's size now."""
        assert self._fd is not None
        return _io.file_size(self._fd)

    def frames(self, limit: Optional[int] = None) -> Iterator[tuple[int, bytes]]:
        """The frames from ``offset`` up to ``limit`` (None: the file's size now), as an iterator.

        A ChainReader over :meth:`readers`: one C-level ``next`` per frame
        with the compiled codec, Python only between chunks.
        """
        return codec.ChainReader(self.readers(limit))

    def readers(self, limit: Optional[int] = None) -> Iterator[codec.FrameReader]:
        """The FrameReaders that read the frames from ``offset`` up to ``limit`` (None: the file's size now).

        For a ChainReader: each reader must be read to its end before the
        next one is asked for. In between, this moves ``offset`` and
        ``expect`` past what the reader read, and it reads on from there
        (the next chunk, or a frame larger than a chunk whole) or stops,
        setting ``status`` and ``bad_lsn``. The file size is taken when the
        first reader is asked for.

        The read buffer lives only as long as this generator (P9): a cursor
        between passes, such as an idle follower's, holds none.
        """
        fd = self._fd
        assert fd is not None
        stop = _io.file_size(fd) if limit is None else limit
        self.status = codec.SCAN_END
        chunks = _Chunks()
        while self.offset < stop:
            start = self.offset
            view = chunks.read(fd, start, min(CHUNK, stop - start))
            reader = codec.FrameReader(view, 0, self.expect, self.skip_before)
            yield reader
            self._advance(reader)
            if reader.status == codec.SCAN_END and len(view) == min(CHUNK, stop - start):
                continue
            header = _header_at(view, reader.offset)
            cut_by_chunk = start + len(view) < stop and len(view) == CHUNK
            if reader.status == codec.SCAN_SHORT and cut_by_chunk:
                if reader.offset or header is None:
                    continue
                # A frame larger than a chunk gets a buffer of its own size, not kept (P9).
                whole = chunks.read(fd, start, min(FRAME_HEADER_SIZE + header[0], stop - start))
                reader = codec.FrameReader(whole, 0, self.expect, self.skip_before)
                yield reader
                self._advance(reader)
                header = _header_at(whole, 0)
                del whole  # the reader has let go of it; so does this generator
                if reader.offset:
                    continue
            # A short read (file shorter than limit) counts as a frame cut short.
            self.status = reader.status if reader.status != codec.SCAN_END else codec.SCAN_SHORT
            self.bad_lsn = header[2] if header else 0
            return

    def _advance(self, reader: codec.FrameReader) -> None:
        if reader.status == codec.SCAN_RUNNING:
            # P5: moving on from a reader that was not read to its end would skip its frames.
            raise RuntimeError(f"{self.path}: a FrameReader from SegmentCursor.readers was not read to its end")
        self.offset += reader.offset
        if reader.last_lsn:
            self.expect = reader.last_lsn + 1

    def scan_view(self) -> SegmentScan:
        """The stop described as a SegmentScan, for judge_tail and error messages."""
        return SegmentScan(self.seq, self.path, self.size(), self.offset, 0, 0, self.last_lsn,
                           self.status, self.bad_lsn)

    def corrupt(self, what: str, advice: str) -> WalCorruptError:
        """A WalCorruptError for the frame where reading stopped."""
        return corrupt_error(self.directory, self.scan_view(), self.expect, what, advice)

    def close(self) -> None:
        """Close the descriptor."""
        if self._fd is not None:
            _io.close(self._fd)
            self._fd = None


def iter_segment(
    directory: str, path: str, expect_lsn: int, skip_before: int, limit: Optional[int]
) -> Iterator[tuple[int, bytes]]:
    """Yield the frames of one segment with LSN >= ``skip_before``, up to ``limit``.

    Every byte before the limit must be a whole valid frame continuing from
    ``expect_lsn``; anything else raises WalCorruptError naming segment and
    offset (I10: a bad frame is never yielded). A missing file raises
    LsnOutOfRangeError (P5: a checkpoint removed it; never skip). The file
    is opened on the first ``next`` and closed when the iterator ends, is
    closed or is dropped.
    """
    return codec.ChainReader(_segment_readers(directory, path, expect_lsn, skip_before, limit))


def _segment_readers(
    directory: str, path: str, expect_lsn: int, skip_before: int, limit: Optional[int]
) -> Iterator[codec.FrameReader]:
    cursor = SegmentCursor(directory, 0, os.path.basename(path), expect_lsn, skip_before)
    try:
        yield from cursor.readers(limit)
        if cursor.status != codec.SCAN_END:
            raise cursor.corrupt(
                "bad frame before the end of the stored log",
                "run `walogs verify` on the directory for a full report",
            )
    finally:
        cursor.close()
