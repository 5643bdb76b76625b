"""The writer lock (one writer per directory) and fork detection: the Linux-specific parts in one place.

Why open-file-description (OFD) locks on ``<dir>/LOCK``:

* POSIX ``fcntl``/``lockf`` record locks belong to the *process*: a second
  ``Wal`` in the same process would not conflict, and closing *any*
  descriptor of the file (a reader, a ``verify`` in the same process)
  silently drops the lock. Both break the one-writer rule.
* OFD locks (``F_OFD_SETLK``) and ``flock`` belong to the open file: a
  second open in the same process conflicts, unrelated descriptors do not
  matter, and the kernel drops the lock when the last descriptor of that
  open file goes away, including when the writer is SIGKILLed. There is
  no stale-lock cleanup by pid guessing.
* OFD locks can be *queried* without being taken (``F_OFD_GETLK``), so
  ``walogs info`` and readers can tell whether a writer is live without
  ever making a writer's open fail at that instant.

We also take ``flock`` on the same descriptor, so that a writer built on
``flock`` (common in Rust and Go WAL crates) and ours exclude each other.

Both kinds are inherited across ``fork``: a child must never unlock
(that would drop the parent's lock); it only closes its copy of the
descriptor, which leaves the parent's lock in place. It closes it at once,
in the at-fork hook: a copy kept open (say by a worker from a plain
``os.fork()`` that never touches the log) would keep the lock alive after
the writer died, and the lock must die with the writer.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import time
import weakref
from typing import Any

from walogs import _io
from walogs._format import LOCK_NAME
from walogs.errors import WalLockedError


# struct flock on Linux: short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid, padded to 32 bytes.
_FLOCK = struct.Struct("@hhqqi4x")
_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_F_OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", 38)
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)

_fork_generation = 0
_fork_watchers: weakref.WeakSet[Any] = weakref.WeakSet()
_held_locks: weakref.WeakSet[WriterLock] = weakref.WeakSet()
_held_ranges: weakref.WeakSet[RangeLocks] = weakref.WeakSet()
_held_file_locks: weakref.WeakSet[FileLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1
    for lock in list(_held_locks):
        lock._drop_in_child()
    for ranges in list(_held_ranges):
        ranges._drop_in_child()
    for file_lock in list(_held_file_locks):
        file_lock._drop_in_child()
    for watcher in list(_fork_watchers):
        watcher._in_forked_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _unlock_and_close(fd: int, generation: int) -> None:
    """Release both locks a holder took on ``fd`` and close it; in a child forked since, only close it.

    Unlocked explicitly: a forked child may still hold a copy of ``fd``, and
    the locks belong to the open file until its last copy closes.
    """
    try:
        if generation == _fork_generation:
            fcntl.flock(fd, fcntl.LOCK_UN)
            _ofd(fd, _F_OFD_SETLK, fcntl.F_UNLCK)
    finally:
        _io.close(fd)


def _close_in_child(fd: int) -> None:
    """In a forked child: close the inherited copy of a lock's descriptor, never unlocking it."""
    try:
        os.close(fd)
    except OSError:
        pass


def fork_generation() -> int:
    """A number that changes in every child forked after it was read (a writer handle is unusable there)."""
    return _fork_generation


def watch_forks(watcher: Any) -> None:
    """Call ``watcher._in_forked_child()`` in every child forked while it lives.

    Held weakly. Lets a hot path test one flag instead of calling
    :func:`fork_generation` on every call.
    """
    _fork_watchers.add(watcher)


def _ofd(fd: int, command: int, lock_type: int, start: int = 0, length: int = 0) -> bytes:
    return fcntl.fcntl(fd, command, _FLOCK.pack(lock_type, os.SEEK_SET, start, length, 0))


def _try_lock(fd: int, shared: bool = False) -> bool:
    # Exclusive: a write lock and LOCK_EX. Shared writers: a read lock and LOCK_SH each, so
    # any number of them coexist and an exclusive writer (ours, or a flock-based one) and
    # they exclude each other.
    try:
        _ofd(fd, _F_OFD_SETLK, fcntl.F_RDLCK if shared else fcntl.F_WRLCK)
    except OSError as exc:
        if exc.errno in _BUSY:
            return False
        raise
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        _ofd(fd, _F_OFD_SETLK, fcntl.F_UNLCK)
        if exc.errno in _BUSY:
            return False
        raise
    return True


def recorded_pid(directory: str) -> int | None:
    """The pid the last writer wrote into LOCK, if any (may be stale)."""
    try:
        with open(os.path.join(directory, LOCK_NAME), "rb") as f:
            text = f.read(32).strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


