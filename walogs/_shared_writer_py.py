"""A shared writer in Python: one process's handle on a log that many processes append to.

``_shared_writer.pyx`` is the same algorithm in C; this file reads as its
specification. docs/shared-writers.md explains the design; in short:

* The state every process agrees on lives in the ``WRITERS`` file, mapped
  by each: two state slots (the active segment, its end, the last LSN
  written, the last successful sync) and the index of the current one, a
  dirty flag, the durable LSN and the poison record. A slot is changed by
  writing the other one whole and then switching the index with one store,
  so a process killed between two stores leaves a whole state behind.
* OFD byte-range locks on ``WRITERS`` serialize the processes: APPEND to
  write frames, rotate or change the state; SYNC to lead a group-commit
  fdatasync. The kernel releases them when a holder dies, and waiters
  sleep in the kernel until then. Threads of one process share its open
  file (their OFD locks never conflict), so they queue on a process-local
  mutex first: ``_local`` before APPEND, ``_leader`` before SYNC.
* An append: under APPEND, set dirty, ``pwrite`` the frames at the state's
  end, switch to a slot that includes them, clear dirty. Whoever takes
  APPEND and finds dirty set knows a holder died between the two: it cuts
  the active segment back to the state's end (and removes the empty segment
  an interrupted rotation may have created), so no later append builds on
  bytes nobody acknowledged.
* A durable append then waits until the durable LSN covers it. A waiter
  that gets SYNC without waiting (and ``_leader`` in its process) leads: if
  its LSN is still not durable, it reads the state (under APPEND, briefly),
  fdatasyncs that segment through a descriptor of its own, raises the
  durable LSN (under APPEND), then counts one more sync end and wakes every
  process sleeping on that count (a futex). The others sleep on it meanwhile,
  and write: the next leader's one fdatasync covers all of them (group
  commit across processes). A leader killed mid-sync wakes no one; the
  kernel frees SYNC, and the sleepers look again after at most
  ``WRITERS_WAIT_GUARD`` seconds.
  If the last sync covered several appends, the leader first *gathers*, as
  the single-process writer does: it sleeps on a futex on the count of
  appends written since the last sync until as many are written again (the
  appender that reaches it wakes the leader) or as long as the last sync
  took, at most 1 ms. Without it the processes that the last sync released
  split into two cohorts that alternate, each sync covering half of them.
* Rotation runs under APPEND: fdatasync the full segment, raise the durable
  LSN, create the next segment durably (the host's ``new_segment``), switch
  the state to it, hand the old descriptor to ``completed``.
* A failed write or sync poisons every process of the log through the
  mapping (no process acknowledges another write until all have closed
  and the log is opened again), and cuts what was not synced.

Lock order, within a process and across processes: ``_leader``, SYNC,
``_local``, APPEND. Nothing waits for ``_leader`` or SYNC while holding
APPEND.

The host callbacks and the surface are ``_writer_py.SegmentWriter``'s.
"""

from __future__ import annotations

import collections
import mmap
import os
import threading
import time
from collections.abc import Callable
from typing import Optional, TypeVar

from walogs import _frame_py, _futex, _io, _sync_log
from walogs._format import (
    VISIBLE_PUBLISHED as PUBLISHED,
    WRITERS_CURRENT,
    WRITERS_DIRTY,
    WRITERS_DURABLE,
    WRITERS_GATHER,
    WRITERS_GATHER_AT,
    WRITERS_LOCK_APPEND,
    WRITERS_LOCK_SYNC,
    WRITERS_POISON,
    WRITERS_POISON_AT,
    WRITERS_SLOT,
    WRITERS_SLOTS,
    WRITERS_SYNCS,
    WRITERS_UNSYNCED,
    WRITERS_WAIT_GUARD,
    WRITERS_WANT,
    segment_name,
)
from walogs._lock import RangeLocks
from walogs._types import as_batch
from walogs._visible import Publisher
from walogs.config import SYNC_MODES as MODES

