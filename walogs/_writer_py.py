"""The active segment's writer in pure Python: the readable twin of ``_writer``.

A :class:`SegmentWriter` owns what every append touches: the descriptor of
the active segment, its end offset and LSNs, the durable point, the group
commit of ``sync="always"`` and publishing the visible end (P4). ``Wal``
keeps the rest (the lock, completed segments, rotation, checkpoint, close)
and reaches this state only through the methods below, so the compiled
twin can run appends without the GIL. Both twins behave the same way, make
the same system calls through ``walogs._io`` and give the same results and
exceptions; the suite runs on each.

Return codes of the write calls: an LSN (> 0), :data:`FULL` (the frame
does not fit the segment: rotate, then call again) or :data:`BLOCKED`
(closed, poisoned or forked: ``Wal`` raises the error that says which).
"""

from __future__ import annotations

import threading
import time
from _thread import LockType, allocate_lock, get_ident
from typing import Optional

from walogs import _codec, _io
from walogs._visible import PUBLISHED, Publisher
from walogs.errors import as_batch

FULL = 0
"""The frames do not fit in the active segment: rotate and retry."""
BLOCKED = -1
"""Nothing was written: the writer is closed, poisoned or in a forked child."""

MODES = ("always", "interval", "none")


class SegmentWriter:
    """Appends frames to the active segment and makes them durable (I4, P2, P4, P7)."""

    def __init__(self, fd: int, seq: int, end: int, first_lsn: int, last_lsn: int, next_lsn: int,
                 limit: int, mode: str, publisher: Publisher) -> None:
        """Take over a segment recovery left synced up to ``end`` (P11)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._fd, self._seq, self._end = fd, seq, end
        self._first_lsn, self._last_lsn = first_lsn, last_lsn
        self.next_lsn = next_lsn
        self.durable_lsn = next_lsn - 1
        self.poison: Optional[BaseException] = None
        self._limit = limit
        self._always = mode == "always"
        self._publisher = publisher
        self._publish_written = publisher.publish if mode == "none" else None
        self._mark_in_flight = publisher.mark_in_flight
        self._mark_in_flight(seq, end, end)
        # _mutex guards the cursor (one write at a time); _sync_mutex is held
        # around an fdatasync and while paused, so no descriptor is swapped or
        # closed under a leader; _sync_state guards _syncing, durable_lsn,
        # _waiters and publishing.
        self._mutex = threading.Lock()
        self._sync_mutex = threading.Lock()
        self._sync_state = threading.Lock()
        self._paused_by: Optional[int] = None
        self._closed = False
        self._cut_pending = False  # a failed sync's unsynced tail is still to be cut (P2)
        self._syncing = False
        self._waiters: list[tuple[int, LockType]] = []  # (lsn, held lock) of threads awaiting a sync
        # What the next fdatasync covers, and the last end one succeeded for: (fd, lsn, seq, end).
        self._sync_target = (fd, self.durable_lsn, seq, end)
        self._synced = self._sync_target
        self._publish(self._sync_target)
        self.syncs = 0  # fdatasync calls the group commit made (appends' and sync()'s; benchmarks report it)
        self.sync_seconds = 0.0  # wall time spent in them

    # ------------------------------------------------------------------ writing

    def append(self, data: object) -> int:
        """Write one entry; under ``"always"`` return once it is durable. LSN, FULL or BLOCKED."""
        mutex = self._mutex
        mutex.acquire()  # not `with`: this is the hot path, and acquire/release is cheaper
        try:
            if self._closed or self.poison is not None:
                return BLOCKED
            lsn = self.next_lsn
            frame = _codec.encode(lsn, data)
            if self._end + len(frame) > self._limit and self._end > 0:
                return FULL
            self._write(frame, lsn, lsn)
        finally:
            mutex.release()
        if self._always:
            return lsn if self._wait_durable(lsn) else BLOCKED
        return lsn

    def append_batch(self, items: list[object]) -> int:
        """Write ``items`` with one write; the first LSN, FULL or BLOCKED. Validates all first (I7)."""
        items = as_batch(items)
        with self._mutex:
            if self._closed or self.poison is not None:
                return BLOCKED
            first = self.next_lsn
            frames = _codec.encode_batch(first, items)
            if not items:
                return first
            if self._end + len(frames) > self._limit and self._end > 0:
                return FULL
            last = first + len(items) - 1
            self._write(frames, first, last)
        if self._always and not self._wait_durable(last):
            return BLOCKED
        return first

    def _write(self, frames: bytes, first: int, last: int) -> None:
        # Caller holds _mutex. P7: one write per append or batch, nothing kept in user space.
        # Before the write: if a kill cuts it short, recovery cuts all of it (_visible.in_flight_cut).
        self._mark_in_flight(self._seq, self._end, self._end + len(frames))
        try:
            _io.pwrite_all(self._fd, frames, self._end)
        except OSError as exc:
            self.poison_with(exc)
            # Whole frames of a failed batch that reached the file were never acknowledged:
            # cut them, so a reopen cannot keep half a batch that the caller will retry.
            try:
                _io.ftruncate(self._fd, self._end)
            except OSError:
                pass
            raise
        self._end += len(frames)
        if not self._first_lsn:
            self._first_lsn = first
        self._last_lsn = last
        self.next_lsn = last + 1
        if self._always:  # otherwise only sync() needs a target, and it sets one
            self._sync_target = (self._fd, last, self._seq, self._end)
        elif self._publish_written is not None:
            self._publish_written(PUBLISHED, self._seq, last, self._end)

    def append_paused(self, data: object) -> int:
        """While this thread has the writer paused: write one entry now; LSN or BLOCKED.

        Not FULL-checked (the caller made room) and not yet durable: the
        caller syncs with :meth:`sync_paused`. An append that had to rotate
        writes this way, so other appends cannot take the fresh segment first.
        """
        if self._closed or self.poison is not None:
            return BLOCKED
        lsn = self.next_lsn
        self._write(_codec.encode(lsn, data), lsn, lsn)
        return lsn

    def append_batch_paused(self, items: list[object]) -> int:
        """:meth:`append_paused` for a batch; the first LSN or BLOCKED."""
        items = as_batch(items)
        if self._closed or self.poison is not None:
            return BLOCKED
        first = self.next_lsn
        frames = _codec.encode_batch(first, items)
        if frames:
            self._write(frames, first, first + len(items) - 1)
        return first

    def sync(self) -> bool:
        """Make every written entry durable, leading or joining a group commit; False if BLOCKED."""
        with self._mutex:
            if self._closed or self.poison is not None:
                return False
            written = self.next_lsn - 1
            self._sync_target = (self._fd, written, self._seq, self._end)
        return self._wait_durable(written)

    # ------------------------------------------------------------------ group commit

    def _wait_durable(self, lsn: int) -> bool:
        """True once ``lsn`` is fdatasync'd, leading a sync or following one (group commit).

        False when the writer was poisoned, or closed before ``lsn`` was
        synced. Raises the OSError of a failed sync this thread led.

        A follower waits on a lock of its own and is woken exactly once per
        sync it waited for: when its LSN is durable, when it is the first not
        covered (it leads the next sync), or when the writer fails or has
        closed. Measured against one threading.Condition with notify_all:
        every woken thread then queued for the condition's lock and the GIL in
        turn, and 8 threads reached 15k appends/s against 18k/s here.
        Gathering more frames per sync before leading does not pay off with
        the GIL (benchmarks/README.md); the compiled twin gathers.
        """
        state = self._sync_state
        while True:
            with state:
                if self.durable_lsn >= lsn:
                    return True
                if self.poison is not None or self._closed:
                    return False
                if self._syncing:  # a leader's sync covers lsn, or fails
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
                with self._sync_mutex:  # held by a pause (rotate, close): wait it out
                    if not self._closed:  # else close() synced, and closed the descriptor
                        target = self._sync_target
                        started = time.perf_counter()
                        try:
                            _io.fdatasync(target[0])
                        except OSError as exc:
                            # Poisoned before a pause can take _sync_mutex: rotate/close must
                            # not sync again after a failed sync (P2), and close() cuts the
                            # tail if it gets there before _cut_unsynced.
                            self._cut_pending = True
                            self.poison_with(exc)
                            raise
                        self.sync_seconds += time.perf_counter() - started
                        self.syncs += 1
                        # Recorded at once: a failing rotate() sync next must not cut these frames.
                        synced = self._synced = target
            except OSError:
                self._cut_unsynced()
                raise
            finally:
                with state:
                    self._syncing = False
                    if synced is not None and synced[1] > self.durable_lsn and self.poison is None:
                        self._mark_durable(synced)
                    self._wake_waiters()
            if synced is not None and synced[1] >= lsn:
                return True  # durable even if another call failed since: its cut stops at _synced

    def _mark_durable(self, synced: tuple[int, int, int, int]) -> None:
        # Caller holds _sync_state. Under "none" the written end is already published;
        # once closed, Wal.close() unmaps the record.
        self.durable_lsn = synced[1]
        if self._publish_written is None and not self._closed:
            self._publish(synced)

    def _publish(self, target: tuple[int, int, int, int]) -> None:
        # P4: readers may read up to here; callers pass only synced (or, under "none", written) ends.
        _, lsn, seq, offset = target
        self._publisher.publish(PUBLISHED, seq, lsn, offset)

    def _wake_waiters(self) -> None:
        """Wake the waiters a sync covered, and the first it did not so that it leads the next.

        Caller holds _sync_state. After a failure, or once closed, every
        waiter is woken (to return or fail). A waiter is only added while a
        sync runs, and each sync calls this when it ends, so none is left
        asleep.
        """
        if not self._waiters:
            return
        durable = self.durable_lsn
        wake_all = self.poison is not None or self._closed
        still: list[tuple[int, LockType]] = []
        for lsn, waiter in self._waiters:
            if wake_all or lsn <= durable:
                waiter.release()
            else:
                still.append((lsn, waiter))
        if still and not self._syncing:
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
        # After a failed fdatasync (P2); the writer is poisoned, so no write can start.
        with self._mutex:
            if self._cut_pending and not self._closed:  # else finish_close() cut it
                self._truncate_to_synced()

    def _truncate_to_synced(self) -> None:
        """Cut the active segment back to its last successful sync (P2); caller holds _mutex.

        Linux marks the pages of a failed writeback clean: what they held may
        be on no disk, yet reads still return it, so a reopen would keep those
        frames and call them durable. They were never acknowledged as durable,
        so they go now. Not synced again: a failed sync is never retried.
        """
        self._cut_pending = False
        _, synced_lsn, synced_seq, synced_end = self._synced
        end = synced_end if synced_seq == self._seq else 0
        try:
            _io.ftruncate(self._fd, end)
        except OSError:
            return  # poisoned either way; recovery at reopen judges what is left
        self._end = end
        self._last_lsn = synced_lsn if end else 0
        self._first_lsn = self._first_lsn if end else 0
        if self._publish_written is not None:  # "none" published the written end: readers must not read past the cut
            self._publish_written(PUBLISHED, self._seq, synced_lsn, end)

    def poison_with(self, exc: BaseException) -> None:
        """P2: after a failed write or sync nothing is acknowledged until reopen; wake every waiter."""
        if self.poison is None:
            self.poison = exc
        with self._sync_state:
            self._wake_waiters()

    # ------------------------------------------------------------------ exclusive access

    def pause(self) -> None:
        """Wait until no write or sync runs, then hold both off until :meth:`resume`.

        For rotation and close: the caller may then sync, swap or close the
        descriptor. Appends that arrive meanwhile wait.
        """
        self._mutex.acquire()
        try:
            self._sync_mutex.acquire()
        except BaseException:
            self._mutex.release()
            raise
        self._paused_by = get_ident()

    def resume(self) -> None:
        """Let writes and syncs run again; nothing to do unless this thread paused the writer."""
        if self._paused_by != get_ident():
            return  # the pause never happened (an exception as it began): release nothing
        self._paused_by = None
        self._sync_mutex.release()
        self._mutex.release()

    def cursor(self) -> tuple[int, int, int, int, int, int]:
        """(fd, seq, end, first_lsn, last_lsn, next_lsn) of the active segment, consistent."""
        if self._paused_by == get_ident():
            return self._cursor()
        with self._mutex:
            return self._cursor()

    def _cursor(self) -> tuple[int, int, int, int, int, int]:
        return self._fd, self._seq, self._end, self._first_lsn, self._last_lsn, self.next_lsn

    def sync_paused(self) -> bool:
        """While paused: fdatasync everything written, mark it durable and wake its waiters.

        False, doing nothing, once poisoned or closed: a failed sync is never
        retried (P2; Linux reports a writeback error once, so a retry would
        "succeed" over lost pages). A failure poisons the writer, cuts the
        unsynced tail and raises (P2).
        """
        if self.poison is not None or self._closed:
            return False
        target = (self._fd, self.next_lsn - 1, self._seq, self._end)
        try:
            _io.fdatasync(self._fd)
        except OSError as exc:
            self.poison_with(exc)
            self._truncate_to_synced()
            raise
        self._synced = target
        with self._sync_state:
            if target[1] > self.durable_lsn:
                self._mark_durable(target)
            self._wake_waiters()
        return True

    def switch(self, fd: int, seq: int) -> None:
        """While paused, after :meth:`sync_paused`: continue in a new, empty segment ``seq``."""
        target = (fd, self.next_lsn - 1, seq, 0)
        # One statement: an exception (Ctrl-C) between two would leave the writer half switched.
        self._fd, self._seq, self._end, self._first_lsn, self._last_lsn, self._sync_target, self._synced = (
            fd, seq, 0, 0, 0, target, target)

    def finish_close(self) -> None:
        """While paused: no write or sync ever again; wake every waiter (to return or fail); resume."""
        try:
            if self._cut_pending:  # a leader's sync failed just before the pause: cut its tail now
                self._truncate_to_synced()
            with self._sync_state:  # leaders publish under it: none does once this is set
                self._closed = True
                self._wake_waiters()
        finally:
            self.resume()

    def drop_in_child(self) -> None:
        """In a process forked after open: lock-free; block writes, touch nothing shared (P6)."""
        self._closed = True
        # The parent's threads may have held these at fork: fresh ones for anything left here.
        self._mutex = threading.Lock()
        self._sync_mutex = threading.Lock()
        self._sync_state = threading.Lock()
        self._waiters = []
