"""Segment files: names, listing, streaming validation and tail judgement.

Shared by the writer's recovery, the readers and the CLI. Memory stays
bounded by one chunk plus the largest frame (P9): files are read in chunks
of CHUNK bytes into one reused buffer, and only a frame larger than a chunk
gets a buffer of its own size.
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
CHUNK = 4 << 20
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
    """One reusable read buffer, grown only for frames larger than a chunk (P9)."""

    def __init__(self) -> None:
        self._buf = bytearray(CHUNK)

    def read(self, fd: int, offset: int, length: int) -> memoryview:
        if length > len(self._buf):
            self._buf = bytearray(length)
        view = memoryview(self._buf)[:length]
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


def find_continuing_frame(path: str, bad_offset: int, after_lsn: int) -> Optional[int]:
    """The offset of the first valid frame after ``bad_offset`` that could continue the log.

    P10: such a frame means the damage is in the middle of written data, not
    a torn tail. Streams the file in chunks; a candidate frame larger than a
    chunk is read whole (at most MAX_ENTRY_SIZE + 16 bytes).
    """
    fd = _io.open_read(path)
    try:
        size = _io.file_size(fd)
        chunks = _Chunks()
        pos = bad_offset + 1
        while pos + FRAME_HEADER_SIZE <= size:
            view = chunks.read(fd, pos, min(CHUNK, size - pos))
            found, kind = codec.find_frame(view, 0, after_lsn, bad_offset - pos)
            if kind == codec.FIND_FRAME:
                return pos + found
            if kind == codec.FIND_NONE:
                pos += found
                continue
            candidate = pos + found
            length = _HEADER.unpack_from(view, found)[0]
            if candidate + FRAME_HEADER_SIZE + length <= size:
                whole = chunks.read(fd, candidate, FRAME_HEADER_SIZE + length)
                if codec.find_frame(whole, 0, after_lsn, bad_offset - candidate) == (0, codec.FIND_FRAME):
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
    segments when this one has no good frame; 0 when unknown).
    """
    continuing = find_continuing_frame(scan.path, scan.end, after_lsn)
    if continuing is None:
        return TailVerdict(True, None)
    return TailVerdict(has_zero_sector(scan.path, scan.end, continuing), continuing)


def corrupt_error(directory: str, scan: SegmentScan, expect_lsn: int, what: str, advice: str) -> WalCorruptError:
    """A WalCorruptError naming the directory, segment, offset and reason."""
    name = os.path.basename(scan.path)
    return WalCorruptError(
        f"{directory}: {what} in segment {name} at offset {scan.end}: "
        f"{scan.reason(expect_lsn)} ({scan.count} valid frames before it, "
        f"last LSN {scan.last_lsn or 'none'}); {advice}"
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


def iter_segment(
    directory: str,
    path: str,
    expect_lsn: int,
    skip_before: int,
    limit: Optional[int],
    fd: Optional[int] = None,
) -> Iterator[tuple[int, bytes]]:
    """Yield the frames of one segment with LSN >= ``skip_before``, up to ``limit``.

    ``limit`` None reads to the end of the file. Every byte before the limit
    must be a whole valid frame continuing from ``expect_lsn`` (0: any first
    LSN); anything else raises WalCorruptError naming segment and offset
    (I10: a bad frame is never yielded). A missing file raises
    LsnOutOfRangeError (P5: a checkpoint removed it; never skip).
    """
    if fd is None:
        try:
            fd = _io.open_read(path)
        except FileNotFoundError:
            raise LsnOutOfRangeError(
                f"{directory}: segment {os.path.basename(path)} was removed (by a checkpoint) "
                f"while entries from LSN {max(expect_lsn, skip_before)} were still to be read; "
                "start again from first_lsn"
            ) from None
    try:
        stop = _io.file_size(fd) if limit is None else limit
        chunks = _Chunks()
        pos, expect = 0, expect_lsn
        while pos < stop:
            view = chunks.read(fd, pos, min(CHUNK, stop - pos))
            reader = codec.FrameReader(view, 0, expect, skip_before)
            yield from reader
            if reader.last_lsn:
                expect = reader.last_lsn + 1
            pos += reader.offset
            if reader.status == codec.SCAN_END:
                continue
            header = _header_at(view, reader.offset)
            if reader.status == codec.SCAN_SHORT and len(view) < stop - (pos - reader.offset):
                if reader.offset == 0 and header is not None:
                    whole = chunks.read(fd, pos, min(FRAME_HEADER_SIZE + header[0], stop - pos))
                    reader = codec.FrameReader(whole, 0, expect, skip_before)
                    yield from reader
                    if reader.offset:
                        expect = reader.last_lsn + 1
                        pos += reader.offset
                        continue
                    header = _header_at(whole, 0)
                else:
                    continue
            scan = SegmentScan(0, path, stop, pos, 0, 0, expect - 1, reader.status, header[2] if header else 0)
            raise corrupt_error(
                directory, scan, expect, "bad frame before the end of the stored log",
                "run `walogs verify` on the directory for a full report",
            )
    finally:
        _io.close(fd)
