"""Segment files: the one listing of a directory's segments, streaming validation, reading.

Shared by the writer's recovery, the readers, the CLI and salvage. Memory
stays bounded by one chunk plus the largest frame, whatever the size of the
log: files are read in chunks of at most CHUNK bytes into one reused
buffer, and only a frame larger than a chunk gets a buffer of its own size,
dropped once it has been read. Whether a bad frame is a torn tail or damage
is ``walogs._damage``'s to judge.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

from walogs import _floor, _io
from walogs._format import FLOOR_NAME, FRAME_HEADER_SIZE, MAX_ENTRY_SIZE, SEGMENT_RE, V1_NAME, segment_name
from walogs._format import FRAME_HEADER as _HEADER
from walogs._impl import codec
from walogs.errors import LsnOutOfRangeError, WalCorruptError

# Small, because every live iterator holds one chunk (thousands of followers
# of one log must not cost gigabytes); larger chunks read no faster.
CHUNK = 64 << 10

# Also read from here by walogs.wal: V1_NAME, segment_name.
__all__ = ["CHUNK", "V1_NAME", "Chunks", "SegmentCursor", "SegmentScan", "check_contiguous", "check_tail",
           "contiguous_segment_files", "corrupt_error", "iter_segment", "peek_lsn", "scan_segment",
           "segment_files", "segment_name"]


# ---------------------------------------------------------------------------- listing


def segment_files(directory: str) -> tuple[dict[int, str], bool]:
    """The segments of ``directory`` (number -> file name, in order), and whether they are a legacy log.

    Names that are not exactly ``wal-`` + decimal digits + ``.log`` are
    ignored (side files). Two names for one number, or number 0, are
    WalCorruptError. A legacy v1 log is its single ``wal.log``, listed as
    segment 1 (True); it beside segment files is WalCorruptError.
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
    segments = dict(sorted(found.items()))
    v1 = os.path.exists(os.path.join(directory, V1_NAME))
    if v1 and segments:
        raise WalCorruptError(
            f"{directory}: both a legacy {V1_NAME} and segment files "
            f"({', '.join(segments.values())}) exist; move {V1_NAME} away if its "
            "entries are already in the segments, else keep it alone"
        )
    return ({1: V1_NAME}, True) if v1 else (segments, False)


def check_contiguous(directory: str, segments: dict[int, str]) -> None:
    """Segment numbers have no gaps: a gap means a lost segment (WalCorruptError)."""
    seqs = list(segments)
    for before, after in zip(seqs, seqs[1:]):
        if after != before + 1:
            raise WalCorruptError(
                f"{directory}: gap in segment sequence: {segments[before]} is followed by "
                f"{segments[after]}; segments {before + 1}..{after - 1} are missing "
                "(restore them from a backup; the log cannot be read past the gap)"
            )


_CHECKPOINT_RACES = 1000  # listings retaken because a checkpoint deleted their oldest segment meanwhile


def contiguous_segment_files(directory: str, attempts: int = 5) -> tuple[dict[int, str], bool]:
    """``segment_files``, checked for gaps, a missing tail included.

    A listing taken while a live writer rotates and checkpoints is not
    atomic: it can miss a segment that exists. A gap is only reported when
    fresh listings keep showing it. A listing whose oldest segment is gone
    by the time its gap is seen raced a checkpoint (which deletes oldest
    first): it is taken again without counting as an attempt, up to
    ``_CHECKPOINT_RACES`` times. The high-water mark is read before each
    listing: the segment it names existed durably by then, and the newest
    segment is never deleted, so a listing taken after it holds that
    number or a higher one.
    """
    attempt = races = 0
    while True:
        newest = _durable_seq(directory)
        files, v1 = segment_files(directory)
        try:
            check_contiguous(directory, files)
            check_tail(directory, files, newest)
            return files, v1
        except WalCorruptError:
            oldest = next(iter(files.values()), None)
            deleted_meanwhile = oldest is not None and not os.path.exists(os.path.join(directory, oldest))
            if deleted_meanwhile and races < _CHECKPOINT_RACES:
                races += 1
                continue
            attempt += 1
            if attempt == attempts:
                raise
            time.sleep(0.001 * attempt)


def _durable_seq(directory: str) -> int:
    # For the tail check only: a damaged LSN_FLOOR is reported by examine (the writer
    # refuses to open), while readers and listings still read every stored entry.
    try:
        return _floor.read(directory).seq
    except WalCorruptError:
        return 0


def check_tail(directory: str, files: dict[int, str], durable_seq: int) -> None:
    """Segment ``durable_seq`` (from LSN_FLOOR) was made durable, so it or a later one exists."""
    newest = max(files, default=0)
    if newest >= durable_seq:
        return
    missing = segment_name(durable_seq)
    first_missing = segment_name(newest + 1)
    lost = missing if newest + 1 == durable_seq else f"{first_missing} to {missing}"
    now = f"the newest segment file is {files[newest]}" if files else "no segment file is left"
    raise WalCorruptError(
        f"{directory}: segment {lost} is missing: {FLOOR_NAME} records that segment "
        f"{durable_seq} was made durable, but {now}, so the newest entries were deleted or lost "
        f"(and opening without them would hand out their LSNs again). Restore the missing segment "
        f"files from a backup; to continue without their entries, create an empty file named "
        f"{missing} in the directory: the log then continues after the last entry it still holds",
        segment=missing, offset=0,
    )


# ---------------------------------------------------------------------------- validation

_REASONS = {
    codec.SCAN_SHORT: "frame runs past the end of the file",
    codec.SCAN_BAD_LEN: f"length field exceeds the {MAX_ENTRY_SIZE}-byte maximum",
    codec.SCAN_BAD_CRC: "CRC mismatch",
    codec.SCAN_BAD_LSN: "unexpected LSN",
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


class Chunks:
    """A read buffer sized to what is read: never more than CHUNK bytes kept.

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


def scan_segment(seq: int, path: str, expect_lsn: int = 0, limit: Optional[int] = None, start: int = 0) -> SegmentScan:
    """Validate the frames of one segment from ``start`` (a frame boundary) up to ``limit`` (default: its size).

    ``expect_lsn`` is the LSN its first frame must carry (0: any). Streams
    the file; creates no object per frame.
    """
    fd = _io.open_read(path)
    try:
        size = _io.file_size(fd)
        stop = size if limit is None else min(limit, size)
        chunks = Chunks()
        result = SegmentScan(seq, path, size, start, 0, 0, 0, codec.SCAN_END)
        pos, expect = start, expect_lsn
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


def peek_lsn(path: str, offset: int = 0) -> Optional[int]:
    """The LSN field of the frame header at ``offset`` of a segment (unchecked), None if there is none.

    LSN 0 is never written: a zero header is the zero tail of a segment
    prepared with zeros (docs/format.md), so there is no frame there either.
    """
    header = _io.read_at(path, FRAME_HEADER_SIZE, offset)
    if len(header) < FRAME_HEADER_SIZE:
        return None
    return _HEADER.unpack(header)[2] or None


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

        The read buffer lives only as long as this generator: a cursor
        between passes, such as an idle follower's, holds none.
        """
        fd = self._fd
        assert fd is not None
        stop = _io.file_size(fd) if limit is None else limit
        self.status = codec.SCAN_END
        chunks = Chunks()
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
        """The stop described as a SegmentScan, for walogs._damage and error messages."""
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
    offset (a bad frame is never yielded). A missing file raises
    LsnOutOfRangeError (a checkpoint removed it; entries are never skipped). The file
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
