"""The active segment's writer in Python: ``_writer.pyx``'s algorithm, step for step.

A :class:`SegmentWriter` owns what every append touches: the descriptor of
the active segment, its end offset and LSNs, the durable point, group
commit, rotation to the next segment, publishing the visible end to readers,
and closing. ``_writer.pyx`` is the same algorithm in C; this file reads as
its specification: the same state, the same steps under the same names, in
the same order, one mutex (a ``threading.Lock``) and two condition
variables on it (``_changed``, ``_gathered``). The module docstring of
``_writer.pyx`` describes the algorithm; the host callbacks
(``new_segment``, ``completed``, ``refusal``) and the surface are the same.
Both make the same system calls through ``walogs._io`` and give the same
results and exceptions; the suite runs on each.

What differs, and why:

* Where a thread waits. The compiled writer runs a durable append from the
  write to the fdatasync that covers it without the GIL. Here every thread
  a sync wakes must take the GIL back, one after another, before it can
  return and write again; so 8 threads share syncs (group commit holds) but
  reach a smaller multiple of one thread's rate than the compiled writer's
  (benchmarks/README.md, "where the time goes").
* Exceptions during a wait. A signal handler (Ctrl-C) can raise inside a
  ``Condition.wait`` here; in C no handler runs until the call returns. A
  follower or a writer waiting for a pause to end just leaves (nothing was
  changed for it); a gathering leader, a rotation and a close undo or finish
  what they started (``try``/``finally``). ``close()`` waits on and raises
  such an exception once it is done, as the compiled ``close()`` would.
* The steps done under the mutex return their result (an LSN, True) or a
  false value when the writer refuses, and raise on failure; the C steps
  return codes and keep the exception in a per-call record.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Optional

from walogs import _frame_py, _io, _sync_log
from walogs._format import VISIBLE_PUBLISHED as PUBLISHED
from walogs._types import as_batch
from walogs._visible import Publisher
from walogs.config import SYNC_MODES as MODES

_MODE_ALWAYS, _MODE_INTERVAL, _MODE_NONE = range(3)
_GATHER_MAX_NS = 1_000_000  # a gathering leader waits at most 1 ms


class SegmentWriter:
    """Appends frames to the active segment, makes them durable, rotates and closes it.

    Thread-safe. Every call that cannot be done raises: ``refusal()`` once the
    writer is closed, poisoned or in a forked child; the OSError of a failed
    write or sync (which poisons it); the codec's errors for a bad entry.
    """

    def __init__(self, fd: int, seq: int, end: int, first_lsn: int, last_lsn: int, next_lsn: int,
                 limit: int, mode: str, publisher: Publisher, *, new_segment: Callable[[int], int],
                 completed: Callable[[int, int, int, int, int], None],
                 refusal: Callable[[], BaseException]) -> None:
        """Take over segment ``seq`` (descriptor ``fd``), which recovery left synced up to ``end``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._mode = MODES.index(mode)
        self._init_locks()
        self._fd = fd  # -1 once close() closed it
        self._seq, self._end, self._first, self._last = seq, end, first_lsn, last_lsn
        self._written = next_lsn - 1  # the last LSN written (next - 1)
        self._durable = next_lsn - 1
        self._limit = limit
        # The last successful fdatasync: what a failed one cuts back to (P2).
        self._synced_lsn, self._synced_seq, self._synced_end = self._durable, seq, end
        self._syncing = False  # a leader's fdatasync runs (the mutex released around it)
        self._paused = False  # a rotation or close waits for that sync to end: no write, no new leader
        self._closed = self._poisoned = self._gathering = False
        self._unsynced_calls = 0  # appends written since the running/last sync took its target
        self._last_batch = 1  # appends the last group-commit sync covered
        self._want = 0  # appends a gathering leader waits for
        self._last_sync_ns = 0
        self._syncs = 0
        self._sync_ns = 0
        self._recent: collections.deque[int] = collections.deque(maxlen=_sync_log.SYNC_WINDOW)  # latest sync durations
        self._poison: Optional[BaseException] = None
        self._new_segment, self._completed, self._refusal = new_segment, completed, refusal
        self._publisher = publisher
        self._has_visible = True
        self._publish(self._durable, seq, end)
        self._mark_in_flight(seq, end, end)

    def _init_locks(self) -> None:
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)  # notify_all: a sync ended, a pause ended, closed or poisoned
        self._gathered = threading.Condition(self._mutex)  # notify: a gathering leader has the appends it waits for

    # ------------------------------------------------------------------ state

    @property
    def next_lsn(self) -> int:
        """The LSN the next append gets."""
        return self._written + 1

    @property
    def durable_lsn(self) -> int:
        """The highest LSN an fdatasync made durable."""
        return self._durable

    @property
    def poison(self) -> Optional[BaseException]:
        """The error that poisoned the writer, or None."""
        return self._poison

    @property
    def syncs(self) -> int:
        """fdatasync calls the group commit made (appends' and sync()'s; benchmarks report it)."""
        return self._syncs

    @property
    def sync_seconds(self) -> float:
        """Wall time spent in those fdatasync calls."""
        return self._sync_ns * 1e-9

    def sync_latencies(self) -> list[int]:
        """The latest group-commit fdatasync durations in ns (up to ``_sync_log.SYNC_WINDOW``), oldest first."""
        with self._mutex:
            return list(self._recent)

    def snapshot(self) -> tuple[int, int, int, int, int]:
        """(seq, end, first_lsn, last_lsn, next_lsn) of the active segment, taken at one instant."""
        with self._mutex:
            return self._seq, self._end, self._first, self._last, self._written + 1

    # ------------------------------------------------------------------ writing

    def append(self, data: object) -> int:
        """Write one entry and return its LSN; under ``"always"`` once it is durable.

        Rotates first if its frame does not fit the active segment and that
        segment is not empty.
        """
        if self._closed or self._poisoned:
            raise self._refusal()  # before looking at the entry
        with self._mutex:
            lsn = self._append_locked(data)
        if not lsn:
            raise self._refusal()
        return lsn

    def _append_locked(self, data: object) -> int:
        # Mutex held. The LSN (written, and durable under "always"), or 0: refused.
        if not self._wait_writable():
            return 0
        lsn = self._written + 1
        frame = _frame_py.encode(lsn, data)  # TypeError, EntryTooLargeError (I7), no LSN left (I9): nothing written
        if self._end > 0 and self._end + len(frame) > self._limit and not self._rotate():
            return 0
        self._write(frame, lsn, lsn)
        if self._mode == _MODE_ALWAYS and not self._wait_durable(lsn, True):
            return 0
        return lsn

    def append_batch(self, items: object) -> int:
        """Write every item with one write (a batch never spans two segments); the first LSN.

        Under ``"always"`` returns once they are durable. Checks every item
        before writing any; an empty batch writes nothing and returns the
        next LSN.
        """
        items = as_batch(items)
        if self._closed or self._poisoned:
            raise self._refusal()
        with self._mutex:
            first = self._append_batch_locked(items)
        if not first:
            raise self._refusal()
        return first

    def _append_batch_locked(self, items: list[object]) -> int:
        # Mutex held. The first LSN (written, and durable under "always"), or 0: refused.
        if not self._wait_writable():
            return 0
        first = self._written + 1
        frames = _frame_py.encode_batch(first, items)  # checks every item (I7) and builds the frames
        if not frames:
            return first
        if self._end > 0 and self._end + len(frames) > self._limit and not self._rotate():
            return 0
        last = first + len(items) - 1
        self._write(frames, first, last)
        if self._mode == _MODE_ALWAYS and not self._wait_durable(last, True):
            return 0
        return first

    def sync(self) -> None:
        """Make every written entry durable, leading or joining a group commit."""
        with self._mutex:
            done = not (self._closed or self._poisoned) and self._wait_durable(self._written, False)
        if not done:
            raise self._refusal()

    def _wait_writable(self) -> bool:
        # Mutex held: wait out a pause (a rotation or close waiting for a sync);
        # False once closed or poisoned.
        while self._paused and not (self._closed or self._poisoned):
            self._changed.wait()
        return not (self._closed or self._poisoned)

    def _write(self, frames: bytes, first: int, last: int) -> None:
        # Mutex held. P7: one write per append or batch, nothing kept in user space.
        # Before the write: if a kill cuts it short, recovery cuts all of it (_damage.killed_write_cut).
        self._mark_in_flight(self._seq, self._end, self._end + len(frames))
        try:
            _io.pwrite_all(self._fd, frames, self._end)
        except BaseException as exc:
            if self._fail(exc):
                # Whole frames of a failed batch that reached the file were never
                # acknowledged: cut them, so a reopen cannot keep half a batch.
                self._cut_to(self._end)
            raise
        self._end += len(frames)
        if not self._first:
            self._first = first
        self._last = last
        self._written = last
        if self._mode == _MODE_NONE:
            self._publish(last, self._seq, self._end)
        else:
            self._unsynced_calls += 1
            if self._gathering and self._unsynced_calls >= self._want:
                self._gathered.notify()

    # ------------------------------------------------------------------ group commit

    def _wait_durable(self, lsn: int, gather: bool) -> bool:
        # Mutex held. True once lsn is durable; False if the writer was poisoned, or
        # closed before lsn was synced. Raises if the sync this thread led failed.
        while self._durable < lsn:
            if self._poisoned or self._closed:
                return False
            if self._syncing or self._paused:  # a leader's sync covers lsn, or fails; or a pause ends
                self._changed.wait()
                continue
            if self._lead(gather) >= lsn:
                return True  # its own sync covered it, even if another call poisoned the writer since
        return True

    def _gather(self) -> None:
        # Mutex held, _syncing set. Wait until as many appends as the last sync covered
        # are written (or as long as that sync took, at most 1 ms).
        deadline = time.monotonic_ns() + min(self._last_sync_ns, _GATHER_MAX_NS)
        self._want = self._last_batch
        self._gathering = True
        try:
            while (self._unsynced_calls < self._want and not (self._paused or self._closed or self._poisoned)
                   and time.monotonic_ns() < deadline):
                self._gathered.wait((deadline - time.monotonic_ns()) * 1e-9)
        finally:
            self._gathering = False

    def _lead(self, gather: bool) -> int:
        # Mutex held: one fdatasync for everything written so far, the mutex released
        # around it. The LSN it made durable; raises if it failed (poisoned if an OSError;
        # a wrapped _io's other exceptions, an interrupted gather, only propagate).
        self._syncing = True
        try:
            if gather and self._last_batch > 1:
                self._gather()
            fd, lsn, seq, end = self._fd, self._written, self._seq, self._end
            calls, self._unsynced_calls = self._unsynced_calls, 0
            try:
                self._mutex.release()
                started = time.monotonic_ns()
                _io.fdatasync(fd)
            finally:
                self._mutex.acquire()
        except BaseException as exc:
            self._syncing = False
            if self._fail(exc):
                self._truncate_to_synced()
            self._changed.notify_all()
            raise
        self._syncing = False
        self._syncs += 1
        self._last_sync_ns = time.monotonic_ns() - started
        self._sync_ns += self._last_sync_ns
        self._recent.append(self._last_sync_ns)
        if self._last_sync_ns > _sync_log.SLOW_SYNC_SECONDS * 1e9:
            _sync_log.slow_sync(fd, self._last_sync_ns * 1e-9)
        # Recorded at once: a failing rotation's sync next must not cut these frames.
        self._synced_lsn, self._synced_seq, self._synced_end = lsn, seq, end
        if lsn > self._durable and not self._poisoned:
            self._mark_durable(lsn, seq, end)
            if gather:
                self._last_batch = calls if calls else 1
        self._changed.notify_all()
        return lsn

    def _sync_locked(self) -> None:
        # Mutex held, paused, no sync running (rotation, close): fdatasync everything
        # written, mark it durable and wake its waiters. Raises if it failed (poisoned and cut).
        try:
            _io.fdatasync(self._fd)
        except BaseException as exc:
            if self._fail(exc):
                self._truncate_to_synced()
            raise
        self._synced_lsn, self._synced_seq, self._synced_end = self._written, self._seq, self._end
        if self._written > self._durable:
            self._mark_durable(self._written, self._seq, self._end)
        self._changed.notify_all()

    def _mark_durable(self, lsn: int, seq: int, end: int) -> None:
        # Mutex held. Under "none" the written end is already published.
        self._durable = lsn
        if self._mode != _MODE_NONE:
            self._publish(lsn, seq, end)
            if self._has_visible:
                self._publisher.notify()  # followers sleep on inotify; the store above raised no event

    def _publish(self, lsn: int, seq: int, end: int) -> None:
        # P4: readers may read up to here (a synced end, or under "none" a written one).
        if self._has_visible:
            self._publisher.publish(PUBLISHED, seq, lsn, end)

    def _mark_in_flight(self, seq: int, start: int, end: int) -> None:
        # A memory store into the page cache, no system call: it survives a kill of this process.
        if self._has_visible:
            self._publisher.mark_in_flight(seq, start, end)

    # ------------------------------------------------------------------ rotation

    def rotate(self) -> None:
        """Finish the active segment and continue in a new one; nothing to do when it is empty."""
        with self._mutex:
            done = self._wait_writable() and self._rotate()
        if not done:
            raise self._refusal()

    def _rotate(self) -> bool:
        # Mutex held, writable. Paused while a running sync ends (its descriptor must stay
        # open, and nothing may write meanwhile); from then on the mutex is held to the end,
        # so the caller writes into the fresh segment before any other append can.
        self._paused = True
        self._gathered.notify()  # a gathering leader syncs now
        try:
            while self._syncing:
                self._changed.wait()
            return self._rotate_paused()
        finally:
            self._paused = False
            self._changed.notify_all()

    def _rotate_paused(self) -> bool:
        # Mutex held, paused, no sync running. An exception at any step (Ctrl-C, a signal
        # handler's) leaves a writer the next call can use: before the switch the old
        # segment stays active (the host removed what it created), after it the rotation
        # is complete. Only an OSError poisons (P2): an interrupt lost nothing.
        if self._closed or self._poisoned:
            return False  # the sync it waited for failed: never sync again (P2)
        if self._end == 0:
            return True
        self._trim()  # a completed segment ends at its last frame; the sync next makes the cut durable
        self._sync_locked()  # P2 if it fails; else the old segment's entries are durable
        try:
            new_fd = self._new_segment(self._seq + 1)  # I15: created durably before its first frame
        except BaseException as exc:
            self._fail(exc)
            raise
        old = (self._fd, self._seq, self._end, self._first, self._last)
        # One statement: an exception (Ctrl-C) between two would leave the writer half switched.
        (self._fd, self._seq, self._end, self._first, self._last,
         self._synced_lsn, self._synced_seq, self._synced_end) = (
            new_fd, old[1] + 1, 0, 0, 0, self._written, old[1] + 1, 0)
        try:
            self._completed(*old)
        except BaseException as exc:
            self._fail(exc)
            raise
        return True

    def _trim(self) -> bool:
        # Mutex held, paused, no sync running (rotation, close): cut the zeros of a segment
        # prepared with them past the last frame (docs/format.md); True if it cut. The caller
        # syncs. A failure poisons (P2).
        try:
            if _io.file_size(self._fd) <= self._end:
                return False
            _io.ftruncate(self._fd, self._end)
        except BaseException as exc:
            self._fail(exc)
            raise
        return True

    # ------------------------------------------------------------------ failures

    def _fail(self, exc: BaseException) -> bool:
        # Mutex held, after a system call or callback raised exc. An OSError poisons the
        # writer (P2: True, the caller cuts a write's or sync's tail); anything else only
        # propagates.
        poisons = isinstance(exc, OSError)
        if poisons:
            if self._poison is None:
                self._poison = exc
            self._poisoned = True
            self._changed.notify_all()
            self._gathered.notify()
        return poisons

    def _truncate_to_synced(self) -> None:
        # Mutex held. Cut the active segment back to its last successful sync (P2):
        # Linux marks the pages of a failed writeback clean, so what they held may
        # be on no disk while reads still return it; a reopen would call those
        # frames durable. They were never acknowledged. Not synced again.
        end = self._synced_end if self._synced_seq == self._seq else 0
        if not self._cut_to(end):
            return  # poisoned either way; recovery at reopen judges what is left
        self._end = end
        self._last = self._synced_lsn if end else 0
        if not end:
            self._first = 0
        if self._mode == _MODE_NONE:  # it published the written end: readers must not read past the cut
            self._publish(self._synced_lsn, self._seq, end)

    def _cut_to(self, length: int) -> bool:
        # Clean-up after a failure: its own error is dropped, the first one is what raises.
        try:
            _io.ftruncate(self._fd, length)
        except BaseException:
            return False
        return True

    def poison_with(self, exc: BaseException) -> None:
        """Refuse every later write (the host's own I/O failed); wake every waiter."""
        if self._poison is None:
            self._poison = exc
        with self._mutex:
            self._poisoned = True
            self._changed.notify_all()
            self._gathered.notify()

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Sync what waits, refuse every later call, wake every waiter, close the descriptor.

        Waits for a running rotation or sync to end first. Appends waiting
        for a group commit return durable, unless the writer is poisoned (a
        poisoned writer is never synced again). If that last sync fails it
        raises, after everything else is done. In a forked child it only
        closes the descriptor. Idempotent.
        """
        failed: Optional[BaseException] = None
        locked = False
        while not locked:  # a signal handler that raises while this waits for the mutex: wait again
            try:
                with self._mutex:
                    locked = True
                    fd, failed = self._close_locked(failed)
            except BaseException as exc:
                if locked:
                    raise
                failed = failed or exc
        try:
            if fd >= 0:
                _io.close(fd)
        finally:
            if failed is not None:
                raise failed  # the failed sync (or an interrupt while it waited), before a failed close

    def _close_locked(self, failed: Optional[BaseException]) -> tuple[int, Optional[BaseException]]:
        # Mutex held. Stops the writer for good and hands back its descriptor (-1: closed
        # already) with what close() raises: the failed last sync, else ``failed``.
        if self._fd >= 0 and not self._closed:
            while self._paused:  # a rotation waits for a sync: let it finish
                failed = _wait_through(self._changed, failed)
            self._paused = True
            self._gathered.notify()
            while self._syncing:
                failed = _wait_through(self._changed, failed)
            try:
                # Appends waiting on a group commit return durable; a clean close leaves the
                # segment ending at its last frame, durably.
                if not self._poisoned and (self._trim() or self._durable < self._written):
                    self._sync_locked()
            except BaseException as exc:
                failed = exc
            self._closed = True  # waiters wake to return or raise; no write or sync after this
            self._paused = False
            self._changed.notify_all()
            self._gathered.notify()
        fd, self._fd = self._fd, -1
        self._has_visible = False  # nothing publishes once closed
        return fd, failed

    def drop_in_child(self) -> None:
        """In a process forked after open: refuse every call, touch nothing shared.

        The parent's threads may have held the writer's locks at the fork:
        this process gets fresh ones. ``close()`` then only closes this
        process's copy of the descriptor.
        """
        self._closed = True
        self._init_locks()  # only this thread runs here
        self._has_visible = False


def _wait_through(condition: threading.Condition, interrupted: Optional[BaseException]) -> Optional[BaseException]:
    """Wait on ``condition``; an exception a signal handler raises meanwhile is returned, not raised.

    For ``close()``, which must not stop half way (the compiled writer waits
    without the GIL, where no handler runs): it raises it once done, so a
    Ctrl-C never leaves a writer that still writes under a released lock.
    """
    try:
        condition.wait()
    except BaseException as exc:
        return interrupted or exc
    return interrupted
