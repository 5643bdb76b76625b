"""The writer: one ``Wal`` per log directory appends entries and hands out LSNs."""

from __future__ import annotations

import errno
import functools
import logging
import os
import pathlib
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import Optional, TypeVar

from walogs import _damage, _floor, _impl, _io, _lock, _prealloc, _recovery, _retention, _segments, _shared, _stats
from walogs import _visible
from walogs import cursor as _cursor
from walogs._format import WRITERS_LOCK_CHECKPOINT, WRITERS_LOCK_FLOOR
from walogs._recovery import SegmentInfo
from walogs.config import TailState, WalConfig
from walogs._types import Buffer, PathLike, as_batch
from walogs.errors import LsnOutOfRangeError, WalClosedError, WalError

_NO_LIMIT = 1 << 64  # max_segment_size=None: larger than any segment can grow
_log = logging.getLogger("walogs")
_Method = TypeVar("_Method", bound=Callable[..., object])


def _closes_when_done(method: _Method) -> _Method:
    """Complete a close() deferred while ``method`` ran (see :meth:`Wal.close`) when it ends."""

    @functools.wraps(method)
    def call(self: Wal, *args: object, **kwargs: object) -> object:
        try:
            return method(self, *args, **kwargs)
        finally:
            if self._close_deferred:
                self._close()

    return call  # type: ignore[return-value]


def _weakly(method: _Method) -> _Method:
    """``method`` of a Wal, called through a weak reference: the writer's callbacks keep no Wal alive.

    A Wal dropped without close() is then freed, and closed, at once.
    """
    ref = weakref.WeakMethod(method)

    def call(*args: object) -> object:
        return ref()(*args)  # type: ignore[misc]  # only a live Wal calls its writer

    return call  # type: ignore[return-value]


def _floor_chore(wal: Wal) -> Callable[[], None]:
    """For the segment preparer's thread: ``wal``'s deferred LSN_FLOOR update, if ``wal`` still lives."""
    ref = weakref.ref(wal)

    def chore() -> None:
        live = ref()
        if live is not None:
            live._record_high_water()

    return chore


def _halted(wal: Wal) -> Callable[[], bool]:
    """For the segment preparer: True once ``wal`` is gone or its writer poisoned (after a failed sync, no more I/O)."""
    ref = weakref.ref(wal)

    def halted() -> bool:
        live = ref()
        writer = getattr(live, "_writer", None)
        return live is None or (writer is not None and writer.poison is not None)

    return halted