_MODE_ALWAYS, _MODE_INTERVAL, _MODE_NONE = range(3)
# Indexes into the mapping viewed as native u64 / u32 words (one load or store each).
_DURABLE = WRITERS_DURABLE // 8
_CURRENT, _DIRTY = WRITERS_CURRENT // 4, WRITERS_DIRTY // 4
_UNSYNCED, _WANT, _SYNC_ENDS = WRITERS_UNSYNCED // 4, WRITERS_WANT // 4, WRITERS_SYNCS // 4
_GATHER_MAX_NS = 1_000_000
_Result = TypeVar("_Result")  # a gathering leader waits at most 1 ms
(_SEQ, _END, _FIRST, _LAST, _WRITTEN, _SYNCED_LSN, _SYNCED_SEQ, _SYNCED_END) = range(8)


class SharedWriter:
    """One process's writer on a log that every attached process appends to.

    Thread-safe. The surface is :class:`walogs._writer_py.SegmentWriter`'s:
    every call that cannot be done raises ``refusal()`` (closed, poisoned in
    any process, or in a forked child), the OSError of a failed write or
    sync (which poisons every process), or the codec's errors for a bad
    entry.
    """

    def __init__(self, directory: str, state: mmap.mmap, locks: RangeLocks, limit: int, mode: str,
                 publisher: Publisher, *, new_segment: Callable[[int], int],
                 completed: Callable[[int, int, int, int, int], None],
                 refusal: Callable[[], BaseException]) -> None:
        """Attach to the state in ``state`` (the mapped WRITERS file); ``locks`` is its open file."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._dir = directory
        self._mode = MODES.index(mode)
        self._limit = limit
        self._map = state
        self._u64 = memoryview(state).cast("Q")
        self._u32 = memoryview(state).cast("I")
        self._unsynced_addr = _futex.address(state, WRITERS_UNSYNCED)
        self._sync_ends_addr = _futex.address(state, WRITERS_SYNCS)
        self._locks = locks
        self._publisher = publisher
        self._new_segment, self._completed, self._refusal = new_segment, completed, refusal
        self._init_locks()
        self._closed = False
        self._poison: Optional[BaseException] = None  # the failure this process hit (others: see poison)
        self._fd, self._seq = -1, 0  # the active segment, for writing (under _local)
        self._sync_fd, self._sync_seq = -1, 0  # a segment, for fdatasync (under _leader)
        self._syncs = 0
        self._sync_ns = 0
        self._recent: collections.deque[int] = collections.deque(maxlen=_sync_log.SYNC_WINDOW)  # latest sync durations

    def _init_locks(self) -> None:
        self._local = threading.Lock()  # before APPEND: one thread of this process in the append section
        self._leader = threading.Lock()  # before SYNC: one thread of this process leads or waits for a sync

    # ------------------------------------------------------------------ state

    @property
    def next_lsn(self) -> int:
        """The LSN the next append gets, in any process."""
        return self.snapshot()[4]

    @property
    def durable_lsn(self) -> int:
        """The highest LSN an fdatasync made durable, in any process."""
        return self._u64[_DURABLE]

    @property
    def poison(self) -> Optional[BaseException]:
        """The error that poisoned the log's shared writers, or None."""
        if self._poison is not None or self._closed:
            return self._poison
        code, pid = WRITERS_POISON.unpack_from(self._map, WRITERS_POISON_AT)
        if not code:
            return None
        return OSError(code, f"{os.strerror(code)} (in process {pid})")

    @property
    def syncs(self) -> int:
        """fdatasync calls this process made."""
        return self._syncs

    @property
    def sync_seconds(self) -> float:
        """Wall time this process spent in them."""
        return self._sync_ns * 1e-9

    def sync_latencies(self) -> list[int]:
        """The latest fdatasync durations this process led, in ns (up to ``_sync_log.SYNC_WINDOW``), oldest first."""
        with self._leader:
            return list(self._recent)

    def snapshot(self) -> tuple[int, int, int, int, int]:
        """(seq, end, first_lsn, last_lsn, next_lsn) of the active segment, taken at one instant."""
        with self._local:
            if self._closed:
                return self._closed_snapshot
            self._locks.lock(WRITERS_LOCK_APPEND)
            try:
                slot = self._slot()
            finally:
                self._locks.unlock(WRITERS_LOCK_APPEND)
        return slot[_SEQ], slot[_END], slot[_FIRST], slot[_LAST], slot[_WRITTEN] + 1

    def _slot(self) -> tuple[int, ...]:
        # APPEND held: the current state.
        return WRITERS_SLOT.unpack_from(self._map, WRITERS_SLOTS[self._u32[_CURRENT]])

    def _switch(self, slot: tuple[int, ...]) -> None:
        # APPEND held: make ``slot`` the state: written whole into the other slot, then one store.
        other = 1 - self._u32[_CURRENT]
        WRITERS_SLOT.pack_into(self._map, WRITERS_SLOTS[other], *slot)
        self._u32[_CURRENT] = other

    # ------------------------------------------------------------------ writing

    def append(self, data: object) -> int:
        """Write one entry and return its LSN; under ``"always"`` once it is durable."""
        if self._closed:
            raise self._refusal()
        with self._local:
            lsn = self._locked(self._append_locked, data)
        if not lsn or (self._mode == _MODE_ALWAYS and not self._wait_durable(lsn)):
            raise self._refusal()
        return lsn

    def _append_locked(self, slot: tuple[int, ...], data: object) -> int:
        lsn = slot[_WRITTEN] + 1
        frame = _frame_py.encode(lsn, data)  # TypeError, EntryTooLargeError (I7), no LSN left (I9): nothing written
        if slot[_END] > 0 and slot[_END] + len(frame) > self._limit:
            slot = self._rotate(slot)
        self._write(slot, frame, lsn, lsn)
        return lsn

    def append_batch(self, items: object) -> int:
        """Write every item with one write (never spanning two segments); the first LSN."""
        items = as_batch(items)
        if self._closed:
            raise self._refusal()
        with self._local:
            first, last = self._locked(self._append_batch_locked, items) or (0, 0)
        if not first or (self._mode == _MODE_ALWAYS and last >= first and not self._wait_durable(last)):
            raise self._refusal()
        return first

    def _append_batch_locked(self, slot: tuple[int, ...], items: list[object]) -> tuple[int, int]:
        first = slot[_WRITTEN] + 1
        frames = _frame_py.encode_batch(first, items)  # checks every item (I7) and builds the frames
        if not frames:
            return first, first - 1
        if slot[_END] > 0 and slot[_END] + len(frames) > self._limit:
            slot = self._rotate(slot)
        last = first + len(items) - 1
        self._write(slot, frames, first, last)
        return first, last

    def _locked(self, step: Callable[..., _Result], *args: object) -> Optional[_Result]:
        # _local held: run ``step(slot, *args)`` under APPEND, on a repaired state. None: refused.
        if self._closed:
            return None
        self._locks.lock(WRITERS_LOCK_APPEND)
        try:
            if not self._enter():
                return None
            return step(self._slot(), *args)
        finally:
            self._locks.unlock(WRITERS_LOCK_APPEND)

    def _enter(self) -> bool:
        # APPEND held: repair what a dead holder left, follow a rotation another process made.
        # False if the log is poisoned.
        if self._u32[_DIRTY]:
            self._repair()
        if WRITERS_POISON.unpack_from(self._map, WRITERS_POISON_AT)[0]:
            return False
        seq = self._slot()[_SEQ]
        if seq != self._seq:
            fd = _io.open_write(os.path.join(self._dir, segment_name(seq)))
            old, self._fd, self._seq = self._fd, fd, seq
            if old >= 0:
                _io.close(old)
        return True

    def _repair(self) -> None:
        # APPEND held, dirty: a holder died between setting and clearing it. Cut the active segment
        # back to the state's end and remove the empty next segment a rotation may have created:
        # nobody acknowledged those bytes, and no append may build on them.
        slot = self._slot()
        path = os.path.join(self._dir, segment_name(slot[_SEQ]))
        try:
            fd = _io.open_write(path)
            try:
                _io.ftruncate(fd, slot[_END])
            finally:
                _io.close(fd)
            _io.unlink_if_empty(os.path.join(self._dir, segment_name(slot[_SEQ] + 1)))
        except OSError as exc:
            self._poison_all(exc)
            raise
        self._u32[_DIRTY] = 0

    def _write(self, slot: tuple[int, ...], frames: bytes, first: int, last: int) -> None:
        # APPEND held. P7: one write per append or batch. Dirty before it, clean once the state says it.
        seq, end = slot[_SEQ], slot[_END]
        self._publisher.mark_in_flight(seq, end, end + len(frames))
        self._u32[_DIRTY] = 1
        try:
            _io.pwrite_all(self._fd, frames, end)
        except OSError as exc:
            self._poison_all(exc)
            self._cut_to(self._fd, end)  # whole frames of a failed batch were never acknowledged
            self._u32[_DIRTY] = 0
            raise
        self._switch((seq, end + len(frames), slot[_FIRST] or first, last, last) + slot[_SYNCED_LSN:])
        self._u32[_DIRTY] = 0
        if self._mode == _MODE_NONE:
            self._publisher.publish(PUBLISHED, seq, last, end + len(frames))
        else:
            unsynced = self._u32[_UNSYNCED] = self._u32[_UNSYNCED] + 1
            want = self._u32[_WANT]
            if want and unsynced >= want:
                _futex.wake(self._unsynced_addr)

    # ------------------------------------------------------------------ group commit

    def sync(self) -> None:
        """Make every entry written so far, by any process, durable."""
        if self._closed:
            raise self._refusal()
        with self._local:
            written = self._locked(self._written)
        if written is None or not self._wait_durable(written, False):
            raise self._refusal()

    @staticmethod
    def _written(slot: tuple[int, ...]) -> int:
        return slot[_WRITTEN]

    def _wait_durable(self, lsn: int, gather: bool = True) -> bool:
        # True once lsn is durable; False if the log was poisoned first, or this handle closed
        # (close() syncs first: a waiter it left behind is durable). Raises if the sync this
        # thread led failed. The mapping stays mapped while this writer lives.
        while self._u64[_DURABLE] < lsn:
            if self.poison is not None or self._closed:
                return self._u64[_DURABLE] >= lsn
            ends = self._u32[_SYNC_ENDS]  # before trying SYNC: a sync ending after this wakes the sleep below
            if self._leader.acquire(blocking=False):
                try:
                    if self._u64[_DURABLE] >= lsn or self._closed:
                        continue
                    if self._locks.try_lock(WRITERS_LOCK_SYNC):
                        try:
                            if self._u64[_DURABLE] < lsn:
                                self._lead(gather)
                        finally:
                            self._u32[_SYNC_ENDS] = (self._u32[_SYNC_ENDS] + 1) & 0xFFFFFFFF
                            self._locks.unlock(WRITERS_LOCK_SYNC)
                            _futex.wake(self._sync_ends_addr, 1 << 30)
                        continue
                finally:
                    self._leader.release()
            _futex.wait(self._sync_ends_addr, ends, WRITERS_WAIT_GUARD)
        return True

    def _gather(self) -> None:
        # SYNC held: sleep until as many appends as the last sync covered are written again, or
        # as long as that sync took (at most 1 ms). Woken by the appender that reaches the count.
        want, _, last_ns = WRITERS_GATHER.unpack_from(self._map, WRITERS_GATHER_AT)
        if want <= 1:
            return
        deadline = time.monotonic_ns() + min(last_ns, _GATHER_MAX_NS)
        self._u32[_WANT] = want
        try:
            while True:
                unsynced = self._u32[_UNSYNCED]
                left = deadline - time.monotonic_ns()
                if unsynced >= want or left <= 0 or self.poison is not None:
                    return
                _futex.wait(self._unsynced_addr, unsynced, left * 1e-9)
        finally:
            self._u32[_WANT] = 0

    def _lead(self, gather: bool) -> None:
        # _leader and SYNC held: one fdatasync for everything written so far, by any process.
        if gather:
            self._gather()
        with self._local:
            slot = self._locked(self._take_target)
        if not slot:
            return  # poisoned: the caller's loop says so
        seq, end, target, calls = slot
        if target <= self._u64[_DURABLE]:
            return
        if seq != self._sync_seq:
            try:
                fd = _io.open_write(os.path.join(self._dir, segment_name(seq)))
            except FileNotFoundError:
                return  # checkpointed: a rotation synced it and raised the durable LSN first
            old, self._sync_fd, self._sync_seq = self._sync_fd, fd, seq
            if old >= 0:
                _io.close(old)
        started = time.monotonic_ns()
        try:
            _io.fdatasync(self._sync_fd)
        except OSError as exc:
            with self._local:
                self._locks.lock(WRITERS_LOCK_APPEND)
                try:
                    self._poison_all(exc)
                    self._truncate_to_synced()
                finally:
                    self._locks.unlock(WRITERS_LOCK_APPEND)
            raise
        took = time.monotonic_ns() - started
        self._syncs += 1
        self._sync_ns += took
        self._recent.append(took)
        if took > _sync_log.SLOW_SYNC_SECONDS * 1e9:
            _sync_log.slow_sync(self._sync_fd, took * 1e-9)
        if gather:
            WRITERS_GATHER.pack_into(self._map, WRITERS_GATHER_AT, calls or 1, 0, took)
        with self._local:
            self._locks.lock(WRITERS_LOCK_APPEND)
            try:
                self._mark_durable(target, seq, end)
            finally:
                self._locks.unlock(WRITERS_LOCK_APPEND)

    def _take_target(self, slot: tuple[int, ...]) -> tuple[int, int, int, int]:
        # APPEND held: what the leader's sync covers, and how many appends wrote it since the last.
        calls, self._u32[_UNSYNCED] = self._u32[_UNSYNCED], 0
        return slot[_SEQ], slot[_END], slot[_WRITTEN], calls

    def _mark_durable(self, lsn: int, seq: int, end: int) -> None:
        # APPEND held: an fdatasync of segment seq up to end made lsn durable.
        if WRITERS_POISON.unpack_from(self._map, WRITERS_POISON_AT)[0]:
            return
        slot = self._slot()
        if slot[_SEQ] == seq and lsn > slot[_SYNCED_LSN]:
            self._switch(slot[:_SYNCED_LSN] + (lsn, seq, end))
        if lsn > self._u64[_DURABLE]:
            self._u64[_DURABLE] = lsn
            if self._mode != _MODE_NONE:  # under "none" the written end is published already
                self._publisher.publish(PUBLISHED, seq, lsn, end)
                self._publisher.notify()  # followers sleep on inotify; the store above raised no event

    # ------------------------------------------------------------------ rotation

    def rotate(self) -> None:
        """Finish the active segment and continue in a new one; nothing to do when it is empty."""
        if self._closed:
            raise self._refusal()
        with self._local:
            done = self._locked(lambda slot: self._rotate(slot) if slot[_END] else True)
        if not done:
            raise self._refusal()

    def _rotate(self, slot: tuple[int, ...]) -> tuple[int, ...]:
        # APPEND held, the active segment not empty: sync it, create the next one and switch to it.
        # An exception before the switch leaves the old segment active (dirty stays set if a new
        # file may be left: the next holder removes it); after it the rotation is complete.
        seq, end, written = slot[_SEQ], slot[_END], slot[_WRITTEN]
        try:
            _io.fdatasync(self._fd)
        except OSError as exc:
            self._poison_all(exc)
            self._truncate_to_synced()
            raise
        self._mark_durable(written, seq, end)
        self._u32[_UNSYNCED] = 0  # the gather counts appends a leader's sync will cover: none now
        self._u32[_DIRTY] = 1
        try:
            new_fd = self._new_segment(seq + 1)  # I15: created durably before its first frame
        except OSError as exc:
            self._poison_all(exc)
            raise
        new = (seq + 1, 0, 0, 0, written, written, seq + 1, 0)
        self._switch(new)
        self._u32[_DIRTY] = 0
        old_fd, self._fd, self._seq = self._fd, new_fd, seq + 1
        try:
            self._completed(old_fd, seq, end, slot[_FIRST], slot[_LAST])
        except OSError as exc:
            self._poison_all(exc)
            raise
        return new

    # ------------------------------------------------------------------ failures

    def _poison_all(self, exc: OSError) -> None:
        # APPEND held (or the log is being closed): P2 for every process of the log.
        if self._poison is None:
            self._poison = exc
        if not WRITERS_POISON.unpack_from(self._map, WRITERS_POISON_AT)[0]:
            WRITERS_POISON.pack_into(self._map, WRITERS_POISON_AT, exc.errno or 5, os.getpid())

    def _truncate_to_synced(self) -> None:
        # APPEND held, after a failed sync: cut the active segment back to its last successful
        # sync (P2; Linux may have dropped the pages that failed), never syncing again.
        slot = self._slot()
        end = slot[_SYNCED_END] if slot[_SYNCED_SEQ] == slot[_SEQ] else 0
        try:
            fd = _io.open_write(os.path.join(self._dir, segment_name(slot[_SEQ])))
        except OSError:
            return  # poisoned either way; recovery at reopen judges what is left
        try:
            if not self._cut_to(fd, end):
                return
        finally:
            _io.close(fd)
        self._switch((slot[_SEQ], end, slot[_FIRST] if end else 0, slot[_SYNCED_LSN] if end else 0)
                     + slot[_WRITTEN:])
        if self._mode == _MODE_NONE:
            self._publisher.publish(PUBLISHED, slot[_SEQ], slot[_SYNCED_LSN], end)

    @staticmethod
    def _cut_to(fd: int, length: int) -> bool:
        # Clean-up after a failure: its own error is dropped, the first one is what raises.
        try:
            _io.ftruncate(fd, length)
        except BaseException:
            return False
        return True

    def poison_with(self, exc: BaseException) -> None:
        """Refuse every later write in every process (the host's own I/O failed)."""
        with self._local:
            if self._closed:
                return
            self._locks.lock(WRITERS_LOCK_APPEND)
            try:
                self._poison_all(exc if isinstance(exc, OSError) else OSError(5, str(exc)))
            finally:
                self._locks.unlock(WRITERS_LOCK_APPEND)
            self._poison = exc

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Sync what this process wrote (unless poisoned), refuse every later call, close descriptors.

        The other processes go on. In a forked child it only closes this
        process's descriptors. Idempotent; raises the last sync's failure
        after everything else is done.
        """
        failed: Optional[BaseException] = None
        if not self._closed and not self._in_child:
            try:
                if self.poison is None:
                    with self._local:
                        written = self._locked(self._written)
                    if written is not None:
                        self._wait_durable(written)
            except BaseException as exc:
                failed = exc
        with self._leader, self._local:
            if not self._closed:
                self._closed_snapshot = self._snapshot_for_close()
                self._closed = True
            fds = [fd for fd in (self._fd, self._sync_fd) if fd >= 0]
            self._fd = self._sync_fd = -1
        for fd in fds:
            _io.close(fd)
        if failed is not None:
            raise failed

    _in_child = False

    def _snapshot_for_close(self) -> tuple[int, int, int, int, int]:
        # _local held: the state as this handle last saw it (calls after close are refused anyway).
        if self._in_child:
            return 0, 0, 0, 0, 1
        slot = WRITERS_SLOT.unpack_from(self._map, WRITERS_SLOTS[self._u32[_CURRENT]])
        return slot[_SEQ], slot[_END], slot[_FIRST], slot[_LAST], slot[_WRITTEN] + 1

    def drop_in_child(self) -> None:
        """In a process forked after open: refuse every call, touch nothing shared."""
        self._in_child = True
        self._init_locks()  # a parent thread may have held them at the fork
        self._closed_snapshot = (0, 0, 0, 0, 1)
        self._closed = True
