"""Every system call walogs makes on the log directory, in one small module.

The writer, the readers and recovery reach the disk through the functions
here, looked up as ``_io.name`` at call time, so a test can wrap any of them
to record or fail calls (crash images, injected EIO) while the rest stays
real. One exception, by design: the compiled writer (``_writer.pyx``) calls
``pwrite``, ``fdatasync`` and ``ftruncate`` from C without the GIL, except
while a test has wrapped ``pwrite_all``, ``fdatasync`` or ``ftruncate``
here, when it calls those functions instead. The compiled codec does no
I/O at all.

Linux-first: fdatasync falls back to fsync where the platform lacks it, and
``close_strays`` (which reads ``/proc/self/fd``) does nothing elsewhere.
"""

from __future__ import annotations

import fcntl
import os

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_fdatasync = getattr(os, "fdatasync", os.fsync)


def open_read(path: str) -> int:
    """Open ``path`` read-only; the descriptor is not inherited across exec."""
    return os.open(path, os.O_RDONLY | _O_CLOEXEC)


def open_write(path: str) -> int:
    """Open an existing file for writing (positional writes, no O_APPEND)."""
    return os.open(path, os.O_WRONLY | _O_CLOEXEC)


def open_read_write(path: str) -> int:
    """Open an existing file for reading and writing (a cursor's owner)."""
    return os.open(path, os.O_RDWR | _O_CLOEXEC)


def create_new(path: str) -> int:
    """Create ``path`` for writing; FileExistsError if it is already there."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)


def open_or_create(path: str, flags: int = os.O_RDWR) -> int:
    """Open ``path`` with ``flags``, creating it (mode 0644) if missing."""
    return os.open(path, flags | os.O_CREAT | _O_CLOEXEC, 0o644)


def close(fd: int) -> None:
    """Close a descriptor."""
    os.close(fd)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``, continuing after short writes.

    A short write followed by an error (EFBIG, ENOSPC, EIO) raises that
    error; the caller must treat the bytes as possibly half on disk.
    """
    written = os.pwrite(fd, data, offset)
    if written == len(data):
        return
    view = memoryview(data)[written:]
    offset += written
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def pread_into(fd: int, buf: bytearray | memoryview, offset: int) -> int:
    """Fill ``buf`` from ``offset``; returns the bytes read (fewer only at end of file)."""
    view = memoryview(buf)
    total = 0
    while total < len(view):
        got = os.preadv(fd, [view[total:]], offset + total)
        if got == 0:
            break
        total += got
    return total


def read_at(path: str, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes of the file ``path`` from ``offset`` (fewer at its end): open, pread, close."""
    fd = open_read(path)
    try:
        return os.pread(fd, size, offset)
    finally:
        close(fd)


def fdatasync(fd: int) -> None:
    """Flush a file's data (and the metadata needed to read it) to stable storage."""
    _fdatasync(fd)


def fsync(fd: int) -> None:
    """Flush a file's data and all its metadata to stable storage."""
    os.fsync(fd)


def ftruncate(fd: int, length: int) -> None:
    """Cut a file to ``length`` bytes."""
    os.ftruncate(fd, length)


def file_size(fd: int) -> int:
    """The current size of an open file."""
    return os.fstat(fd).st_size


def rename(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` (atomic within one filesystem)."""
    os.rename(src, dst)


def unlink(path: str) -> None:
    """Remove a file."""
    os.unlink(path)


def unlink_if_empty(path: str) -> bool:
    """Remove ``path`` if it is an empty file; False, doing nothing, if it is not (or is missing)."""
    try:
        if os.stat(path).st_size != 0:
            return False
    except FileNotFoundError:
        return False
    unlink(path)
    return True


def close_strays(path: str) -> None:
    """Close every descriptor this process holds open for writing on the file ``path``.

    For a descriptor whose number was lost: an exception (Ctrl-C's
    KeyboardInterrupt) raised as ``open(2)`` returns, before the caller stored
    the number, leaves it open with no owner. Call it only for a file that no
    live code writes through. Reads ``/proc/self/fd``, so Linux only;
    elsewhere it does nothing and such a descriptor stays open.
    """
    try:
        target = os.stat(path)
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (target.st_dev, target.st_ino):
                continue
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
                continue  # a reader's
            os.close(fd)
        except OSError:
            continue  # listdir's own descriptor, closed since


def mkdir(path: str) -> None:
    """Create one directory."""
    os.mkdir(path, 0o755)


def listdir(path: str) -> list[str]:
    """Names in a directory."""
    return os.listdir(path)


def sync_dir(path: str) -> None:
    """Make the directory's entries (creates, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