class WriterLock:
    """An exclusive hold on ``<directory>/LOCK`` for a writer's lifetime: one writer per directory."""

    def __init__(self, directory: str, fd: int, created: bool = False) -> None:
        self.directory = directory
        self._fd: int | None = fd
        self._generation = _fork_generation
        self._mutex = threading.Lock()
        self.created = created
        """True if this acquire created the LOCK file (a new log: see :meth:`discard`)."""
        _held_locks.add(self)

    @classmethod
    def acquire(cls, directory: str, timeout: float | None = 0.0, shared: bool = False) -> WriterLock:
        """Take the lock, waiting up to ``timeout`` seconds (None: forever).

        ``shared``: the hold of one shared writer, which any number of them
        may have at once, and which excludes an exclusive writer (and is
        excluded by one). Raises WalLockedError naming the directory and
        the recorded holder.
        The LOCK file of a log is created once and never replaced; only an
        open that created a new log and then failed removes it again
        (:meth:`discard`), so a lock taken on a LOCK file that is no longer
        the directory's is given up and taken again on the current one.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"lock_timeout must be >= 0 or None, not {timeout!r}")
        path = os.path.join(directory, LOCK_NAME)
        started = time.monotonic()
        pause = 0.0005
        while True:
            fd, created = _open_lock_file(path)
            try:
                while not _try_lock(fd, shared):
                    waited = time.monotonic() - started
                    if timeout is not None and waited >= timeout:
                        raise WalLockedError(directory, recorded_pid(directory), waited, shared,
                                             held_shared=_held_by_shared_writers(fd))
                    if timeout is not None:
                        pause = min(pause, max(timeout - waited, 0.0))
                    time.sleep(pause)
                    pause = min(pause * 2, 0.02)
                if _is_current(fd, path):
                    return cls(directory, fd, created)
            except BaseException:
                _io.close(fd)
                raise
            _io.close(fd)  # locked a LOCK file that a failed creation removed: take the new one

    def record_owner(self) -> None:
        """Write our pid into LOCK, for WalLockedError and ``walogs info`` (informational only).

        Called once the open has succeeded, and only if the file says
        something else, so a failed open leaves every file untouched.
        """
        fd = self._fd
        if fd is None:
            return
        text = b"%d\n" % os.getpid()
        try:
            if os.pread(fd, 64, 0) != text:
                os.ftruncate(fd, 0)
                os.pwrite(fd, text, 0)
        except OSError:
            pass  # the pid is a courtesy; the lock itself is what counts

    @property
    def held(self) -> bool:
        """True while this process (not a forked child) holds the lock."""
        return self._fd is not None and self._generation == _fork_generation

    def release(self) -> None:
        """Release the lock; in a forked child only drop the descriptor (the parent keeps its lock)."""
        with self._mutex:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            _unlock_and_close(fd, self._generation)

    def discard(self) -> None:
        """Remove the LOCK file this acquire created, then release: a failed new log leaves nothing.

        Only for a log that never existed: a writer waiting on the removed
        file finds it is no longer the directory's and takes the new one
        (:meth:`acquire`), so two writers never hold "the" lock.
        """
        if self.created and self.held:
            try:
                _io.unlink(os.path.join(self.directory, LOCK_NAME))
            except FileNotFoundError:
                pass
        self.release()

    def _drop_in_child(self) -> None:
        # At fork, in the child: close the inherited copy without unlocking (the parent
        # still holds the lock through its own), so the lock dies with the parent (I6).
        fd, self._fd = self._fd, None
        self._mutex = threading.Lock()  # a parent thread may have held it at the fork
        if fd is not None:
            _close_in_child(fd)


def _held_by_shared_writers(fd: int) -> bool:
    """True if the lock that conflicts on LOCK is a shared writer's read lock."""
    try:
        answer = _ofd(fd, _F_OFD_GETLK, fcntl.F_WRLCK)
    except OSError:
        return False
    return bool(_FLOCK.unpack(answer[: _FLOCK.size])[0] == fcntl.F_RDLCK)


def _open_lock_file(path: str) -> tuple[int, bool]:
    """A descriptor of LOCK, and whether this call created the file."""
    try:
        return _io.open_or_create(path, os.O_RDWR | os.O_EXCL), True
    except FileExistsError:
        return _io.open_or_create(path), False


