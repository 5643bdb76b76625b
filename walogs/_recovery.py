"""What a log directory holds, found by scanning it; and the writer's repair of it.

``examine`` is read-only and serves writers, readers and ``walogs verify``;
``recover`` is the writer's open: v1 migration, first segment, torn-tail
truncation (I2) and the syncs of P11. FORMAT.md's table "What a scan
concludes" is implemented here.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from walogs import _floor, _io, _segments
from walogs._codec import codec
from walogs.errors import WalCorruptError


@dataclass
class SegmentInfo:
    """One segment as recovery left it."""

    seq: int
    name: str
    first_lsn: int
    """0 when the segment holds no entry."""
    last_lsn: int
    """0 when the segment holds no entry."""
    end: int
    """Bytes of whole valid frames."""


@dataclass
class LogLayout:
    """The segments of a log and where its valid data ends."""

    directory: str
    segments: list[SegmentInfo] = field(default_factory=list)
    torn_at: Optional[int] = None
    """Offset in the last segment where a torn tail starts (None: clean)."""
    torn_size: int = 0
    """Size of the last segment file when it has a torn tail."""
    floor: int = 0
    """LSN floor from the side file (0: none)."""
    v1: bool = False
    """True when the log is a legacy single ``wal.log``."""

    @property
    def last_stored_lsn(self) -> int:
        """The highest LSN stored, 0 if none."""
        return max((seg.last_lsn for seg in self.segments), default=0)

    @property
    def first_stored_lsn(self) -> Optional[int]:
        """The oldest LSN stored, None if none."""
        return next((seg.first_lsn for seg in self.segments if seg.first_lsn), None)

    @property
    def next_lsn(self) -> int:
        """I8: the next LSN derived from the segments; the floor only when none is stored (P1)."""
        last = self.last_stored_lsn
        return last + 1 if last else max(1, self.floor)

    def path_of(self, seg: SegmentInfo) -> str:
        """Full path of a segment file."""
        return os.path.join(self.directory, seg.name)


def segment_files(directory: str) -> tuple[dict[int, str], bool]:
    """The segment files, and whether they are a legacy v1 ``wal.log`` read as segment 1."""
    segments = _segments.list_segments(directory)
    v1 = os.path.exists(os.path.join(directory, _segments.V1_NAME))
    if v1 and segments:
        raise WalCorruptError(
            f"{directory}: both a legacy {_segments.V1_NAME} and segment files "
            f"({', '.join(segments.values())}) exist; move {_segments.V1_NAME} away if its "
            "entries are already in the segments, else keep it alone"
        )
    if v1:
        segments = {1: _segments.V1_NAME}
    return segments, v1


def contiguous_segment_files(directory: str, attempts: int = 5) -> tuple[dict[int, str], bool]:
    """``segment_files``, checked for gaps (I11).

    A listing taken while a live writer rotates and checkpoints is not
    atomic: it can miss a segment that exists. A gap is only reported when
    fresh listings keep showing it.
    """
    for attempt in range(attempts):
        files, v1 = segment_files(directory)
        try:
            _segments.check_contiguous(directory, files)
            return files, v1
        except WalCorruptError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.001 * (attempt + 1))
    raise AssertionError("unreachable")


def examine(directory: str, progress: Optional[Callable[[str, int], None]] = None) -> LogLayout:
    """Scan every segment read-only and judge the tail (FORMAT.md, P10). Never writes.

    Raises WalCorruptError for damage in a completed segment, a segment gap
    (I11), an LSN jump (I12) or mid-log damage in the last segment (P10).
    ``progress(name, size)`` is called after each segment is scanned.
    """
    files, v1 = contiguous_segment_files(directory)
    layout = LogLayout(directory, floor=_floor.read_floor(directory), v1=v1)
    expect = 0
    seqs = list(files)
    for seq in seqs:
        is_last = seq == seqs[-1]
        path = os.path.join(directory, files[seq])
        scan = _segments.scan_segment(seq, path, expect)
        if progress is not None:
            progress(files[seq], scan.size)
        if not scan.clean:
            _judge_damage(directory, scan, expect, is_last, layout)
        if not is_last and scan.size == 0:
            # rotate() never completes an empty segment: this one lost its entries.
            raise WalCorruptError(
                f"{directory}: completed segment {files[seq]} is empty; a completed segment always "
                "holds entries, so they were lost: restore the segment from a backup",
                segment=files[seq], offset=0,
            )
        layout.segments.append(SegmentInfo(seq, files[seq], scan.first_lsn, scan.last_lsn, scan.end))
        if scan.count:
            expect = scan.last_lsn + 1
    return layout


def _judge_damage(directory: str, scan: _segments.SegmentScan, expect: int, is_last: bool, layout: LogLayout) -> None:
    if scan.status == codec.SCAN_BAD_LSN:
        # A whole frame with a valid CRC cannot be a torn write: it is an LSN jump (I12).
        raise _segments.corrupt_error(
            directory, scan, expect, "LSN discontinuity",
            "entries between are missing; restore the segments from a backup", in_last_segment=is_last,
        )
    if not is_last:
        raise _segments.corrupt_error(
            directory, scan, expect, "corruption in completed segment",
            "completed segments are never cut; restore the segment from a backup",
        )
    # The LSN window of a continuing frame starts after the last good frame before the damage.
    # With no LSN known at all (0), judge_tail accepts any LSN: a false "corrupt" is safe, a false "torn" is not.
    after_lsn = scan.last_lsn if scan.count else max(expect - 1, layout.floor - 1, 0)
    verdict = _segments.judge_tail(scan, after_lsn)
    if not verdict.torn:
        raise _segments.corrupt_error(
            directory, scan, expect,
            f"mid-log damage (a valid frame continuing the log follows at offset {verdict.continuing_offset})",
            "nothing was truncated; `walogs repair DIR --truncate-corrupt-tail` cuts it and keeps "
            "the cut bytes in a side file (P10)", in_last_segment=True,
        )
    layout.torn_at = scan.end
    layout.torn_size = scan.size


def ensure_directory(path: str) -> None:
    """Create the log directory and any missing parents, syncing each parent (I3).

    A path that exists but is not a directory raises NotADirectoryError.
    """
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    ensure_directory(parent)
    try:
        _io.mkdir(path)
    except FileExistsError:
        # Another process may have just made it: only a non-directory is an error.
        if os.path.isdir(path):
            return
        raise NotADirectoryError(errno.ENOTDIR, "not a directory: a log needs a directory of its own", path) from None
    _io.sync_dir(parent)


def recover(directory: str) -> tuple[LogLayout, int]:
    """The writer's open (caller holds the lock): returns the layout and a write fd on the last segment.

    Migrates a v1 ``wal.log``, creates segment 1 in an empty directory,
    cuts a torn tail (I2) and syncs the last segment and the directory
    before returning (P11), so what a crashed writer left in the page
    cache is on disk before anything is built on it.
    """
    files, v1 = segment_files(directory)
    if v1:
        # FORMAT.md: the legacy single file becomes segment 1 on the first writer open.
        _io.rename(os.path.join(directory, _segments.V1_NAME), os.path.join(directory, _segments.segment_name(1)))
        _io.sync_dir(directory)
    elif not files:
        fd = _io.create_new(os.path.join(directory, _segments.segment_name(1)))
        _io.close(fd)
        _io.sync_dir(directory)  # I15: the segment exists durably before its first frame
    layout = examine(directory)
    active = layout.path_of(layout.segments[-1])
    fd = _io.open_write(active)
    try:
        if layout.torn_at is not None:
            _io.ftruncate(fd, layout.torn_at)  # I2: a real truncate, synced below
        _io.fdatasync(fd)  # P11
        _io.sync_dir(directory)
    except BaseException:
        _io.close(fd)
        raise
    return layout, fd
