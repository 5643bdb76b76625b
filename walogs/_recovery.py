"""What a log directory holds, found by scanning it; and the writer's repair of it.

``examine`` is read-only and serves the writer's open and ``walogs
verify``; it judges damage with ``walogs._damage``. ``recover`` is the
writer's open: v1 migration, first segment, the cut of a torn tail (a real
truncate, synced) or of a write a killed writer left half done, the syncs
that make what a crashed writer left durable before anything is built on
it, and the LSN floor's high-water mark.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

from walogs import _damage, _floor, _io, _segments
from walogs._format import (CURSORS_DIR, FLOOR_NAME, FLOOR_TEMP_NAME, LOCK_NAME, PREPARED_NAME, SEGMENT_RE, V1_NAME,
                            VISIBLE_NAME, WRITERS_NAME, segment_name)
from walogs.errors import WalCorruptError

# Re-exported for walogs.wal, which lists segments through this module until it asks
# walogs._segments, the one home of the listing.
segment_files = _segments.segment_files


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
        """The next LSN, derived from the segments on disk; from the floor only when no entry is stored."""
        last = self.last_stored_lsn
        return last + 1 if last else max(1, self.floor)

    def path_of(self, seg: SegmentInfo) -> str:
        """Full path of a segment file."""
        return os.path.join(self.directory, seg.name)


def examine(directory: str, progress: Optional[Callable[[str, int], None]] = None) -> LogLayout:
    """Scan every segment read-only and judge a bad frame (``walogs._damage``). Never writes.

    Raises WalCorruptError for damage in a completed segment, a gap in the
    segment numbers, an LSN jump or mid-log damage in the last segment.
    ``progress(name, size)`` is called after each segment is scanned.
    """
    files, v1 = _segments.contiguous_segment_files(directory)
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
        if is_last:
            _cut_write_in_flight(layout, scan.size)  # what the next writer open cuts, verify reports too
    return layout


def _judge_damage(directory: str, scan: _segments.SegmentScan, expect: int, is_last: bool, layout: LogLayout) -> None:
    after_lsn = _damage.last_good_lsn(scan, expect, layout.floor)
    verdict = _damage.judge(scan, after_lsn, last_segment=is_last)
    if verdict.clean:
        return  # zeros the writer writes into: nothing to cut
    if not verdict.torn:
        raise verdict.error(directory, scan, expect)
    layout.torn_at = scan.end
    layout.torn_size = scan.size


def ensure_directory(path: str) -> list[str]:
    """Create the log directory and any missing parents, syncing each parent.

    Returns the directories it created, outermost first. A path that exists
    but is not a directory raises NotADirectoryError.
    """
    if os.path.isdir(path):
        return []
    parent = os.path.dirname(os.path.abspath(path))
    created = ensure_directory(parent)
    try:
        _io.mkdir(path)
    except FileExistsError:
        # Another process may have just made it: only a non-directory is an error.
        if os.path.isdir(path):
            return created
        raise NotADirectoryError(errno.ENOTDIR, "not a directory: a log needs a directory of its own", path) from None
    created.append(path)
    _io.sync_dir(parent)
    return created


def holds_log(directory: str) -> bool:
    """True if ``directory`` holds segment files, a legacy ``wal.log`` or an LSN floor: a log."""
    files, v1 = _segments.segment_files(directory)
    return bool(files) or v1 or os.path.exists(os.path.join(directory, FLOOR_NAME))


SIDE_FILES = frozenset({LOCK_NAME, VISIBLE_NAME, FLOOR_NAME, FLOOR_TEMP_NAME, WRITERS_NAME, PREPARED_NAME, CURSORS_DIR})
"""Names walogs itself puts in a log directory besides segments."""


def prepare_directory(directory: str, create: Optional[bool]) -> list[str]:
    """``Wal.open``'s checks of the path; returns the directories it created (outermost first).

    ``create=None`` makes a new log only in a missing directory or one that
    holds nothing but walogs files; ``True`` also in a directory holding
    other files; ``False`` never (FileNotFoundError unless a log is there).
    A non-empty directory that holds no log is FileExistsError: adopting it
    would mix a log into someone else's files.
    """
    if create is False:
        if not os.path.isdir(directory) or not holds_log(directory):
            raise FileNotFoundError(
                errno.ENOENT, "no walogs log here (no segment file), and create=False forbids making one; "
                "open it without create=False to make a new log", directory,
            )
        return []
    created = ensure_directory(directory)
    if created or create:
        return created
    # One listing, judged name by name: a walogs open racing this one only adds walogs names.
    names = _io.listdir(directory)
    if any(SEGMENT_RE.fullmatch(name) or name == V1_NAME for name in names):
        return []
    foreign = sorted(name for name in names if name not in SIDE_FILES)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise FileExistsError(
            errno.EEXIST, f"the directory holds other files ({shown}) and no walogs log; a log needs a "
            "directory of its own: pick an empty or new directory, or pass create=True to make the log "
            "here anyway", directory,
        )
    return []


def discard_new_log(directory: str, existed: frozenset[str]) -> None:
    """Undo a new log whose creation failed (a full disk): remove the walogs files this open made.

    ``existed`` is the directory's listing before the open made anything;
    those files stay. LOCK goes with the lock (``WriterLock.discard``). Best
    effort: what cannot be removed stays.
    """
    for name in (segment_name(1), VISIBLE_NAME, FLOOR_NAME, FLOOR_TEMP_NAME, PREPARED_NAME):
        if name in existed:
            continue
        try:
            _io.unlink(os.path.join(directory, name))
        except OSError:
            pass


def remove_created_directories(created_dirs: list[str]) -> None:
    """Remove the directories ``ensure_directory`` made, innermost first, while they are empty."""
    for path in reversed(created_dirs):
        try:
            os.rmdir(path)
        except OSError:
            return


def recover(directory: str, keep_zeros: bool = True) -> tuple[LogLayout, int]:
    """The writer's open (caller holds the lock): returns the layout and a write fd on the last segment.

    Migrates a v1 ``wal.log``, creates segment 1 in an empty directory,
    cuts a torn tail (a real truncate) or a write a killed writer left half
    done (all of a batch goes, never a prefix), and syncs the last segment
    and the directory before returning, so what a crashed writer left in the
    page cache is on disk before anything is built on it. Then records the
    high-water mark in LSN_FLOOR (a full disk is tolerated there: the log
    must open to be checkpointed).

    Zeros after the last frame of the last segment (a zero tail: a writer
    wrote into a segment prepared with zeros, docs/format.md) are a clean
    end and stay, for the writer to write into; ``keep_zeros=False`` cuts
    them too (shared writers, which never write into zeros), reported clean.
    """
    files, v1 = _segments.segment_files(directory)
    floor = _floor.read(directory)
    if v1:
        # docs/format.md: the legacy single file becomes segment 1 on the first writer open.
        _io.rename(os.path.join(directory, V1_NAME), os.path.join(directory, segment_name(1)))
        _io.sync_dir(directory)
    elif not files:
        _segments.check_tail(directory, files, floor.seq)  # LSN_FLOOR says segments were made: they are lost
        fd = _io.create_new(os.path.join(directory, segment_name(1)))
        _io.close(fd)
        _io.sync_dir(directory)  # I15: the segment exists durably before its first frame
    _floor.remove_temp(directory)
    layout = examine(directory)
    active = layout.path_of(layout.segments[-1])
    fd = _io.open_write(active)
    try:
        if layout.torn_at is not None:
            _io.ftruncate(fd, layout.torn_at)  # I2: a real truncate, synced below
        elif not keep_zeros and _io.file_size(fd) > layout.segments[-1].end:
            _io.ftruncate(fd, layout.segments[-1].end)  # a zero tail, for a writer that only appends
        _io.fdatasync(fd)  # P11
        _io.sync_dir(directory)
        _record_high_water(layout, floor)
    except BaseException:
        _io.close(fd)
        raise
    return layout, fd


def _cut_write_in_flight(layout: LogLayout, size: int) -> None:
    """A batch is all or nothing across a process crash: cut a write the dead writer left half done.

    The whole frames of a killed ``pwrite`` are valid frames, so the scan
    keeps them; the in-flight record (``_damage.killed_write_cut``) says where
    that write started. Only when the frames before it are whole and end
    exactly there; the cut is reported like a torn tail.
    """
    last = layout.segments[-1]
    cut = _damage.killed_write_cut(layout.directory, last.seq, size, layout.path_of(last))
    if cut is None or cut > last.end:  # the valid frames end before the write began: a torn tail as ever
        return
    expect = layout.segments[-2].last_lsn + 1 if len(layout.segments) > 1 and layout.segments[-2].last_lsn else 0
    scan = _segments.scan_segment(last.seq, layout.path_of(last), expect, limit=cut)
    if not scan.clean or scan.end != cut:
        return  # not a frame boundary: the record is not about these frames
    layout.segments[-1] = SegmentInfo(last.seq, last.name, scan.first_lsn, scan.last_lsn, cut)
    layout.torn_at = cut
    layout.torn_size = size


def _record_high_water(layout: LogLayout, floor: _floor.Floor) -> None:
    """LSN_FLOOR: the newest segment exists durably now, and the completed ones are synced.

    For a log that has rotated (or has a floor file already); a log that
    never rotated gets its record at its first rotation. A full disk is
    tolerated: the log must open to be checkpointed (which needs no space).
    """
    if len(layout.segments) < 2 and not os.path.exists(os.path.join(layout.directory, FLOOR_NAME)):
        return
    completed = [seg.last_lsn for seg in layout.segments[:-1] if seg.last_lsn]
    try:
        _floor.advance(layout.directory, max(completed) + 1 if completed else 0, layout.segments[-1].seq, floor)
    except OSError as exc:
        if not _floor.no_space(exc):
            raise
