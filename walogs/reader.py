"""Readers: any number of processes iterate and follow a log while one writer appends.

A reader never writes, truncates, creates or deletes a file and never takes
the writer lock. It reads up to the *visible end* that a live writer
publishes (what the writer made durable under its sync mode), or, with no
live writer, up to the last valid frame. A bad frame before that end is
judged by ``walogs._damage``, as the writer's open judges it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Optional

from walogs import _damage, _floor, _io, _lock, _notify, _retention, _segments, _stats, _visible
from walogs import cursor as _cursor
from walogs._format import LOCK_NAME, VISIBLE_NAME, segment_name
from walogs._impl import codec
from walogs._types import PathLike
from walogs.errors import LsnOutOfRangeError, WalClosedError, WalCorruptError

# Adaptive polling while following: quick at first (low latency right after
# activity), slower the longer the log stays idle (little CPU).
_POLL_FIRST = 0.00005
_POLL_BUSY_MAX = 0.001
_POLL_IDLE_AFTER = 1.0
_POLL_IDLE_MAX = 0.01


class WalReader:
    """A read-only view of a log directory, safe in any number of processes and threads.

    Each iterator opens its own descriptors and reads with positional I/O,
    so readers stay correct across fork.
    """

    def __init__(self, path: PathLike) -> None:
        directory = os.path.abspath(os.fsdecode(os.fspath(path)))
        if not os.path.isdir(directory):
            if not os.path.lexists(directory):
                raise FileNotFoundError(f"{directory}: no such log directory (a reader never creates one)")
            if not os.path.isdir(directory):  # not one a writer created in the meantime
                raise NotADirectoryError(f"{directory}: not a log directory")
        self._dir = directory
        self._closed = False

    @property
    def path(self) -> str:
        """The log directory."""
        return self._dir

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise WalClosedError(f"{self._dir}: this WalReader is closed")

    # ------------------------------------------------------------------ where the log ends

    def _published_end(self) -> Optional[_visible.VisibleEnd]:
        """The live writer's published end, or None when no writer publishes one."""
        return published_end(self._dir)

    def _segment_files(self) -> dict[int, str]:
        return _segments.contiguous_segment_files(self._dir)[0]  # I11

    @property
    def first_lsn(self) -> Optional[int]:
        """The oldest LSN stored, None when none is; read fresh on each access."""
        self._check_open()
        for seq, name in self._segment_files().items():
            cursor = _open_cursor(self._dir, seq, name)
            if cursor is None:
                continue
            try:
                for lsn, _ in cursor.frames(None):
                    return lsn
            finally:
                cursor.close()
        return None

    @property
    def durable_lsn(self) -> int:
        """The visible end: the highest LSN a reader may yield now (0 if none)."""
        self._check_open()
        end = self._published_end()
        if end is not None:
            return end.lsn
        last = 0
        for seq, name in self._segment_files().items():
            cursor = _open_cursor(self._dir, seq, name)
            if cursor is None:
                continue
            try:
                cursor.expect = last + 1 if last else 0
                for _ in cursor.frames(_without_a_killed_write(self._dir, seq, cursor.size(), cursor.path)):
                    pass
                last = cursor.last_lsn or last
            finally:
                cursor.close()
        return last or max(_floor.read_floor(self._dir) - 1, 0)

    # ------------------------------------------------------------------ iteration

    def iter(self, start: Optional[int] = None) -> Iterator[tuple[int, bytes]]:
        """The entries visible now, from ``start`` (default: the oldest stored), then stop."""
        return self._entries(start, follow=False, timeout=None)

    def follow(self, start: Optional[int] = None, *, timeout: Optional[float] = None) -> Iterator[tuple[int, bytes]]:
        """Like :meth:`iter`, then keep yielding entries as they become visible.

        Ends after ``timeout`` seconds with nothing new (None: never).
        Crosses rotations; raises LsnOutOfRangeError if a checkpoint removes a
        segment it still needs (it never skips an entry).
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        return self._entries(start, follow=True, timeout=timeout)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return self.iter()

    def _entries(self, start: Optional[int], follow: bool, timeout: Optional[float]) -> Iterator[tuple[int, bytes]]:
        self._check_open()
        if start is not None and (isinstance(start, bool) or not isinstance(start, int)):
            raise TypeError(f"start must be an int LSN or None, not {type(start).__name__}")
        stream = _Stream(self._dir, self)
        stream.locate(start)  # raises LsnOutOfRangeError for a start that is not stored
        # Each entry costs one C-level next (with the compiled codec): the
        # ChainReader takes frames from a FrameReader per chunk, and all the
        # Python below (segments, visible end, damage, polling) runs between chunks.
        return codec.ChainReader(stream.readers(follow, timeout))

    # ------------------------------------------------------------------ named cursors

    def cursor(self, name: str, *, start: Optional[int] = None, lock_timeout: Optional[float] = 0.0) -> _cursor.Cursor:
        """Open the named cursor, creating it if missing; this handle owns it until closed.

        One owner at a time across processes: if another holds it, wait up
        to ``lock_timeout`` seconds (None: forever), then CursorLockedError.
        ``start`` is the position of a new cursor (default: just before the
        oldest stored LSN; LsnOutOfRangeError outside that up to
        ``durable_lsn``); an existing cursor keeps its position. Names are 1
        to 64 characters of ``[A-Za-z0-9._-]`` (else ValueError). Creating a
        cursor is the one write a reader makes: its file in ``cursors/``.
        """
        self._check_open()
        return _cursor.open_cursor(self, name, start, lock_timeout)

    def cursors(self) -> dict[str, CursorPosition]:
        """Every cursor's committed position, read without taking any cursor.

        Each value is an int (the position) that also says ``lost``,
        ``lag``, ``lag_bytes``, ``owned`` and ``owner_pid``.
        """
        self._check_open()
        return {info.name: CursorPosition(info) for info in _retention.describe(self._dir, self.durable_lsn)}

    def drop_cursor(self, name: str) -> None:
        """Delete the named cursor (CursorLockedError while it has an owner, FileNotFoundError if none)."""
        self._check_open()
        _cursor.drop(self._dir, name)

    def stats(self) -> dict[str, object]:
        """Where the log stands now, as a plain dict: ``durable_lsn``, ``first_lsn``, ``segments``,
        ``bytes_on_disk``, and ``cursors`` (each one's position, lag in entries and bytes, lost, owner)."""
        self._check_open()
        return _stats.reader_stats(self._dir, self.durable_lsn, self.first_lsn)

    def close(self) -> None:
        """Mark the reader closed; iterators already running keep their own descriptors."""
        self._closed = True

    def __enter__(self) -> WalReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<walogs.WalReader {self._dir!r}{' closed' if self._closed else ''}>"


class CursorPosition(int):
    """A cursor's committed position (the int itself), with what ``walogs info`` shows about it.

    ``lost``: a checkpoint deleted entries it had not committed (its
    iter/follow raise CursorLostError); ``lag``: visible entries after the
    position; ``lag_bytes``: bytes of the segments holding them; ``owned``
    and ``owner_pid``: whether a handle owns it now, and whose.
    """

    name: str
    lost: bool
    lag: int
    lag_bytes: int
    owned: bool
    owner_pid: Optional[int]

    def __new__(cls, info: _retention.CursorInfo) -> CursorPosition:
        self = super().__new__(cls, info.position)
        self.name, self.lost, self.lag, self.lag_bytes = info.name, info.lost, info.lag, info.lag_bytes
        self.owned, self.owner_pid = info.owned, info.owner_pid
        return self

    @property
    def position(self) -> int:
        """The committed position, as a plain int."""
        return int(self)

    def __repr__(self) -> str:
        return f"{int(self)}" + (" (lost)" if self.lost else "")


def published_end(directory: str) -> Optional[_visible.VisibleEnd]:
    """The visible end a live writer of ``directory`` publishes, or None when no writer publishes one.

    The record counts only while some process holds the writer lock; a
    writer that is still recovering has published nothing yet.
    """
    record = _visible.read(directory)
    if record is None or record.state != _visible.PUBLISHED:
        return None
    live, _ = _lock.writer_is_live(directory)
    return record if live else None


class _EndWatch:
    """``published_end`` for one iterator's passes, with VISIBLE and LOCK kept open between them.

    A follower asks once per pass; kept open, that is a pread and a lock
    query instead of opening and closing both files (and reading the pid).
    LOCK's inode never changes while its log lives; if it did (a new log
    whose creation failed and was made again), both are opened afresh.
    """

    def __init__(self, directory: str) -> None:
        self._dir = directory
        self._visible: Optional[int] = None
        self._lock: Optional[int] = None

    def published(self) -> Optional[_visible.VisibleEnd]:
        """The end a live writer publishes now, or None (as :func:`published_end`)."""
        if self._lock is None or not _lock.same_file(self._lock, os.path.join(self._dir, LOCK_NAME)):
            self.close()
            try:
                self._lock = _io.open_read(os.path.join(self._dir, LOCK_NAME))
                self._visible = _io.open_read(os.path.join(self._dir, VISIBLE_NAME))
            except FileNotFoundError:
                self.close()
                return published_end(self._dir)  # no writer yet made them
        assert self._visible is not None
        record = _visible.read_fd(self._visible)
        if record is None or record.state != _visible.PUBLISHED:
            return None
        return record if _lock.is_locked(self._lock) else None

    def close(self) -> None:
        """Close both descriptors."""
        for fd in (self._visible, self._lock):
            if fd is not None:
                _io.close(fd)
        self._visible = self._lock = None


def _without_a_killed_write(directory: str, seq: int, size: int, path: str) -> int:
    """How much of segment ``seq`` (file ``path``, ``size`` bytes) a reader may read when no writer is live.

    All of it, except a write a killed writer left half done: the next
    writer open cuts all of that write (a batch is all or nothing), so a
    reader must not yield its whole frames now and see their LSNs handed
    out again later (``_damage.killed_write_cut`` says when that is so).
    """
    cut = _damage.killed_write_cut(directory, seq, size, path)
    return size if cut is None else cut


def _open_cursor(directory: str, seq: int, name: str, expect: int = 0, skip_before: int = 0) -> Optional[_segments.SegmentCursor]:
    try:
        return _segments.SegmentCursor(directory, seq, name, expect, skip_before)
    except LsnOutOfRangeError:
        return None


class _Stream:
    """One iterator's position in the log: a segment cursor that moves forward only, never skipping.

    The first segment is chosen when the iterator is made (so a bad start
    raises at once) but opened on the first ``next``, so an iterator that is
    never started holds no descriptor. :meth:`readers` gives the FrameReaders
    for a ChainReader; the descriptor is closed when the generator ends,
    raises, is closed (ChainReader.close) or is dropped.
    """

    def __init__(self, directory: str, reader: WalReader) -> None:
        self._dir = directory
        self._reader = reader
        self._cursor: Optional[_segments.SegmentCursor] = None
        self._first: Optional[tuple[int, str]] = None
        self._start = 0
        self._ends = _EndWatch(directory)

    def locate(self, start: Optional[int]) -> None:
        """Choose the segment that holds ``start`` (default: the oldest stored entry)."""
        if start is not None and start < 1:
            raise LsnOutOfRangeError(f"{self._dir}: start LSN {start} is not a valid LSN (LSNs start at 1)")
        files = self._reader._segment_files()
        chosen: Optional[tuple[int, str]] = None
        first_stored: Optional[int] = None
        for seq, name in files.items():
            try:
                lsn = _segments.peek_lsn(os.path.join(self._dir, name))
            except FileNotFoundError:
                # Checkpointed since the listing; oldest go first (I14), so it is older than the rest.
                continue
            if lsn is None:
                if chosen is None:
                    chosen = (seq, name)
                continue
            if first_stored is None:
                first_stored = lsn
            if start is None or lsn <= start:
                chosen = (seq, name)
            if start is None:
                break
        oldest = first_stored if first_stored is not None else _floor.read_floor(self._dir)
        if start is not None and oldest and start < oldest:
            raise LsnOutOfRangeError(
                f"{self._dir}: start LSN {start} is older than the oldest stored entry "
                f"({oldest}); it was checkpointed away"
            )
        self._start = start if start is not None else max(oldest, 1)
        self._first = chosen if chosen is not None else next(iter(files.items()), None)

    def readers(self, follow: bool, timeout: Optional[float]) -> Iterator[codec.FrameReader]:
        """FrameReaders over what is visible; when following, poll for more until ``timeout`` idle seconds.

        Each must be read to its end before the next is asked for (as a ChainReader does).
        """
        # Watching from before the first pass: a change during any pass is queued for the wait after it.
        waiter = _notify.watch(self._dir) if follow and _notify.AVAILABLE else None
        try:
            checked_range = False
            pause = _POLL_FIRST
            idle_since = time.monotonic()
            while True:
                before = self._position()
                yield from self._available()
                if not checked_range:
                    self._check_start_not_beyond_end()
                    checked_range = True
                if not follow:
                    return
                now = time.monotonic()
                if self._position() != before:
                    idle_since, pause = now, _POLL_FIRST
                    if waiter is None:
                        continue
                idle = now - idle_since
                if timeout is not None and idle >= timeout:
                    return
                if waiter is not None:
                    # Returns at once if more is visible; else sleeps in the kernel until the writer
                    # writes, polling only while a write awaits its sync.
                    seq, offset = self._position()
                    waiter.wait(seq, offset, None if timeout is None else timeout - idle)
                    continue
                cap = _POLL_BUSY_MAX if idle < _POLL_IDLE_AFTER else _POLL_IDLE_MAX
                pause = min(pause * 2, cap)
                if timeout is not None:
                    pause = min(pause, max(timeout - idle, 0.0))
                time.sleep(pause)
        finally:
            self._ends.close()
            if waiter is not None:
                waiter.close()
            if self._cursor is not None:
                self._cursor.close()

    def _position(self) -> tuple[int, int]:
        cursor = self._cursor
        return (cursor.seq, cursor.offset) if cursor is not None else (0, 0)

    def _check_start_not_beyond_end(self) -> None:
        cursor = self._cursor
        published = self._reader._published_end()
        end = max(
            cursor.last_lsn if cursor is not None else 0,
            published.lsn if published is not None else 0,
            _floor.read_floor(self._dir) - 1,
        )
        if self._start > end + 1:
            raise LsnOutOfRangeError(
                f"{self._dir}: start LSN {self._start} is beyond the visible end (LSN {end}); "
                "nothing with that LSN has been written yet"
            )

    def _open_first(self) -> bool:
        if self._first is None:  # no segment existed yet: look again
            self.locate(self._start if self._start > 1 else None)
            if self._first is None:
                return False
        seq, name = self._first
        self._cursor = _segments.SegmentCursor(self._dir, seq, name, 0, self._start)
        return True

    def _available(self) -> Iterator[codec.FrameReader]:
        """FrameReaders over every entry between the cursor and the visible end, across segments."""
        if self._cursor is None and not self._open_first():
            return
        while True:
            cursor = self._cursor
            assert cursor is not None
            # The size first, then the writer: a writer that appears in between
            # cannot get its unsynced appends below a size taken before it (P4).
            size = cursor.size()
            end = self._ends.published()
            if end is not None and cursor.seq > end.seq:
                return
            if end is None:
                limit: Optional[int] = _without_a_killed_write(self._dir, cursor.seq, size, cursor.path)
            else:
                limit = end.offset if cursor.seq == end.seq else None
            yield from cursor.readers(limit)
            if cursor.status == codec.SCAN_END and end is not None and cursor.seq >= end.seq:
                return  # at the published end: no later segment is readable yet (no listing needed)
            files = _segments.segment_files(self._dir)[0]
            last_seq = max(files, default=cursor.seq)
            if cursor.status != codec.SCAN_END:
                self._judge_stop(cursor, end, cursor.seq >= last_seq)
                return
            finished = cursor.seq < last_seq and (end is None or cursor.seq < end.seq)
            if not finished:
                return
            # The writer only starts segment n+1 after n is complete and synced.
            if cursor.offset < cursor.size():
                continue  # a completed segment has more than we saw at the start of this pass
            self._cursor = self._next_segment(cursor, files)
            cursor.close()

    def _next_segment(self, cursor: _segments.SegmentCursor, files: dict[int, str]) -> _segments.SegmentCursor:
        nxt = cursor.seq + 1
        if nxt not in files:
            files = self._reader._segment_files()  # a listing is not atomic: look again
        if nxt not in files:
            if not files or min(files) > nxt:  # P5: checkpointed away under us; never skip ahead
                raise LsnOutOfRangeError(
                    f"{self._dir}: segment {segment_name(nxt)} was removed (by a checkpoint) "
                    f"before LSN {cursor.expect or self._start} was read; start again from first_lsn"
                )
            raise WalCorruptError(
                f"{self._dir}: segment {segment_name(nxt)} is missing after "
                f"{os.path.basename(cursor.path)}: segment numbers must have no gaps, so its entries are lost; "
                "restore it from a backup, or see `walogs salvage`"
            )
        return _segments.SegmentCursor(self._dir, nxt, files[nxt], cursor.expect, self._start)

    def _judge_stop(self, cursor: _segments.SegmentCursor, end: Optional[_visible.VisibleEnd], is_last: bool) -> None:
        """Reading stopped at something that is not a frame: the end of what is visible, or damage."""
        scan = cursor.scan_view()
        after_lsn = _damage.last_good_lsn(scan, cursor.expect, _floor.read_floor(self._dir))
        verdict = _damage.judge(scan, after_lsn, last_segment=is_last, live=end is not None)
        if verdict.damage and end is None and is_last and self._reader._published_end() is not None:
            # Read as if no writer were live, but one publishes now: what was read may be a write in
            # progress (into a segment prepared with zeros, a page the write had not reached yet
            # reads as zeros before one it had). The next read stops at its visible end and judges
            # again from there.
            return
        if verdict.damage:
            raise verdict.error(self._dir, scan, cursor.expect)
        # A torn tail, or a write still in flight: the end of what is visible now.
