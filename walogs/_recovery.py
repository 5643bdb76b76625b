"""What a log directory holds, found by scanning it; and the writer's repair of it.

``examine`` is read-only and serves writers, readers and ``walogs verify``;
``recover`` is the writer's open: v1 migration, first segment, torn-tail
truncation (I2), the cut of a write a killed writer left half done, the
syncs of P11 and the LSN floor's high-water mark. FORMAT.md's table "What
a scan concludes" is implemented here.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from walogs import _floor, _io, _lock, _segments, _visible
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


_CHECKPOINT_RACES = 1000  # listings retaken because a checkpoint deleted their oldest segment meanwhile


def contiguous_segment_files(directory: str, attempts: int = 5) -> tuple[dict[int, str], bool]:
    """``segment_files``, checked for gaps (I11), a missing tail included.

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
            _segments.check_contiguous(directory, files)
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
    """I11 at the tail: segment ``durable_seq`` (from LSN_FLOOR) was made durable, so it or a later one exists."""
    newest = max(files, default=0)
    if newest >= durable_seq:
        return
    missing = _segments.segment_name(durable_seq)
    first_missing = _segments.segment_name(newest + 1)
    lost = missing if newest + 1 == durable_seq else f"{first_missing} to {missing}"
    now = f"the newest segment file is {files[newest]}" if files else "no segment file is left"
    raise WalCorruptError(
        f"{directory}: segment {lost} is missing: {_floor.FLOOR_NAME} records that segment "
        f"{durable_seq} was made durable, but {now}, so the newest entries were deleted or lost "
        f"(and opening without them would hand out their LSNs again). Restore the missing segment "
        f"files from a backup; to continue without their entries, create an empty file named "
        f"{missing} in the directory: the log then continues after the last entry it still holds",
        segment=missing, offset=0,
    )


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


def ensure_directory(path: str) -> list[str]:
    """Create the log directory and any missing parents, syncing each parent (I3).

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
    files, v1 = segment_files(directory)
    return bool(files) or v1 or os.path.exists(os.path.join(directory, _floor.FLOOR_NAME))


SIDE_FILES = frozenset({_lock.LOCK_NAME, _visible.VISIBLE_NAME, _floor.FLOOR_NAME, _floor.TEMP_NAME})
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
    if any(_segments.SEGMENT_RE.fullmatch(name) or name == _segments.V1_NAME for name in names):
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
    for name in (_segments.segment_name(1), _visible.VISIBLE_NAME, _floor.FLOOR_NAME, _floor.TEMP_NAME):
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


def recover(directory: str) -> tuple[LogLayout, int]:
    """The writer's open (caller holds the lock): returns the layout and a write fd on the last segment.

    Migrates a v1 ``wal.log``, creates segment 1 in an empty directory,
    cuts a torn tail (I2) or a write a killed writer left half done (all of
    a batch goes, never a prefix), and syncs the last segment and the
    directory before returning (P11), so what a crashed writer left in the
    page cache is on disk before anything is built on it. Then records the
    high-water mark in LSN_FLOOR (a full disk is tolerated there: the log
    must open to be checkpointed).
    """
    files, v1 = segment_files(directory)
    floor = _floor.read(directory)
    if v1:
        # FORMAT.md: the legacy single file becomes segment 1 on the first writer open.
        _io.rename(os.path.join(directory, _segments.V1_NAME), os.path.join(directory, _segments.segment_name(1)))
        _io.sync_dir(directory)
    elif not files:
        check_tail(directory, files, floor.seq)  # LSN_FLOOR says segments were made: they are lost
        fd = _io.create_new(os.path.join(directory, _segments.segment_name(1)))
        _io.close(fd)
        _io.sync_dir(directory)  # I15: the segment exists durably before its first frame
    _floor.remove_temp(directory)
    layout = examine(directory)
    active = layout.path_of(layout.segments[-1])
    fd = _io.open_write(active)
    try:
        _cut_write_in_flight(layout, _io.file_size(fd))
        if layout.torn_at is not None:
            _io.ftruncate(fd, layout.torn_at)  # I2: a real truncate, synced below
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
    keeps them; the in-flight record (``_visible.in_flight_cut``) says where
    that write started. Only when the frames before it are whole and end
    exactly there; the cut is reported like a torn tail.
    """
    last = layout.segments[-1]
    cut = _visible.in_flight_cut(layout.directory, last.seq, size)
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
    if len(layout.segments) < 2 and not os.path.exists(os.path.join(layout.directory, _floor.FLOOR_NAME)):
        return
    completed = [seg.last_lsn for seg in layout.segments[:-1] if seg.last_lsn]
    try:
        _floor.advance(layout.directory, max(completed) + 1 if completed else 0, layout.segments[-1].seq, floor)
    except OSError as exc:
        if not _floor.no_space(exc):
            raise
