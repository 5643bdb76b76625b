"""Futex wait and wake on a word of a shared file mapping: the one place walogs calls futex(2).

Shared writers use it for the group-commit gather: a leader about to sync
sleeps on the count of appends written since the last sync until enough
processes have written (or a short deadline passes), and an appender that
reaches the count wakes it. Not ``FUTEX_PRIVATE_FLAG``: the word lives in
a ``MAP_SHARED`` file mapping, so processes meet on the page itself. Called
through ctypes, which releases the GIL; the compiled writer calls the
system call directly. Where there is no futex (not Linux), ``wait`` just
sleeps until the timeout, which only makes a gather last its whole
deadline.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import time

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "i686": 240, "armv7l": 240, "ppc64le": 221, "s390x": 238}.get(
    platform.machine())
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1
_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def address(mapping: mmap.mmap, offset: int) -> int:
    """The address of byte ``offset`` of a writable mapping (valid while it stays mapped)."""
    anchor = ctypes.c_char.from_buffer(mapping, offset)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor  # releases the buffer export, so the mapping can be closed later


def wait(addr: int, expected: int, timeout: float) -> None:
    """Sleep while the u32 at ``addr`` equals ``expected``, at most ``timeout`` seconds (or until woken)."""
    if timeout <= 0:
        return
    if _SYS_FUTEX is None or _libc is None:
        time.sleep(timeout)
        return
    ts = _Timespec(int(timeout), int((timeout % 1) * 1e9))
    _libc.syscall(ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(addr), ctypes.c_int(_FUTEX_WAIT),
                  ctypes.c_uint32(expected), ctypes.byref(ts), None, ctypes.c_int(0))
    # EAGAIN (the word changed), ETIMEDOUT, EINTR: the caller looks at the word and the clock again.


def wake(addr: int, count: int = 1) -> None:
    """Wake up to ``count`` processes sleeping in :func:`wait` on the u32 at ``addr``."""
    if _SYS_FUTEX is None or _libc is None:
        return
    _libc.syscall(ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(addr), ctypes.c_int(_FUTEX_WAKE),
                  ctypes.c_int(count), None, None, ctypes.c_int(0))


