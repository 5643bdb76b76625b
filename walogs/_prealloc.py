"""Segments written into, not grown: the next segment prepared ahead of rotation.

An append that extends its file makes the fdatasync after it also commit the
new file size (on ext4, through the journal); an append into space that
already holds real, synced zeros does not, and is cheaper (PostgreSQL's
``wal_init_zero``, etcd's file pipeline). So the host keeps the *next*
segment ready: a file named ``PREPARED_NAME`` (not a segment name, so every
segment scan ignores it), filled with real zeros by ``pwrite`` in chunks,
each chunk fdatasynced (a small flush at a time: a large one would hold up
the appends' own syncs in the journal), prepared by a background thread off
the append path. At rotation :meth:`Preparer.take` renames it into place when
it is ready and says False otherwise (the rotation then creates an empty
segment as before): a rotation never waits for zeroing.

Zeros do not pay everywhere: on copy-on-write filesystems (btrfs, ZFS,
bcachefs) a write into a zeroed block allocates a new one anyway, and on
tmpfs, ramfs and overlayfs there is no journal to spare (overlayfs: the
upper filesystem is unknown). :func:`pays_off` reads the filesystem's type
with ``statfs(2)`` (Linux only; ``os.statvfs`` does not return it), the one
Linux-only call here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import threading
from collections.abc import Callable
from typing import Optional

from walogs import _io
from walogs._format import PREPARED_NAME, PREPARED_ZERO_CHUNK
from walogs.config import PREALLOCATE_MAX

# statfs(2) f_type of filesystems where writing into zeros does not pay.
NO_GAIN = {
    0x9123683E: "btrfs",
    0x2FC12FC1: "zfs",
    0xCA451A4E: "bcachefs",
    0x01021994: "tmpfs",
    0x858458F6: "ramfs",
    0x794C7630: "overlayfs",
}
"""Filesystem magic numbers (``statfs`` ``f_type``) on which ``preallocate=None`` means off."""

BACKGROUND = True
"""Prepare in a background thread; the power-loss tests set it False to record every step in one order."""

_libc: Optional[ctypes.CDLL] = None


def filesystem_type(path: str) -> Optional[int]:
    """``statfs(2)``'s ``f_type`` for ``path``, or None where it cannot be asked (not Linux, no libc)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        # struct statfs starts with f_type (a C long on every Linux ABI); 256 bytes hold the rest.
        buf = ctypes.create_string_buffer(256)
        if _libc.statfs(os.fsencode(path), buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def pays_off(directory: str, preallocate: Optional[bool], sync: str = "always") -> bool:
    """Whether segments of ``directory`` are prepared with zeros: ``preallocate``, or if None by sync and filesystem.

    None means on only for ``sync="always"``: writing into zeros spares each
    fdatasync the file's growth, and under ``"interval"`` or ``"none"`` there
    is a sync per interval or none at all, so the zeros would only cost (under
    ``"none"``, 0.41x the bare write loop against 0.6x without them). Unknown
    filesystems (the type cannot be read) are left alone: off.
    """
    if preallocate is not None:
        return preallocate
    if sync != "always":
        return False
    kind = filesystem_type(directory)
    return kind is not None and kind not in NO_GAIN


def prepared_size(max_segment_size: Optional[int]) -> int:
    """Bytes of zeros a prepared segment holds: a whole segment, at most PREALLOCATE_MAX."""
    return min(max_segment_size or PREALLOCATE_MAX, PREALLOCATE_MAX)


def remove_leftover(directory: str) -> None:
    """Remove a prepared segment a writer left (killed, or before its open): its zeros may be unsynced."""
    try:
        _io.unlink(os.path.join(directory, PREPARED_NAME))
    except FileNotFoundError:
        pass


class Preparer:
    """Keeps ``PREPARED_NAME`` in ``directory`` filled with ``size`` synced zeros, in a background thread.

    ``background=False`` prepares inline, in :meth:`start` and
    :meth:`take` (for tests that need every system call in one order).
    """

    def __init__(self, directory: str, size: int, background: bool = True,
                 halted: Callable[[], bool] = lambda: False, chore: Callable[[], None] = lambda: None) -> None:
        """Remove a leftover prepared segment; :meth:`start` begins preparing the next one.

        ``halted()`` True (the writer is poisoned: after a failed sync
        nothing more is done on disk) stops preparing before the next
        system call. ``chore()`` is the host's work deferred off the
        rotation (the LSN_FLOOR update): run at every :meth:`start`, in the
        thread (inline with ``background=False``), before any zeroing; it
        handles its own errors.
        """
        self._dir = directory
        self._halted = halted
        self._path = os.path.join(directory, PREPARED_NAME)
        self._size = size
        self._background = background
        self._cond = threading.Condition()
        self._ready = False  # the file holds `size` synced zeros
        self._wanted = False  # the thread should prepare one
        self._stopped = False
        self._thread: Optional[threading.Thread] = None
        self._chore = chore
        remove_leftover(directory)

    @property
    def ready(self) -> bool:
        """True when a prepared segment waits to be taken."""
        return self._ready

    def start(self) -> None:
        """Run the host's chore, then begin preparing the next segment (both in the thread)."""
        with self._cond:
            self._wanted = True
            if self._background and self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name=f"walogs-prepare {self._dir}", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        if not self._background:
            self._chore()
            self._prepare_once()

    def in_thread(self) -> bool:
        """True when called from the preparing thread (then the caller holds none of the host's locks)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def take(self, dest: str) -> bool:
        """Rename the prepared segment to ``dest`` if one is ready (True); False at once if not.

        Syncing the directory is the caller's, and so is preparing the
        next one (:meth:`start`) once its rotation is done: zeroing it
        meanwhile would compete with the rotation's own syncs. When none is
        ready (still being zeroed, or zeroing failed) it asks for one. A
        file already at ``dest`` is never replaced (False: the caller
        decides about it). An OSError from the rename propagates.
        """
        with self._cond:
            if self._stopped:
                return False
            taken = self._ready and not os.path.lexists(dest)
            if taken:
                self._ready = False
                _io.rename(self._path, dest)
        if not taken:
            self.start()  # after a failure to prepare: try again
        return taken

    def stop(self, remove: bool = True) -> None:
        """Stop preparing (waits for the chunk in progress) and, if ``remove``, delete the prepared file."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if remove:
            try:
                remove_leftover(self._dir)
            except OSError:
                pass  # a stray file of zeros; the next open removes it

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._wanted or self._stopped):
                    self._cond.wait()
                if self._stopped:
                    return
                self._wanted = False  # a start() from here on wakes it again: no chore is missed
            self._chore()
            self._prepare_once()

    def _prepare_once(self) -> None:
        # Zeros written for real, chunk by chunk, each synced: only then is it ready.
        with self._cond:
            if self._ready or self._stopped:
                return
        if self._halted():
            return
        # An anonymous mapping reads as zeros without touching memory: no chunk of zeros is
        # held in the process (memory stays bounded, P9).
        area = mmap.mmap(-1, min(PREPARED_ZERO_CHUNK, self._size))
        zeros = memoryview(area)
        fd, offset = -1, 0
        try:
            fd = _io.open_or_create(self._path, os.O_WRONLY | os.O_TRUNC)
            while offset < self._size and not (self._stopped or self._halted()):
                with zeros[: min(len(zeros), self._size - offset)] as chunk:
                    _io.pwrite_all(fd, chunk, offset)
                    _io.fdatasync(fd)
                    offset += len(chunk)
        except OSError:
            # No space for zeros (or a failing disk): rotations create empty segments, and the
            # next take() tries again. The partial file goes.
            offset = -1
        finally:
            zeros.release()
            area.close()
            if fd >= 0:
                try:
                    _io.close(fd)
                except BaseException:
                    _io.close_strays(self._path)  # interrupted (Ctrl-C): closed, or about to be
                    raise
        if offset < 0:
            try:
                remove_leftover(self._dir)
            except OSError:
                pass
            return
        with self._cond:
            if not self._stopped and offset >= self._size:
                self._ready = True
