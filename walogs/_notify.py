"""How a follower sleeps until the log changes: inotify on the log directory, the one Linux-only call of readers.

A follower that has read everything visible sleeps in the kernel (``poll``
on an inotify descriptor watching the log directory) until the directory
changes: the writer's ``write(2)`` of frames (``IN_MODIFY`` of a segment),
a new segment (``IN_CREATE``), a writer opening or closing (its writes to
``VISIBLE``). An idle follower then costs nothing but a wake-up a second.

The writer publishes the visible end by a store into a shared mapping of
``VISIBLE`` after its fdatasync, and a store raises no inotify event, so
after publishing it rewrites VISIBLE's first byte, unchanged
(``Publisher.notify``): a ``write(2)``, an ``IN_MODIFY``. Between a write of
frames (an event) and its publication (after the sync), the follower sleeps
on the events too; it looks again after 2 ms, backing off to 50 ms, only for
a writer that publishes without that event (an older walogs), or one that
died between write and sync (its tail is "written, never published" for
ever).

Where inotify is missing (not Linux, no libc symbol, the per-user limit of
instances or watches reached), :func:`watch` returns None and followers
poll as they did before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import time
from typing import Optional

from walogs import _io, _visible
from walogs._format import FRAME_HEADER_SIZE, VISIBLE_NAME, VISIBLE_SIZE, segment_name

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE, _IN_MOVED_TO = 0x2, 0x4, 0x8, 0x80
_IN_CREATE, _IN_DELETE, _IN_DELETE_SELF, _IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
_MASK = (_IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
         | _IN_DELETE_SELF | _IN_MOVE_SELF)

WAKE_ANYWAY = 1.0
"""Longest sleep without an event: a follower looks again at least this often (a writer on another machine)."""
_PENDING_FIRST = 0.002  # a write awaits its sync: look again this soon even without an event
_PENDING_MAX = 0.05
_POLL_IDLE = 0.01


def _load() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load()
AVAILABLE = _libc is not None and os.environ.get("WALOGS_FOLLOW_POLL", "") in ("", "0")
"""Whether followers sleep on inotify; ``WALOGS_FOLLOW_POLL=1`` makes them poll (to compare, to test it)."""


def watch(directory: str) -> Optional[Waiter]:
    """A Waiter on log ``directory``, or None where inotify cannot be had (followers poll then)."""
    if _libc is None:
        return None
    fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None  # EMFILE: the per-user limit of inotify instances
    if _libc.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
        os.close(fd)
        return None  # ENOSPC: the per-user limit of watches
    return Waiter(directory, fd)


class Waiter:
    """One follower's sleep: until the log directory changes, or until a fresh write is published."""

    def __init__(self, directory: str, fd: int) -> None:
        self._dir = directory
        self._fd: Optional[int] = fd
        self._pid = os.getpid()
        self._visible = os.path.join(directory, VISIBLE_NAME)
        self._vfd: Optional[int] = None  # VISIBLE, kept open: a writer rewrites it in place, never replaces it

    def wait(self, seq: int, offset: int, timeout: Optional[float]) -> None:
        """Return when there may be more to read after byte ``offset`` of segment ``seq``, or after ``timeout`` s.

        That is: the published end moved past (seq, offset), or the
        directory changed while no writer publishes an end, or (None)
        ``WAKE_ANYWAY`` passed.
        """
        fd = self._descriptor()
        if fd is None:
            time.sleep(min(timeout if timeout is not None else WAKE_ANYWAY, _POLL_IDLE))
            return
        started = time.monotonic()
        limit = min(timeout, WAKE_ANYWAY) if timeout is not None else WAKE_ANYWAY
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        pending = _PENDING_FIRST
        while True:
            changed = self._drain(fd)
            raw = self._read_visible()
            end = _visible.decode(raw)
            if end is None or end.state != _visible.PUBLISHED:
                if changed:
                    return  # no writer publishes: every valid frame is readable, so look
            elif (end.seq, end.offset) > (seq, offset):
                return
            elif self._unpublished(end):
                # Written, not yet visible: the writer's fdatasync is under way, and its publication
                # raises an event (Publisher.notify). Sleep on the events, looking again now and then.
                waited = time.monotonic() - started
                if waited >= limit:
                    return
                poller.poll(min(pending, limit - waited) * 1000)
                pending = min(pending * 2, _PENDING_MAX)
                continue
            waited = time.monotonic() - started
            if waited >= limit:
                return
            poller.poll(max(limit - waited, 0.0) * 1000)  # asleep in the kernel until the directory changes

    def _read_visible(self) -> bytes:
        fd = self._vfd
        if fd is None:
            try:
                fd = self._vfd = _io.open_read(self._visible)
            except FileNotFoundError:
                return b""
        return os.pread(fd, VISIBLE_SIZE, 0)

    def _descriptor(self) -> Optional[int]:
        if self._pid != os.getpid():  # a forked child shares the parent's event queue: take its own
            fd, self._fd = self._fd, None
            if fd is not None:
                _io.close(fd)
            fresh = watch(self._dir)
            if fresh is not None:
                self._fd, fresh._fd = fresh._fd, None
            self._pid = os.getpid()
        return self._fd

    @staticmethod
    def _drain(fd: int) -> bool:
        """Read every queued event; True if there was any."""
        got = False
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return got
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not chunk:
                return got
            got = True

    def _unpublished(self, end: _visible.VisibleEnd) -> bool:
        """Whether the writer has written past its published end (a frame there, or in a newer segment).

        Judged by bytes, not sizes: a segment prepared with zeros is full size
        before anything is written into it.
        """
        return (self._written_at(segment_name(end.seq), end.offset)
                or self._written_at(segment_name(end.seq + 1), 0))

    def _written_at(self, name: str, offset: int) -> bool:
        """Whether segment ``name`` holds a frame header's worth of non-zero bytes at ``offset``."""
        try:
            fd = _io.open_read(os.path.join(self._dir, name))
        except FileNotFoundError:
            return False
        try:
            return any(os.pread(fd, FRAME_HEADER_SIZE, offset))
        finally:
            _io.close(fd)

    def close(self) -> None:
        """Close the inotify descriptor; idempotent."""
        for fd in (self._fd, self._vfd):
            if fd is not None:
                _io.close(fd)  # in a forked child too: its copy only
        self._fd = self._vfd = None
