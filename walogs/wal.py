"""The writer: one ``Wal`` per log directory appends entries and hands out LSNs."""

from __future__ import annotations

import os
import pathlib
import threading
import weakref
from _thread import LockType, allocate_lock
from collections.abc import Iterable, Iterator
from typing import Optional, Union

from walogs import _codec, _floor, _io, _lock, _recovery, _segments, _visible
from walogs._visible import PUBLISHED
from walogs._recovery import SegmentInfo
from walogs.config import TailState, WalConfig
from walogs.errors import LsnOutOfRangeError, WalClosedError, WalError

PathLike = Union[str, "os.PathLike[str]"]
_NO_LIMIT = 1 << 64  # max_segment_size=None: larger than any segment can grow


class Wal:
    """The single writer of a log directory (I6). Create it with :meth:`Wal.open`.

    Methods are thread-safe. With ``sync="always"`` appends from several
    threads share fdatasync calls (group commit).
    """

    def __init__(self, directory: str, config: WalConfig, lock: _lock.WriterLock,
                 layout: _recovery.LogLayout, fd: int, publisher: _visible.Publisher) -> None:
        """Internal: use :meth:`Wal.open`."""
        self._dir = directory
        self._path = pathlib.Path(directory)
        self._config = config
        self._sync_always = config.sync == "always"
        self._segment_limit = config.max_segment_size or _NO_LIMIT
        self._lock = lock
        self._generation = _lock.fork_generation()
        self._opened_by = os.getpid()
        segments = layout.segments
        self._completed: list[SegmentInfo] = segments[:-1]
        self._active = segments[-1]
        self._fd = fd
        self._next_lsn = layout.next_lsn
        self._tail_state = TailState(layout.torn_at)
        self._closed = False
        self._close_finished = False  # close() has synced what it will: waiters need not wait for it
        self._poison: Optional[BaseException] = None
        # True once closed, poisoned or in a forked child: the hot paths test only this.
        self._blocked = False
        # _mutex guards the write state; _sync_mutex is held around an fdatasync
        # so rotate/close never close a descriptor a group-commit leader is syncing;
        # _sync_state guards _syncing, _durable_lsn, _waiters and publishing.
        self._mutex = threading.Lock()
        self._sync_mutex = threading.Lock()
        self._sync_state = threading.Lock()
        self._syncing = False
        self._waiters: list[tuple[int, LockType]] = []  # (lsn, held lock) of threads awaiting a sync
        self._durable_lsn = self._next_lsn - 1  # P11: recovery synced what it kept
        # What the next fdatasync will cover: (fd, last lsn, segment, end offset).
        self._sync_target = (fd, self._durable_lsn, self._active.seq, self._active.end)
        self._synced = self._sync_target  # the last end an fdatasync succeeded for
        self._publisher = publisher
        # "none" trades P4's power-loss guarantee for latency: written entries are visible.
        self._publish_written = publisher.publish if config.sync == "none" else None
        self._publish(self._sync_target)
        _lock.watch_forks(self)
        self._stop_interval = threading.Event()
        self._interval_thread: Optional[threading.Thread] = None
        if config.sync == "interval":
            self._interval_thread = threading.Thread(
                target=_interval_sync, args=(weakref.ref(self), self._stop_interval, config.sync_interval),
                name=f"walogs-sync {directory}", daemon=True,
            )
            self._interval_thread.start()

    @classmethod
    def open(cls, path: PathLike, config: Optional[WalConfig] = None, *,
             lock_timeout: Optional[float] = 0.0) -> Wal:
        """Open or create the log directory ``path`` as its single writer.

        Takes the writer lock (waiting up to ``lock_timeout`` seconds, None:
        forever, else WalLockedError), then runs recovery: a torn tail is cut
        (I2), damage that is not a torn tail raises WalCorruptError (P10).
        """
        if config is None:
            config = WalConfig()
        elif not isinstance(config, WalConfig):
            raise TypeError(f"config must be a WalConfig, not {type(config).__name__}")
        directory = os.path.abspath(os.fsdecode(os.fspath(path)))
        _recovery.ensure_directory(directory)
        lock = _lock.WriterLock.acquire(directory, lock_timeout)
        fd = None
        try:
            _visible.mark_recovering(directory)
            layout, fd = _recovery.recover(directory)
            # P11: published only now that recovery made the kept entries durable.
            publisher = _visible.Publisher(directory)
            lock.record_owner()
        except BaseException:
            if fd is not None:
                _io.close(fd)
            lock.release()
            raise
        return cls(directory, config, lock, layout, fd, publisher)

    # ------------------------------------------------------------------ guards

    def _check_open(self) -> None:
        if self._closed:
            raise WalClosedError(f"{self._dir}: this Wal is closed; open a new one with Wal.open")

    def _check_writable(self) -> None:
        self._check_open()
        if self._generation != _lock.fork_generation():
            # P6: the parent owns the lock and the file offsets; the child must not write.
            raise WalError(
                f"{self._dir}: this Wal was opened in process {self._opened_by} before a fork; "
                "a forked child cannot write through it: close it and open a new handle "
                "(or use WalReader to read)"
            )
        if self._poison is not None:
            raise WalError(
                f"{self._dir}: writer is poisoned by an earlier I/O error ({self._poison}); "
                "no append can be acknowledged: close it and open the log again to recover (P2)"
            ) from self._poison

    def _in_forked_child(self) -> None:
        # Called by _lock in a child forked after open (P6); _check_writable says why.
        self._blocked = True

    def _poison_with(self, exc: BaseException) -> None:
        # P2: after a failed write or sync nothing may be acknowledged until reopen.
        if self._poison is None:
            self._poison = exc
        self._blocked = True
        with self._sync_state:
            self._wake_waiters()

    def _publish(self, target: tuple[int, int, int, int]) -> None:
        # P4: readers may read up to here; callers pass only synced (or, under "none", written) ends.
        _, lsn, seq, offset = target
        self._publisher.publish(PUBLISHED, seq, lsn, offset)

    def _publish_synced(self, target: tuple[int, int, int, int]) -> None:
        # Under "none" the written end is already published; an older synced one must not replace it.
        if self._config.sync != "none":
            self._publish(target)

    # ------------------------------------------------------------------ writing

    def append(self, data: object) -> int:
        """Append one entry (any bytes-like object) and return its LSN.

        With ``sync="always"`` it returns only after fdatasync (I4). Raises
        TypeError for non-bytes-like data and EntryTooLargeError for more
        than MAX_ENTRY_SIZE bytes, before writing anything (I7).
        """
        mutex = self._mutex
        mutex.acquire()  # not `with`: this is the hot path, and acquire/release is cheaper
        try:
            if self._blocked:
                self._check_writable()
            lsn = self._next_lsn
            self._write(_codec.encode(lsn, data), lsn, lsn)
        finally:
            mutex.release()
        if self._sync_always:
            self._wait_durable(lsn)
        return lsn

    def append_batch(self, items: Iterable[object]) -> range:
        """Append many entries with one write (and one sync in ``"always"``).

        Returns the range of their LSNs. Every item is checked first: a bad
        one raises with nothing of the batch written. A batch never spans
        two segments.
        """
        items = list(items)
        with self._mutex:
            self._check_writable()
            first = self._next_lsn
            frames = _codec.encode_batch(first, items)
            if not items:
                return range(first, first)
            last = first + len(items) - 1
            self._write(frames, first, last)
        if self._sync_always:
            self._wait_durable(last)
        return range(first, last + 1)

    def _write(self, frames: bytes, first: int, last: int) -> None:
        # Caller holds _mutex. P7: one write per append or batch, nothing kept in user space.
        active = self._active
        if active.end + len(frames) > self._segment_limit and active.end > 0:
            self._rotate_locked()
            active = self._active
        try:
            _io.pwrite_all(self._fd, frames, active.end)
        except OSError as exc:
            self._poison_with(exc)
            # Whole frames of a failed batch that reached the file were never acknowledged:
            # cut them, so a reopen cannot keep half a batch that the caller will retry.
            try:
                _io.ftruncate(self._fd, self._active.end)
            except OSError:
                pass
            raise
        active.end += len(frames)
        if not active.first_lsn:
            active.first_lsn = first
        active.last_lsn = last
        self._next_lsn = last + 1
        if self._sync_always:  # otherwise only sync() needs a target, and it sets one
            self._sync_target = (self._fd, last, active.seq, active.end)
        elif self._publish_written is not None:
            self._publish_written(PUBLISHED, active.seq, last, active.end)

    def _wait_durable(self, lsn: int) -> None:
        """Return once ``lsn`` is fdatasync'd, leading a sync or following one (group commit).

        A follower waits on a lock of its own and is woken exactly once per
        sync it waited for: when its LSN is durable, when it is the first not
        covered (it leads the next sync), or when the writer fails or has
        closed. Measured against one threading.Condition with notify_all:
        every woken thread then queued for the condition's lock and the GIL in
        turn, and 8 threads reached 15k appends/s against 18k/s here.

        Measured too: starting the sync at once beats a leader that waits for
        appends under way (that raised appends per fdatasync from 4 to 5.6 with
        8 threads, but not throughput: each woken thread has to take the GIL
        back before it can write, so the wait cost as much as it saved). In C,
        without the GIL, such a leader does pay off: benchmarks/README.md.

        While close() runs, waiters stay until it has synced: their entries
        are durable then, and they return instead of raising WalClosedError.
        """
        state = self._sync_state
        while True:
            with state:
                if self._durable_lsn >= lsn:
                    return
                if self._poison is not None or self._close_finished:
                    self._check_writable()  # raises: poisoned, or closed before lsn was synced
                if self._syncing or self._closed:  # a leader's sync or close()'s covers lsn, or fails
                    waiter = allocate_lock()
                    waiter.acquire()
                    self._waiters.append((lsn, waiter))
                else:
                    self._syncing = True
                    waiter = None
            if waiter is not None:
                try:
                    waiter.acquire()  # released by _wake_waiters; then look again
                except BaseException:
                    self._abandon_wait(waiter)
                    raise
                continue
            synced = None
            try:
                with self._sync_mutex:
                    if not self._closed:  # else close() syncs, or closed the descriptor already
                        target = self._sync_target
                        _io.fdatasync(target[0])
                        # Recorded at once: a failing rotate() sync next must not cut these frames.
                        synced = self._synced = target
            except OSError as exc:
                self._poison_with(exc)
                self._cut_unsynced()
                raise
            finally:
                with state:
                    self._syncing = False
                    if synced is not None and synced[1] > self._durable_lsn and self._poison is None:
                        self._durable_lsn = synced[1]
                        self._publish_synced(synced)
                    self._wake_waiters()
            if synced is not None and synced[1] >= lsn:
                return  # durable even if another call failed since: its cut stops at _synced

    def _wake_waiters(self) -> None:
        """Wake the waiters a sync covered, and the first it did not so that it leads the next.

        Caller holds _sync_state. After a failure, or once close() is done,
        every waiter is woken (to return or raise). A waiter is only added
        while a sync or close() runs, and each calls this when it ends, so
        none is left asleep.
        """
        if not self._waiters:
            return
        durable = self._durable_lsn
        wake_all = self._poison is not None or self._close_finished
        still: list[tuple[int, LockType]] = []
        for lsn, waiter in self._waiters:
            if wake_all or lsn <= durable:
                waiter.release()
            else:
                still.append((lsn, waiter))
        if still and not self._syncing and not self._closed:
            still.pop(0)[1].release()
        self._waiters = still

    def _abandon_wait(self, waiter: LockType) -> None:
        # A follower left its wait by an exception (a signal handler, KeyboardInterrupt).
        with self._sync_state:
            kept = [w for w in self._waiters if w[1] is not waiter]
            if len(kept) < len(self._waiters):
                self._waiters = kept
            else:
                self._wake_waiters()  # it was woken, maybe to lead: pass that on

    def _cut_unsynced(self) -> None:
        """After a failed fdatasync, cut the active segment back to its last successful sync (P2).

        Linux marks the pages of a failed writeback clean: what they held may
        be on no disk, yet reads still return it, so a reopen would keep those
        frames and call them durable. They were never acknowledged as durable,
        so they go now. Not synced again: a failed sync is never retried.
        """
        with self._mutex:  # the writer is poisoned: no write is in flight or can start
            if not self._closed:
                self._truncate_to_synced()

    def _truncate_to_synced(self) -> None:
        # Caller holds _mutex.
        active = self._active
        _, synced_lsn, synced_seq, synced_end = self._synced
        end = synced_end if synced_seq == active.seq else 0
        try:
            _io.ftruncate(self._fd, end)
        except OSError:
            return  # poisoned either way; recovery at reopen judges what is left
        active.end = end
        active.last_lsn = synced_lsn if end else 0
        active.first_lsn = active.first_lsn if end else 0

    def sync(self) -> None:
        """Make every written entry durable now."""
        with self._mutex:
            self._check_writable()
            written = self._next_lsn - 1
            self._sync_target = (self._fd, written, self._active.seq, self._active.end)
        self._wait_durable(written)

    def rotate(self) -> None:
        """Finish the active segment and start a new one; no-op when it is empty."""
        with self._mutex:
            self._check_writable()
            if self._active.end > 0:
                self._rotate_locked()

    def _rotate_locked(self) -> None:
        # Caller holds _mutex; waits out a group-commit leader before swapping descriptors.
        with self._sync_mutex:
            old_fd, old = self._fd, self._active
            try:
                _io.fdatasync(old_fd)
            except OSError as exc:
                self._poison_with(exc)
                self._truncate_to_synced()
                raise
            self._synced = (old_fd, self._next_lsn - 1, old.seq, old.end)
            try:
                seq = old.seq + 1
                name = _segments.segment_name(seq)
                new_fd = _io.create_new(os.path.join(self._dir, name))
            except OSError as exc:
                self._poison_with(exc)
                raise
            try:
                _io.sync_dir(self._dir)  # I15: durable before its first frame
            except OSError as exc:
                _io.close(new_fd)
                self._poison_with(exc)
                raise
            with self._sync_state:
                if self._next_lsn - 1 > self._durable_lsn:
                    self._durable_lsn = self._next_lsn - 1
                    self._publish_synced((old_fd, self._durable_lsn, old.seq, old.end))
                self._wake_waiters()
            self._completed.append(old)
            self._active = SegmentInfo(seq, name, 0, 0, 0)
            self._fd = new_fd
            self._sync_target = self._synced = (new_fd, self._next_lsn - 1, seq, 0)
            _io.close(old_fd)

    def checkpoint(self, applied_up_to: int) -> int:
        """Delete completed segments whose every LSN is <= ``applied_up_to``; return how many.

        Oldest first, syncing the directory after each (I14); the active
        segment is never deleted (I13). Before the first deletion the next
        LSN is recorded in the LSN floor file, so LSNs never restart (P1).
        """
        if isinstance(applied_up_to, bool) or not isinstance(applied_up_to, int):
            raise TypeError(f"applied_up_to must be an int LSN, not {type(applied_up_to).__name__}")
        with self._mutex:
            self._check_writable()
            victims = 0
            for seg in self._completed:
                if seg.last_lsn > applied_up_to:
                    break
                victims += 1
            if not victims:
                return 0
            floor = max(seg.last_lsn for seg in self._completed[:victims]) + 1
            try:
                if floor > 1:
                    _floor.write_floor(self._dir, floor)
                for _ in range(victims):
                    seg = self._completed[0]
                    _io.unlink(os.path.join(self._dir, seg.name))
                    del self._completed[0]
                    _io.sync_dir(self._dir)  # I14: a crash leaves a contiguous suffix
            except OSError as exc:
                # P2: a failed directory sync may have lost the unlink; never sync it again as if fine.
                self._poison_with(exc)
                raise
            return victims

    # ------------------------------------------------------------------ reading

    def iter(self, start: Optional[int] = None) -> Iterator[tuple[int, bytes]]:
        """Every entry from ``start`` (default: the oldest stored) to the current end.

        ``start`` older than ``first_lsn`` or beyond ``next_lsn`` raises
        LsnOutOfRangeError. Reads through descriptors of its own; if a
        checkpoint removes a segment it still needs, it raises
        LsnOutOfRangeError rather than skip (P5).
        """
        with self._mutex:
            self._check_open()
            segments = [SegmentInfo(s.seq, s.name, s.first_lsn, s.last_lsn, s.end)
                        for s in (*self._completed, self._active)]
            next_lsn = self._next_lsn
        first = next((s.first_lsn for s in segments if s.first_lsn), None)
        if start is None:
            start = first or next_lsn
        if isinstance(start, bool) or not isinstance(start, int):
            raise TypeError(f"start must be an int LSN or None, not {type(start).__name__}")
        if start > next_lsn or start < (first or next_lsn):
            raise LsnOutOfRangeError(
                f"{self._dir}: start LSN {start} is not stored: the log holds "
                + (f"LSNs {first}..{next_lsn - 1}" if first else "no entries")
                + f" and the next append gets {next_lsn}"
            )
        return self._iter_segments(segments, start)

    def _iter_segments(self, segments: list[SegmentInfo], start: int) -> Iterator[tuple[int, bytes]]:
        for seg in segments:
            if not seg.first_lsn or seg.last_lsn < start:
                continue
            yield from _segments.iter_segment(
                self._dir, os.path.join(self._dir, seg.name), seg.first_lsn, start, seg.end
            )

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return self.iter()

    # ------------------------------------------------------------------ state

    @property
    def path(self) -> pathlib.Path:
        """The log directory."""
        return self._path

    @property
    def config(self) -> WalConfig:
        """The configuration this writer was opened with."""
        return self._config

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def tail_state(self) -> TailState:
        """What recovery found in the last segment at open."""
        self._check_open()
        return self._tail_state

    @property
    def next_lsn(self) -> int:
        """The LSN the next append will get."""
        self._check_open()
        return self._next_lsn

    @property
    def first_lsn(self) -> Optional[int]:
        """The oldest LSN still stored, None when no entry is stored."""
        with self._mutex:
            self._check_open()
            return next((s.first_lsn for s in (*self._completed, self._active) if s.first_lsn), None)

    @property
    def durable_lsn(self) -> int:
        """The highest LSN known durable (0 if none)."""
        self._check_open()
        return self._durable_lsn

    @property
    def segment_count(self) -> int:
        """Completed segments plus the active one."""
        self._check_open()
        return len(self._completed) + 1

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Sync what ``config.sync`` promises and release the lock; idempotent.

        In a process forked after open it only drops the handle: it never
        syncs, writes or unlocks, so the parent keeps its lock (P6).
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = self._blocked = True
            self._stop_interval.set()
            in_owner = self._generation == _lock.fork_generation()
            try:
                if in_owner and self._poison is None and self._durable_lsn < self._next_lsn - 1:
                    with self._sync_mutex:
                        try:
                            _io.fdatasync(self._fd)
                        except OSError as exc:
                            self._poison_with(exc)
                            self._truncate_to_synced()
                            raise
                    with self._sync_state:  # appends waiting on a group commit are now durable
                        self._durable_lsn = self._next_lsn - 1
                        self._wake_waiters()
            finally:
                # Each step runs even if one before it raised: waiters must wake, the lock must go.
                try:
                    with self._sync_mutex:
                        _io.close(self._fd)
                finally:
                    try:
                        # Marking "closed" before unlocking: readers then read every valid frame.
                        with self._sync_state:  # leaders publish under this lock
                            self._publisher.close(mark_closed=in_owner)
                    finally:
                        with self._sync_state:
                            self._close_finished = True
                            self._wake_waiters()
                        self._lock.release()
        thread = self._interval_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A handle dropped without close() still gives back its descriptors and lock.
        if getattr(self, "_closed", True):
            return
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"next_lsn={self._next_lsn}"
        return f"<walogs.Wal {self._dir!r} {state} sync={self._config.sync!r}>"


def _interval_sync(ref: weakref.ReferenceType[Wal], stop: threading.Event, interval: float) -> None:
    """Background fdatasync every ``interval`` seconds for ``sync="interval"``."""
    while not stop.wait(interval):
        wal = ref()
        if wal is None:
            return
        try:
            if wal._durable_lsn < wal._next_lsn - 1:
                wal.sync()
        except (WalError, OSError):
            return  # poisoned or closed: the next write call reports it
        finally:
            del wal
