"""Named consumers: a durable position in the log that one owner at a time commits, and that pins retention.

``WalReader.cursor(name)`` opens (or creates) a :class:`Cursor`; its file is
``cursors/<name>.cursor`` (``walogs._cursor_file``), its owner holds an OFD
lock on that file (``walogs._lock``), and checkpoints keep every entry it
has not committed unless ``max_retained_bytes`` says otherwise
(``walogs._retention``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Optional

from walogs import _cursor_file, _io, _lock, _retention
from walogs.errors import CursorLockedError, CursorLostError, LsnOutOfRangeError, WalClosedError, WalError

if TYPE_CHECKING:
    from walogs.reader import WalReader


class Cursor:
    """A named, durable position in a log, owned by one handle at a time across processes.

    Made by :meth:`WalReader.cursor`. ``position`` is the last committed LSN
    (0: none); :meth:`iter` and :meth:`follow` read the entries after it;
    :meth:`commit` moves it, durably. Closing releases ownership and never
    commits. Thread-safe.
    """

    def __init__(self, reader: WalReader, name: str, lock: _lock.FileLock, record: _cursor_file.Record) -> None:
        """Not for use: open a cursor with :meth:`WalReader.cursor`."""
        self._reader = reader
        self._name = name
        self._path = _cursor_file.path_of(reader.path, name)
        self._lock = lock
        self._record = record
        self._mutex = threading.Lock()
        self._seen = 0  # the highest LSN this cursor yielded: visible, so commit need not read the end again

    @property
    def name(self) -> str:
        """The cursor's name."""
        return self._name

    @property
    def position(self) -> int:
        """The last committed LSN (0: nothing committed)."""
        return self._record.position

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (or in a process forked after it was opened)."""
        return not self._lock.held

    @property
    def lag(self) -> int:
        """How many visible entries are after the position: ``durable_lsn - position``."""
        return self._reader.durable_lsn - self._record.position

    def _fd(self) -> int:
        if self._lock.forked:
            raise WalError(f"{self._path}: this Cursor was opened before a fork; a forked child "
                           f"must open cursor {self._name!r} itself (after the parent closed it)")
        fd = self._lock.fd
        if fd is None:
            raise WalClosedError(f"{self._path}: cursor {self._name!r} is closed; open it again with WalReader.cursor")
        return fd

    def commit(self, lsn: int) -> None:
        """Make ``lsn`` the position, durably (fdatasync'd before this returns).

        ValueError if ``lsn`` is below the position or beyond the visible
        end (``durable_lsn``). A crash at any instant leaves the old or the
        new position.
        """
        if isinstance(lsn, bool) or not isinstance(lsn, int):
            raise TypeError(f"lsn must be an int LSN, not {type(lsn).__name__}")
        with self._mutex:
            fd = self._fd()
            current = self._record
            if lsn < current.position:
                raise ValueError(f"cursor {self._name!r}: cannot commit LSN {lsn}, below its position "
                                 f"{current.position} (a cursor only moves forward)")
            if lsn > self._seen:
                # Without a live writer the visible end is found by reading the log: only when needed.
                self._seen = max(self._seen, self._reader.durable_lsn)
            end = self._seen
            if lsn > end:
                raise ValueError(f"cursor {self._name!r}: cannot commit LSN {lsn}, beyond the visible end "
                                 f"(LSN {end}): commit only entries the log has made durable")
            if lsn == current.position:
                return
            self._record = _cursor_file.write(fd, current, lsn)

    def iter(self) -> Iterator[tuple[int, bytes]]:
        """The entries after the position visible now, then stop (as :meth:`WalReader.iter`).

        CursorLostError if a checkpoint deleted entries the cursor had not
        committed (past ``max_retained_bytes``).
        """
        return self._entries(follow=False, timeout=None)

    def follow(self, *, timeout: Optional[float] = None) -> Iterator[tuple[int, bytes]]:
        """The entries after the position, then new ones as they become visible (as :meth:`WalReader.follow`).

        Ends after ``timeout`` seconds with nothing new (None: never). Does
        not commit: call :meth:`commit`. CursorLostError as for :meth:`iter`.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        return self._entries(follow=True, timeout=timeout)

    def _follow_from(self, start: int, timeout: Optional[float]) -> Iterator[tuple[int, bytes]]:
        """:meth:`follow` from ``start`` (after entries already yielded, not yet committed): for walogs.aio."""
        return self._entries(follow=True, timeout=timeout, start=max(start, self._record.position + 1))

    def _entries(self, follow: bool, timeout: Optional[float],
                 start: Optional[int] = None) -> Iterator[tuple[int, bytes]]:
        self._fd()
        if start is None:
            start = self._record.position + 1
        directory = self._reader.path
        oldest = _retention.oldest_lsn(directory)
        if _retention.is_lost(start - 1, oldest):
            raise CursorLostError(directory, self._name, start, oldest)
        try:
            inner = self._reader.follow(start, timeout=timeout) if follow else self._reader.iter(start)
        except LsnOutOfRangeError as exc:
            raise self._lost_or(exc, start) from exc
        return self._guarded(inner, start)

    def _guarded(self, inner: Iterator[tuple[int, bytes]], start: int) -> Iterator[tuple[int, bytes]]:
        expect = start
        try:
            for lsn, data in inner:
                expect = lsn + 1
                if lsn > self._seen:
                    self._seen = lsn
                yield lsn, data
        except LsnOutOfRangeError as exc:
            raise self._lost_or(exc, expect) from exc

    def _lost_or(self, exc: LsnOutOfRangeError, first_missing: int) -> LsnOutOfRangeError:
        # P5/P14: entries gone under a reader mean this cursor lost them; anything else is as it was.
        oldest = _retention.oldest_lsn(self._reader.path)
        if first_missing < oldest:
            return CursorLostError(self._reader.path, self._name, first_missing, oldest)
        return exc

    def close(self) -> None:
        """Release ownership (never commits); idempotent."""
        with self._mutex:
            self._lock.release()

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"position={self._record.position}"
        return f"<walogs.Cursor {self._name!r} {state}>"


def open_cursor(reader: WalReader, name: str, start: Optional[int], lock_timeout: Optional[float]) -> Cursor:
    """:meth:`WalReader.cursor`: take ownership of cursor ``name``, creating it if missing."""
    _cursor_file.check_name(name)
    if start is not None and (isinstance(start, bool) or not isinstance(start, int)):
        raise TypeError(f"start must be an int LSN or None, not {type(start).__name__}")
    if lock_timeout is not None and lock_timeout < 0:
        raise ValueError(f"lock_timeout must be >= 0 or None, not {lock_timeout!r}")
    directory = reader.path
    path = _cursor_file.path_of(directory, name)
    started = time.monotonic()
    pause = 0.0005
    while True:
        try:
            fd = _io.open_read_write(path)
        except FileNotFoundError:
            _create(reader, name, start)
            continue
        lock = None
        try:
            lock = _lock.FileLock.try_acquire(fd)
            if lock is None:
                waited = time.monotonic() - started
                if lock_timeout is not None and waited >= lock_timeout:
                    record = _cursor_file.read_fd(fd, path)
                    raise CursorLockedError(path, name, record.owner_pid, waited)
            elif _lock.same_file(fd, path):
                record = _cursor_file.read_fd(fd, path)
                _cursor_file.record_owner(fd)
                return Cursor(reader, name, lock, record)
        except BaseException:
            if lock is not None:
                lock.release()
            else:
                _io.close(fd)
            raise
        if lock is not None:
            lock.release()  # dropped since we opened it: open the current one
            continue
        _io.close(fd)
        if lock_timeout is not None:
            pause = min(pause, max(lock_timeout - (time.monotonic() - started), 0.0))
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def _create(reader: WalReader, name: str, start: Optional[int]) -> None:
    """Create cursor ``name`` where ``start`` says (default: before the oldest stored LSN), unless it exists."""
    directory = reader.path
    # Exclusive with checkpoints and other creators: a checkpoint either sees this cursor or
    # has finished deleting before its position is chosen (P14).
    with _retention.cursors_held(directory):
        oldest = _retention.oldest_lsn(directory)
        if start is None:
            position = oldest - 1
        else:
            end = reader.durable_lsn
            if not oldest - 1 <= start <= max(end, oldest - 1):
                raise LsnOutOfRangeError(
                    f"{directory}: cannot create cursor {name!r} at LSN {start}: a new cursor's position "
                    f"must be from {oldest - 1} (just before the oldest stored entry) to {end} (the visible end)"
                )
            position = start
        _cursor_file.create(directory, name, position)


def drop(directory: str, name: str) -> None:
    """Delete cursor ``name`` of log ``directory``: CursorLockedError while it has an owner.

    FileNotFoundError if there is no such cursor.
    """
    _cursor_file.check_name(name)
    path = _cursor_file.path_of(directory, name)
    try:
        fd = _io.open_read_write(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: log {directory} has no cursor {name!r}") from None
    lock = _lock.FileLock.try_acquire(fd)
    if lock is None:
        try:
            pid = _cursor_file.read_fd(fd, path).owner_pid
        finally:
            _io.close(fd)
        raise CursorLockedError(path, name, pid)
    try:
        if _lock.same_file(fd, path):
            _io.unlink(path)
            _io.sync_dir(_cursor_file.folder(directory))
    finally:
        lock.release()