def _is_current(fd: int, path: str) -> bool:
    """True if ``fd`` is the file now at ``path`` (not one a failed creation removed)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def writer_is_live(directory: str) -> tuple[bool, int | None]:
    """Whether some process holds the writer lock, and its recorded pid (None for shared writers).

    Asks the kernel with F_OFD_GETLK on a read-only descriptor: this never
    takes the lock, so a writer opening at the same instant cannot fail
    because of it. A directory without a LOCK file has no writer.
    """
    try:
        fd = _io.open_read(os.path.join(directory, LOCK_NAME))
    except FileNotFoundError:
        return False, None
    try:
        # GETLK asks "could I place this lock?"; a write lock conflicts with the exclusive
        # writer's write lock and with the read locks of shared writers.
        answer = _ofd(fd, _F_OFD_GETLK, fcntl.F_WRLCK)
        st = os.fstat(fd)
    finally:
        _io.close(fd)
    lock_type = _FLOCK.unpack(answer[: _FLOCK.size])[0]
    if lock_type == fcntl.F_RDLCK:
        return True, None  # shared writers: LOCK holds no pid of theirs
    if lock_type != fcntl.F_UNLCK:
        return True, recorded_pid(directory)
    # A writer that takes only flock(2) (another implementation) is invisible to GETLK.
    flock_pid = _flock_holder(st.st_dev, st.st_ino)
    if flock_pid is not None:
        return True, flock_pid
    return False, None


def shared_writers_attached(directory: str) -> bool:
    """True while shared writers hold the log (their read locks on LOCK), asked without taking anything."""
    try:
        fd = _io.open_read(os.path.join(directory, LOCK_NAME))
    except FileNotFoundError:
        return False
    try:
        return _held_by_shared_writers(fd)
    finally:
        _io.close(fd)


def is_locked(fd: int) -> bool:
    """Whether some open file holds an OFD or flock lock on the file of ``fd``, asked without taking it.

    On LOCK: :func:`writer_is_live` without the pid, in one lock query (and
    /proc/locks only when no OFD lock is held, for a writer that takes only
    flock). Asked with a write lock, which conflicts with an exclusive
    writer's lock and with shared writers' read locks alike.
    """
    answer = _ofd(fd, _F_OFD_GETLK, fcntl.F_WRLCK)
    if _FLOCK.unpack(answer[: _FLOCK.size])[0] != fcntl.F_UNLCK:
        return True
    st = os.fstat(fd)
    return _flock_holder(st.st_dev, st.st_ino) is not None


def _flock_holder(device: int, inode: int) -> int | None:
    """The pid holding a flock on (device, inode), from /proc/locks; None if none."""
    wanted = f"{os.major(device):02x}:{os.minor(device):02x}:{inode}"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF" ("->" marks a blocked waiter)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return int(fields[4])
    return None


class RangeLocks:
    """OFD byte-range locks on one open file: the shared writers' locks on ``WRITERS``.

    Each lock is one byte at an offset from ``walogs._format``. The kernel
    releases all of them when the holder dies (the last descriptor of the
    open file goes away), so a SIGKILLed holder never blocks the others;
    waiters sleep in the kernel (``F_OFD_SETLKW``), they do not poll. Locks
    of one open file never conflict with each other: threads of one process
    share it, and serialize among themselves first. In a forked child the
    descriptor is closed at once, without unlocking (the parent still holds
    its locks through its own copy).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        """The open file's descriptor (-1 once closed, or in a forked child)."""
        _held_ranges.add(self)

    def lock(self, offset: int) -> None:
        """Take the write lock on byte ``offset``, sleeping until it is free."""
        _ofd(self.fd, _F_OFD_SETLKW, fcntl.F_WRLCK, offset, 1)

    def try_lock(self, offset: int, lock_type: int = fcntl.F_WRLCK) -> bool:
        """Take a lock on byte ``offset`` if no other open file holds a conflicting one."""
        try:
            _ofd(self.fd, _F_OFD_SETLK, lock_type, offset, 1)
        except OSError as exc:
            if exc.errno in _BUSY:
                return False
            raise
        return True

    def share(self, offset: int) -> None:
        """Hold a read lock on byte ``offset`` (replacing a write lock this file holds there)."""
        _ofd(self.fd, _F_OFD_SETLKW, fcntl.F_RDLCK, offset, 1)

    def unlock(self, offset: int) -> None:
        """Release what this file holds on byte ``offset``."""
        _ofd(self.fd, _F_OFD_SETLK, fcntl.F_UNLCK, offset, 1)

    def close(self) -> None:
        """Close the descriptor, which releases every lock it holds."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            _io.close(fd)

    def _drop_in_child(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            _close_in_child(fd)


class FileLock:
    """An exclusive OFD lock (and flock) on one open file, for as long as this object holds it.

    For a named cursor's file: one owner across processes and within one,
    released by the kernel when the owner dies. The descriptor is the
    caller's way to write the file; a forked child drops its copy without
    unlocking (the parent keeps ownership), as with the writer lock.
    """

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        self._generation = _fork_generation
        _held_file_locks.add(self)

    @classmethod
    def try_acquire(cls, fd: int) -> FileLock | None:
        """Lock ``fd`` now, or None if another open file holds it (the caller keeps ``fd`` either way)."""
        return cls(fd) if _try_lock(fd) else None

    @property
    def held(self) -> bool:
        """True while this process (not a forked child) holds the lock."""
        return self.fd is not None and self._generation == _fork_generation

    @property
    def forked(self) -> bool:
        """True in a child forked after the lock was taken: the child never holds it."""
        return self._generation != _fork_generation

    def release(self) -> None:
        """Unlock and close the descriptor; in a forked child only close it."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        _unlock_and_close(fd, self._generation)

    def _drop_in_child(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            _close_in_child(fd)


def file_is_locked(path: str) -> bool:
    """Whether some open file holds an OFD or flock lock on ``path``, asked without taking it."""
    try:
        fd = _io.open_read(path)
    except FileNotFoundError:
        return False
    try:
        return is_locked(fd)
    finally:
        _io.close(fd)


def same_file(fd: int, path: str) -> bool:
    """True if ``fd`` is the file now at ``path`` (not one removed or replaced since it was opened)."""
    return _is_current(fd, path)