class Wal:
    """A writer of a log directory. Create it with :meth:`Wal.open`.

    Methods are thread-safe. With ``sync="always"`` appends from several
    threads share fdatasync calls (group commit); with ``shared=True``,
    appends from several processes do too.
    """

    def __init__(self):  # type: ignore[no-untyped-def]  # unannotated: help(Wal) then shows no constructor
        """Not for use: open a log with :meth:`Wal.open`."""
        raise TypeError("a Wal is made by Wal.open(path, config), not by calling Wal()")

    def _start(self, directory: str, config: WalConfig, lock: _lock.WriterLock, layout: Optional[_recovery.LogLayout],
               fd: int, publisher: _visible.Publisher, attachment: Optional[_shared.Attachment] = None) -> None:
        # Wal.open's second half: take over what recovery left (P11: synced, so durable and published),
        # or (``attachment``) join the shared writers.
        self._dir = directory
        self._path = pathlib.Path(directory)
        self._config = config
        self._lock = lock
        self._attachment = attachment
        self._generation = _lock.fork_generation()
        self._opened_by = os.getpid()
        self._completed: list[SegmentInfo] = layout.segments[:-1] if layout is not None else []
        self._shared_segments = _shared.CompletedSegments(directory) if attachment is not None else None
        self._tail_state = TailState(layout.torn_at if layout is not None else attachment.torn_at)  # type: ignore[union-attr]
        # Closed until fully built: __del__ of a half-built Wal leaves the clean-up to open().
        self._closed = True
        self._close_deferred = False  # close() was called inside a call on this thread: close when it ends
        self._unreported: Optional[WalError] = None  # a background sync's failure no call has raised yet
        # Guards checkpoint, close and consistent segment lists; appends and rotations take only
        # the writer's. Lock order: this one, then the writer's; never the other way round.
        self._mutex = threading.Lock()
        # Guards LSN_FLOOR, which rotation (under the writer's mutex, or after it in the preparer's
        # thread) and checkpoint (under this _mutex) both advance; its holder takes no other lock.
        self._floor_lock = threading.Lock()
        # The high-water mark (seq, next_lsn) a rotation left for the preparer's thread to record
        # (_record_high_water), or None; _pending_lock guards it and is held for nothing else.
        self._floor_pending: Optional[tuple[int, int]] = None
        self._pending_lock = threading.Lock()
        # The OSError of a failed LSN_FLOOR update, set under the floor guard: from then on no
        # checkpoint trusts or writes the floor (P2), even before the writer is poisoned.
        self._floor_failed: Optional[OSError] = None
        self._publisher = publisher
        # The next segment prepared with zeros (docs/format.md); shared writers never preallocate.
        self._preparer: Optional[_prealloc.Preparer] = None
        if attachment is None:
            if _prealloc.pays_off(directory, config.preallocate, config.sync):
                self._preparer = _prealloc.Preparer(directory, _prealloc.prepared_size(config.max_segment_size),
                                                    background=_prealloc.BACKGROUND, halted=_halted(self),
                                                    chore=_floor_chore(self))
            else:
                _prealloc.remove_leftover(directory)
        new_segment, completed, refusal = (_weakly(self._new_segment), _weakly(self._segment_completed),
                                           _weakly(self._refusal))
        self._writer: _impl.SegmentWriter | _impl.SharedWriter
        if attachment is not None:
            self._writer = _impl.SharedWriter(
                directory, attachment.state, attachment.locks, config.max_segment_size or _NO_LIMIT, config.sync,
                publisher, new_segment=new_segment, completed=completed, refusal=refusal)
        else:
            assert layout is not None
            active = layout.segments[-1]
            self._writer = _impl.SegmentWriter(
                fd, active.seq, active.end, active.first_lsn, active.last_lsn, layout.next_lsn,
                config.max_segment_size or _NO_LIMIT, config.sync, publisher,
                new_segment=new_segment, completed=completed, refusal=refusal)
        _lock.watch_forks(self)
        at_open = self._writer.snapshot()
        self._stats = _stats.Baseline(at_open[0], at_open[1], at_open[4])
        if self._preparer is not None:
            self._preparer.start()
        self._stop_interval = threading.Event()
        self._interval_thread: Optional[threading.Thread] = None
        if config.sync == "interval":
            self._interval_thread = threading.Thread(
                target=_interval_sync, args=(weakref.ref(self), self._stop_interval, config.sync_interval),
                name=f"walogs-sync {directory}", daemon=True,
            )
            self._interval_thread.start()
        self._closed = False

    @classmethod
    def open(cls, path: PathLike, config: Optional[WalConfig] = None, *,
             lock_timeout: Optional[float] = 0.0, create: Optional[bool] = None, shared: bool = False) -> Wal:
        """Open or create the log directory ``path`` as its single writer, or (``shared``) one of many.

        Takes the writer lock (waiting up to ``lock_timeout`` seconds, None:
        forever, else WalLockedError), then runs recovery: a torn tail is cut,
        damage that is not a torn tail raises WalCorruptError and nothing is
        cut.

        ``shared=True``: any number of processes (and handles) append to the
        log at once, each append atomic, LSNs unique and contiguous across
        all of them, and with ``sync="always"`` one fdatasync acknowledges
        every frame written before it, whoever wrote it. The first shared
        opener runs recovery; later ones attach without scanning, and must
        use the same ``sync`` and ``max_segment_size`` (else ValueError
        naming both). An exclusive open and a shared one exclude each other
        (WalLockedError). A shared writer killed at any instant loses no
        acknowledged entry, and the next process to append repairs what it
        left (docs/shared-writers.md).

        ``create`` says where a new log may be made. ``None`` (the default):
        in a missing directory (parents too) or an empty one; a directory
        that holds other files and no log raises FileExistsError. ``True``:
        also in such a directory. ``False``: never; FileNotFoundError unless ``path``
        already holds a log. An empty ``path`` is a ValueError (it would make
        the current directory a log). If there is no space to make a new log
        (OSError ENOSPC), nothing of it is left behind.
        """
        if config is None:
            config = WalConfig()
        elif not isinstance(config, WalConfig):
            raise TypeError(f"config must be a WalConfig, not {type(config).__name__}")
        if create is not None and not isinstance(create, bool):
            raise TypeError(f"create must be True, False or None, not {create!r}")
        if not isinstance(shared, bool):
            raise TypeError(f"shared must be True or False, not {shared!r}")
        raw = os.fspath(path)
        if not raw:
            raise ValueError("the log path is empty: name the log's directory (an empty path would "
                             "make the current directory a log)")
        directory = os.path.abspath(os.fsdecode(raw))
        made_dirs = _recovery.prepare_directory(directory, create)
        if shared:
            return cls._open_shared(directory, config, lock_timeout, made_dirs)
        try:
            lock = _lock.WriterLock.acquire(directory, lock_timeout)
        except BaseException:
            _recovery.remove_created_directories(made_dirs)
            raise
        fd = publisher = None
        existed: Optional[frozenset[str]] = None
        try:
            if not _recovery.segment_files(directory)[0]:
                existed = frozenset(_io.listdir(directory))  # a new log, unless a wal.log is there
            _visible.mark_recovering(directory)
            layout, fd = _recovery.recover(directory)
            if layout.torn_at is not None:
                _log.warning("%s: recovery cut a torn tail off the last segment at offset %d (a write the last "
                             "writer never finished; nothing it acknowledged is lost)", directory, layout.torn_at)
            # P11: published only now that recovery made the kept entries durable.
            publisher = _visible.Publisher(directory)
            lock.record_owner()
            wal = cls.__new__(cls)
            wal._start(directory, config, lock, layout, fd, publisher)
            return wal
        except BaseException as exc:
            # Nothing may outlive a failed open: descriptor, mapping, lock; nor, when there was no
            # space to make it, a new log's files. (After a failed sync nothing more is done, P2.)
            if publisher is not None:
                try:
                    publisher.close(mark_closed=True)
                except BufferError:
                    pass  # a half-built writer still maps it: unmapped when that is collected
            if fd is not None:
                _io.close(fd)
            if existed is not None and _segments.V1_NAME not in existed and _floor.no_space(exc):
                _recovery.discard_new_log(directory, existed)
                lock.discard()
                _recovery.remove_created_directories(made_dirs)
            else:
                lock.release()
            raise

    @classmethod
    def _open_shared(cls, directory: str, config: WalConfig, lock_timeout: Optional[float],
                     made_dirs: list[str]) -> Wal:
        try:
            attachment = _shared.attach(directory, config, lock_timeout)
        except BaseException:
            _recovery.remove_created_directories(made_dirs)
            raise
        try:
            wal = cls.__new__(cls)
            wal._start(directory, config, attachment.lock, None, -1, attachment.publisher, attachment)
            return wal
        except BaseException:
            _shared.detach(attachment)
            raise

    @property
    def shared(self) -> bool:
        """True for a shared writer (``Wal.open(..., shared=True)``)."""
        return self._attachment is not None

    @contextmanager
    def _across_processes(self, thread_lock: threading.Lock, offset: int) -> Iterator[None]:
        # ``thread_lock``, and for a shared writer also the byte-range lock ``offset`` of WRITERS.
        with thread_lock:
            attachment = self._attachment
            if attachment is None:
                yield
                return
            if self._generation != _lock.fork_generation():
                # P6: in a forked child the WRITERS descriptor is closed (locks.fd is -1): refuse
                # as every other call does, rather than fail in fcntl with a ValueError.
                raise self._refusal()
            attachment.locks.lock(offset)
            try:
                yield
            finally:
                attachment.locks.unlock(offset)

    def _floor_guard(self) -> AbstractContextManager[None]:
        return self._across_processes(self._floor_lock, WRITERS_LOCK_FLOOR)

    # ------------------------------------------------------------------ guards

    def _refusal(self) -> WalError:
        """The error for a call this Wal refuses, saying why and what to do: the one place that says it.

        The writer calls it for every write it refuses. Closed; opened before
        a fork of this process; or poisoned by an I/O error (a background
        sync's failure that no call has raised yet is raised once, first).
        """
        if self._closed:
            return WalClosedError(f"{self._dir}: this Wal is closed; open a new one with Wal.open")
        if self._generation != _lock.fork_generation():
            # P6: the parent owns the lock and the file offsets; the child must not write.
            return WalError(
                f"{self._dir}: this Wal was opened in process {self._opened_by} before a fork; "
                "a forked child cannot write through it: close it and open a new handle "
                "(or use WalReader to read)"
            )
        unreported, self._unreported = self._unreported, None
        if unreported is not None:
            return unreported
        poison = self._writer.poison
        if poison is not None:
            self._report_poison(poison)
        if poison is None:  # not refused after all (a race with nothing to report): say what to do anyway
            return WalError(f"{self._dir}: the writer refused the write; close it and open the log again")
        # P2: after a failed write or sync nothing may be acknowledged until reopen.
        error = WalError(
            f"{self._dir}: writer is poisoned by an earlier I/O error ({poison}); "
            "no append can be acknowledged: close it and open the log again to recover"
        )
        error.__cause__ = poison
        return error

    def _report_poison(self, exc: BaseException) -> None:
        """Log, once per handle, that an I/O error poisoned the writer (what an operator must know)."""
        if getattr(self, "_poison_reported", False):
            return
        self._poison_reported = True
        _log.warning("%s: writer poisoned by an I/O error (%s): no append is acknowledged until every "
                     "writer of the log has closed it and it is opened again (recovery then keeps what "
                     "was synced)", self._dir, exc)

    def _check_open(self) -> None:
        if self._closed:
            raise self._refusal()

    def _check_writable(self) -> None:
        if self._closed or self._generation != _lock.fork_generation() or self._writer.poison is not None:
            raise self._refusal()

    def _in_forked_child(self) -> None:
        # Called by _lock in a child forked after open (P6); _refusal says why writes fail.
        # A parent thread may have held these at the fork (a rotation, a checkpoint, the sync
        # thread's wait); only the forking thread runs here, so close() gets fresh ones.
        self._mutex = threading.Lock()
        self._floor_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._stop_interval = threading.Event()
        self._interval_thread = None
        self._writer.drop_in_child()

    # ------------------------------------------------------------------ writing

    def append(self, data: Buffer) -> int:
        """Append one entry (any bytes-like object) and return its LSN.

        With ``sync="always"`` it returns only once the entry is on disk
        (fdatasync). Raises TypeError for non-bytes-like data and
        EntryTooLargeError for more than MAX_ENTRY_SIZE bytes, before writing
        anything.
        """
        try:
            return self._writer.append(data)
        except OSError as exc:
            self._report_poison(exc)
            raise
        finally:
            if self._close_deferred:  # a signal handler called close() during this call
                self._close()

    def append_batch(self, items: Iterable[Buffer]) -> range:
        """Append many entries with one write (and one sync in ``"always"``).

        Returns the range of their LSNs. Every item is checked first: a bad
        one raises with nothing of the batch written. A batch never spans
        two segments. ``items`` must be an iterable of entries: one bytes
        object is a TypeError (use :meth:`append`, or ``[data]``).
        """
        try:
            items = list(as_batch(items))
            first = self._writer.append_batch(items)
            return range(first, first + len(items))
        except OSError as exc:
            self._report_poison(exc)
            raise
        finally:
            if self._close_deferred:  # a signal handler called close() during this call
                self._close()

    def sync(self) -> None:
        """Make every written entry durable now."""
        try:
            self._writer.sync()
        except OSError as exc:
            self._report_poison(exc)
            raise
        finally:
            if self._close_deferred:  # a signal handler called close() during this call
                self._close()

    @_closes_when_done
    def rotate(self) -> None:
        """Finish the active segment and start a new one; no-op when it is empty."""
        self._writer.rotate()

    # The writer's rotation calls the two methods below, holding its mutex (so they must not
    # call the writer, nor take self._mutex). An OSError from either poisons the writer (P2);
    # any other exception (Ctrl-C) only propagates, and the writer stays usable: before the
    # switch the old segment stays active, after it the rotation is complete.

    def _new_segment(self, seq: int) -> int:
        """Create segment ``seq`` for the writer's rotation, durably; its descriptor.

        The finished segment is synced already. On failure nothing is left,
        except after a failed directory sync: then nothing more is done on
        disk, and the next open (or rotation) takes over the empty file.
        """
        path = os.path.join(self._dir, _segments.segment_name(seq))
        fd: Optional[int] = None
        sync_failed = False
        try:
            # A prepared segment (zeros, synced) if one is ready; never waits for one.
            if self._preparer is not None and self._take_prepared(path):
                fd = _io.open_write(path)
            else:
                fd = self._create_segment(path)
            try:
                _io.sync_dir(self._dir)  # I15: durable before its first frame
            except OSError:
                # P2: after a failed sync nothing more is done on disk, not even removing the
                # new, empty file: the next open finds it empty and takes it over.
                sync_failed = True
                _io.close(fd)
                raise
            return fd
        except BaseException:
            if not sync_failed:
                self._discard_segment(path, fd)
            raise

    def _segment_completed(self, fd: int, seq: int, end: int, first_lsn: int, last_lsn: int) -> None:
        """Segment ``seq`` is complete (synced; its successor is active): list it, close ``fd``."""
        name = _segments.segment_name(seq)
        info = SegmentInfo(seq, name, first_lsn, last_lsn, end)
        # The writer has switched already: an exception here (Ctrl-C) must not leave the
        # segment unlisted or its descriptor open, whichever step it lands on.
        try:
            if self._attachment is None:  # shared writers list completed segments from the directory
                self._completed.append(info)
        finally:
            if self._attachment is None and (not self._completed or self._completed[-1] is not info):
                self._completed.append(info)
            try:
                _io.close(fd)
            except BaseException:
                _io.close_strays(os.path.join(self._dir, name))  # closed, or about to be: unknown
                raise
        with self._pending_lock:
            self._floor_pending = (seq + 1, last_lsn + 1)
        if self._preparer is not None:
            # Its thread records the high-water mark, then prepares the next segment, now that
            # this rotation's syncs are done: neither is on this append's path.
            self._preparer.start()
        else:
            self._record_high_water()  # no thread to leave it to (shared writers, preallocate off)

    def _record_high_water(self, at_close: bool = False) -> None:
        """Record the high-water mark a rotation left pending in LSN_FLOOR.

        Segment ``seq`` exists durably and the segments before it are
        synced, so the record is true; a later checkpoint then writes
        nothing (and needs no space on a full disk), and a lost tail
        segment is found. Until it is written the record is only lower,
        which is always allowed: checkpoint advances the floor itself before
        deleting what the record does not cover, and an open records it for
        a log that has rotated. So a crash before it loses nothing, and a
        full disk here is not an error. Another OSError poisons the writer
        (the file's state is unknown and is never synced again as if fine):
        raised on the rotation's path (the writer poisons itself), handed to
        the writer from the preparer's thread, dropped at close
        (``at_close``). Nothing is written once the writer is poisoned, nor
        in a forked child.
        """
        # P1, I11, I15 (docs/format.md, LSN_FLOOR); P2 for its failures; P6 for the child.
        with self._pending_lock:
            pending = self._floor_pending
        if pending is None or self._generation != _lock.fork_generation():
            return
        failed: Optional[OSError] = None
        try:
            with self._floor_guard():
                if self._writer.poison is not None or self._floor_failed is not None:
                    return  # P2: after a failed sync nothing more is done on disk
                try:
                    _floor.advance(self._dir, pending[1], pending[0])
                except OSError as exc:
                    if not _floor.no_space(exc):
                        # Marked while the guard is held: a checkpoint waiting for it never relies
                        # on a floor that may be on no disk (checkpoint).
                        self._floor_failed = failed = exc
        except OSError:
            raise
        except BaseException:
            _floor.close_strays(self._dir)  # interrupted (Ctrl-C): the record stays a lower bound
            raise
        if failed is not None:
            if at_close:
                return  # dropped: the writer is closed, and the next open records it again
            if self._preparer is not None and self._preparer.in_thread():
                self._writer.poison_with(failed)  # no caller to raise it to: the next call raises it
                return
            raise failed  # on the rotation's path, under the writer's mutex: the writer poisons itself
        with self._pending_lock:
            if self._floor_pending == pending:
                self._floor_pending = None  # done (or no space: the record stays a lower bound)

    def _take_prepared(self, path: str) -> bool:
        # The prepared segment renamed to ``path``; False (an empty segment is made instead) when
        # none is ready or the rename failed (it changed nothing then).
        assert self._preparer is not None
        try:
            return self._preparer.take(path)
        except OSError:
            return False

    def _create_segment(self, path: str) -> int:
        """Create the segment file ``path`` for writing (syncing the directory is the caller's).

        An empty (or all-zero, prepared) file already there is one a
        rotation of this writer left when it was interrupted (no one else
        writes here while we hold the lock): it is taken away and created
        again. Any other is FileExistsError.
        """
        try:
            return _io.create_new(path)
        except FileExistsError:
            if not self._discard_segment(path, None):
                raise
        return _io.create_new(path)

    def _discard_segment(self, path: str, fd: Optional[int]) -> bool:
        """Undo the creation of segment ``path`` (fd: its descriptor if known); True if it was removed.

        Only an empty or all-zero (prepared) file goes: nothing is written
        to a new segment before the writer switches to it.
        """
        try:
            if fd is not None:
                _io.close(fd)
            else:
                _io.close_strays(path)
            if _io.unlink_if_empty(path):
                return True
            if not _damage.all_zero(path, 0):
                return False
            _io.unlink(path)
            return True
        except OSError:
            return False  # the next rotation takes over an empty file it finds there

    @_closes_when_done
    def checkpoint(self, applied_up_to: Optional[int] = None) -> int:
        """Delete completed segments whose every LSN is <= ``applied_up_to``; return how many.

        Named cursors pin the log: a segment holding an LSN above a cursor's
        committed position stays, unless the segments kept would pass
        ``config.max_retained_bytes``; then the oldest go anyway, and the
        cursors that had not committed their entries are lost (logged as a
        warning on the ``walogs`` logger). With no argument: as far as every
        cursor allows (nothing when the log has no cursor), and past the cap
        as far as it requires.

        Oldest first, syncing the directory after each, so a crash leaves
        the newest segments; the active segment is never deleted. LSNs
        never restart: the LSN floor (LSN_FLOOR) is above every deleted LSN
        before the first deletion. The rotation that completed a segment
        recorded it (or the preparer's thread just after it; if not yet, the
        checkpoint writes it first), so a checkpoint normally writes nothing and
        frees space on a full disk. If it must write the floor (a log from
        an older walogs) and the disk is full, it deletes what the stored
        entries still cover and raises OSError(ENOSPC) for the rest; the
        writer stays usable.
        """
        if applied_up_to is not None and (isinstance(applied_up_to, bool) or not isinstance(applied_up_to, int)):
            raise TypeError(f"applied_up_to must be an int LSN or None, not {type(applied_up_to).__name__}")
        with self._across_processes(self._mutex, WRITERS_LOCK_CHECKPOINT), _retention.cursors_held(self._dir):
            self._check_writable()
            seq, active_end, active_first, _, next_lsn = self._writer.snapshot()
            # A rotation may append to it meanwhile, never remove.
            completed = self._completed_segments(seq, active_first, next_lsn)
            plan = _retention.plan(self._dir, completed, active_end, active_first, applied_up_to,
                                   self._config.max_retained_bytes)  # P14
            victims = plan.victims
            deleted = completed[:victims]
            if not victims:
                return 0
            wanted = victims
            floor = max(seg.last_lsn for seg in completed[:victims]) + 1
            no_space: Optional[OSError] = None
            try:
                with self._floor_guard():
                    # A failed update of the floor (by the preparer's thread, whose poisoning of
                    # the writer may not have landed yet): never rely on a floor on no disk.
                    floor_failed = self._floor_failed
                    if floor_failed is None:
                        _floor.advance(self._dir, floor, seq)
                if floor_failed is not None:
                    self._writer.poison_with(floor_failed)
                    raise self._refusal()
            except OSError as exc:
                if not _floor.no_space(exc):
                    self._writer.poison_with(exc)  # P2: a failed sync is never retried as if fine
                    raise
                no_space = exc
                if victims == len(completed):
                    # P1: the newest completed segment's last entry says where LSNs go on. Kept even
                    # when the active segment holds entries now: a rotation may have completed it
                    # since the snapshot, or a failed sync may still cut it back to empty.
                    victims -= 1
            try:
                for _ in range(victims):
                    _io.unlink(os.path.join(self._dir, completed[0].name))
                    del completed[0]
                    _io.sync_dir(self._dir)  # I14: a crash leaves a contiguous suffix
            except OSError as exc:
                # P2: a failed directory sync may have lost the unlink; never sync it again as if fine.
                self._writer.poison_with(exc)
                raise
            if no_space is not None and victims < wanted:
                raise OSError(
                    errno.ENOSPC,
                    f"{self._dir}: no space to record the LSN floor, which must be durable before "
                    f"{completed[0].name}, the last segment holding entries, is deleted (LSNs never "
                    f"restart); deleted {victims} of {wanted} segments: free some space and checkpoint again",
                    os.path.join(self._dir, _floor.FLOOR_NAME),
                ) from no_space
            plan.report(self._dir, deleted[:victims], self._config.max_retained_bytes)
            self._stats.checkpointed(deleted[:victims])
            return victims

    @_closes_when_done
    def _segments_now(self) -> tuple[list[SegmentInfo], int]:
        """Completed segments and the active one as of one instant (copies), and the next LSN."""
        with self._across_processes(self._mutex, WRITERS_LOCK_CHECKPOINT):  # no checkpoint deletes meanwhile
            self._check_open()
            seq, end, first_lsn, last_lsn, next_lsn = self._writer.snapshot()
            # A rotation after the snapshot may have listed the snapshot's segment already.
            segments = [SegmentInfo(s.seq, s.name, s.first_lsn, s.last_lsn, s.end)
                        for s in self._completed_segments(seq, first_lsn, next_lsn) if s.seq < seq]
        segments.append(SegmentInfo(seq, _segments.segment_name(seq), first_lsn, last_lsn, end))
        return segments, next_lsn

    def _completed_segments(self, active_seq: int, active_first: int, next_lsn: int) -> list[SegmentInfo]:
        # self._mutex held. This writer's list; a shared writer's comes from the directory.
        if self._shared_segments is None:
            return self._completed
        return self._shared_segments.list(active_seq, active_first, next_lsn)

    # ------------------------------------------------------------------ reading

    def iter(self, start: Optional[int] = None) -> Iterator[tuple[int, bytes]]:
        """Every entry from ``start`` (default: the oldest stored) to the current end.

        ``start`` older than ``first_lsn`` or beyond ``next_lsn`` raises
        LsnOutOfRangeError. Reads through descriptors of its own; if a
        checkpoint removes a segment it still needs, it raises
        LsnOutOfRangeError rather than skip an entry.
        """
        segments, next_lsn = self._segments_now()
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
        return self._writer.next_lsn

    @property
    def first_lsn(self) -> Optional[int]:
        """The oldest LSN still stored, None when no entry is stored."""
        return next((s.first_lsn for s in self._segments_now()[0] if s.first_lsn), None)

    @property
    def durable_lsn(self) -> int:
        """The highest LSN known durable (0 if none)."""
        self._check_open()
        return self._writer.durable_lsn

    @property
    def segment_count(self) -> int:
        """Completed segments plus the active one."""
        self._check_open()
        if self._attachment is not None:
            return len(self._segments_now()[0])
        return len(self._completed) + 1

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Sync what ``config.sync`` promises and release the lock; idempotent.

        In a process forked after open it only drops the handle: it never
        syncs, writes or unlocks, so the parent keeps its lock.

        From a signal handler: if the handler interrupted a call on this Wal
        in the same thread (a SIGTERM handler while the main thread is inside
        ``append``), that call holds locks close() needs and cannot go on
        until the handler returns. close() then does not wait: it returns at
        once and the interrupted call, when it returns or raises, closes the
        Wal (``closed`` is True from then on, and the next call raises
        WalClosedError). The interrupted call ends as it would have; with
        ``sync="always"`` an entry it acknowledges is durable. Otherwise, and
        from any other thread, close() is done when it returns.

        If a background sync (``sync="interval"``) failed and no call has
        raised that yet, close() releases everything and then raises it
        (WalError, caused by the OSError).
        """
        if self._inside_a_call():
            self._close_deferred = True
            return
        self._close()

    def _inside_a_call(self) -> bool:
        # True when this thread is inside a call on this Wal that holds or may take its locks:
        # close() was called from a signal handler that interrupted it, and waiting for those
        # locks would wait for itself forever. Read from the stack, so the calls pay nothing.
        frame: Optional[FrameType] = sys._getframe(1).f_back  # the caller of close(): None when called from C (atexit)
        while frame is not None:
            if frame.f_code in _CALLS and frame.f_locals.get("self") is self:
                return True
            frame = frame.f_back
        return False

    def _close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            in_owner = self._generation == _lock.fork_generation()
            self._closed = True  # every call from here on is refused as closed
            self._stop_interval.set()
            # Each step runs even if one before it raised: the lock must go.
            try:
                try:
                    # Waits out a rotation or sync; appends waiting for a group commit return durable
                    # (unless poisoned); trims the active segment's zeros; no write or sync after it.
                    # In a forked child it only closes this process's descriptor.
                    self._writer.close()
                finally:
                    if self._preparer is not None and in_owner:
                        self._preparer.stop()  # and its file goes: the next open prepares afresh
                        self._record_high_water(at_close=True)  # what its thread had not recorded yet
            finally:
                if self._attachment is not None:
                    _shared.detach(self._attachment)  # the last shared writer marks it closed
                else:
                    try:
                        # Marking "closed" before unlocking: readers then read every valid frame.
                        self._publisher.close(mark_closed=in_owner)
                    finally:
                        self._lock.release()
        thread = self._interval_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        unreported, self._unreported = self._unreported, None
        if unreported is not None:
            raise unreported

    def _background_failed(self, exc: OSError) -> None:
        # The sync thread's fdatasync failed: the writer is poisoned and what the sync did not
        # cover is cut (P2), but no caller waits on a background sync. Say so now, and make
        # the next call raise it.
        writer = self._writer
        seq, _, _, _, next_lsn = writer.snapshot()
        message = (
            f"{self._dir}: the background fdatasync (sync=\"interval\") of segment "
            f"{_segments.segment_name(seq)} failed: {exc}; the entries with LSNs "
            f"{writer.durable_lsn + 1}..{next_lsn - 1} were written but never made durable, so they "
            "were cut from the log, and a failed sync is never retried. This Wal accepts no more "
            "writes: close it and open the log again, then append those entries again"
        )
        error = WalError(message)
        error.__cause__ = exc
        self._unreported = error
        self._poison_reported = True  # this warning says it: the poisoning is not logged again
        _log.warning("%s", message)

    def __enter__(self) -> Wal:
        """Use it in ``with``: closed on exit. WalClosedError if it is closed already."""
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A handle dropped without close() still gives back its descriptors and lock, and
        # says so, as an unclosed file does. Not in a forked child: it never opened it.
        if getattr(self, "_closed", True):
            return
        try:
            if self._generation == _lock.fork_generation():
                warnings.warn(f"unclosed {self!r}: call close() or use it in a with block",
                              ResourceWarning, source=self)
        finally:
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"next_lsn={self._writer.next_lsn}"
        return f"<walogs.Wal {self._dir!r} {state} sync={self._config.sync!r}>"

    # ------------------------------------------------------------------ named cursors

    def drop_cursor(self, name: str) -> None:
        """Delete the named cursor (CursorLockedError while it has an owner, FileNotFoundError if none)."""
        self._check_open()
        _cursor.drop(self._dir, name)

    def stats(self) -> dict[str, object]:
        """What this writer did since it opened and where the log stands: a plain dict, cheap to build.

        ``entries``, ``bytes_written``, ``syncs``, ``fdatasync_seconds`` (total)
        and ``fdatasync_mean_seconds``, ``rotations``, ``checkpoints`` and
        ``segments_deleted`` since open; ``next_lsn``, ``durable_lsn``,
        ``first_lsn``, ``segments`` and ``bytes_on_disk`` now; ``cursors``:
        each named cursor's position, lag in entries and bytes, lost and
        owner.
        """
        segments, _ = self._segments_now()
        writer = self._writer
        snapshot = writer.snapshot()
        first = next((s.first_lsn for s in segments if s.first_lsn), None)
        return _stats.writer_stats(self._dir, self._stats, segments[:-1], snapshot, writer.syncs,
                                   writer.sync_seconds, writer.durable_lsn, first, writer.sync_latencies())


def _interval_sync(ref: weakref.ReferenceType[Wal], stop: threading.Event, interval: float) -> None:
    """Background fdatasync every ``interval`` seconds for ``sync="interval"``.

    A failed sync poisons the writer like any other; it is logged at once
    and the next call on the Wal (append, sync, close, ...) raises it.
    """
    while not stop.wait(interval):
        wal = ref()
        if wal is None:
            return
        try:
            if wal._writer.durable_lsn < wal._writer.next_lsn - 1:
                wal._writer.sync()  # not Wal.sync: a failure here is reported by _background_failed
        except OSError as exc:
            wal._background_failed(exc)
            return
        except WalError:
            return  # closed, or poisoned by a call that raised it to its caller
        finally:
            del wal


# The calls that hold or take a Wal's locks, as their frames show on the stack (Wal.close).
_CALLS = frozenset(
    getattr(method, "__wrapped__", method).__code__
    for method in (Wal.append, Wal.append_batch, Wal.sync, Wal.rotate, Wal.checkpoint,
                   Wal._segments_now, Wal._close)
)
