"""Shared writers' host side: attaching to a log's ``WRITERS`` state, detaching, listing segments.

docs/shared-writers.md is the design. The first process to attach (no
other holds the ATTACHED read lock) runs recovery like an exclusive open
and writes the state from what it found; later ones check their config
against it and attach without scanning a segment. The writer algorithm
itself is in ``_shared_writer_py`` / ``_shared_writer.pyx``.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Optional

from walogs import _io, _recovery, _segments, _visible
from walogs._format import (
    WRITERS_CURRENT,
    WRITERS_DURABLE,
    WRITERS_FILE_SIZE,
    WRITERS_HEADER,
    WRITERS_LOCK_ATTACHED,
    WRITERS_LOCK_INIT,
    WRITERS_MAGIC,
    WRITERS_NAME,
    WRITERS_SLOT,
    WRITERS_SLOTS,
    WRITERS_TORN,
)
from walogs._lock import RangeLocks, WriterLock
from walogs._recovery import SegmentInfo
from walogs.config import SYNC_MODES, WalConfig
from walogs.errors import WalError

_NO_TORN = (1 << 64) - 1


@dataclass
class Attachment:
    """What one process holds while it is attached as a shared writer."""

    lock: WriterLock
    """Its shared hold on LOCK (excludes exclusive writers)."""
    locks: RangeLocks
    """Its open file of WRITERS, carrying the byte-range locks."""
    state: mmap.mmap
    """WRITERS, mapped."""
    publisher: _visible.Publisher
    torn_at: Optional[int]
    """Where the first opener's recovery cut a torn tail (None: clean)."""


def attach(directory: str, config: WalConfig, lock_timeout: Optional[float]) -> Attachment:
    """Attach this process to ``directory``'s shared writers; the first one recovers the log.

    Raises WalLockedError while an exclusive writer holds the log, and
    ValueError when ``config`` differs from the one the attached writers use.
    """
    lock = WriterLock.acquire(directory, lock_timeout, shared=True)
    try:
        locks = RangeLocks(_io.open_or_create(os.path.join(directory, WRITERS_NAME)))
        try:
            locks.lock(WRITERS_LOCK_INIT)
            try:
                if locks.try_lock(WRITERS_LOCK_ATTACHED):  # no other process is attached: we are first
                    state, publisher, torn = _start(directory, config, locks.fd)
                else:
                    state = _map(directory)
                    try:
                        torn = _check_config(directory, state, config)
                        publisher = _visible.Publisher(directory, attach=True)
                    except BaseException:
                        state.close()
                        raise
                locks.share(WRITERS_LOCK_ATTACHED)
            finally:
                locks.unlock(WRITERS_LOCK_INIT)
        except BaseException:
            locks.close()
            raise
    except BaseException:
        lock.release()
        raise
    return Attachment(lock, locks, state, publisher, torn)


def _start(directory: str, config: WalConfig, fd: int) -> tuple[mmap.mmap, _visible.Publisher, Optional[int]]:
    # The first shared writer: recover the log as an exclusive open would, then write the state.
    _visible.mark_recovering(directory)
    layout, segment_fd = _recovery.recover(directory, keep_zeros=False)  # shared writers append, never write into zeros
    _io.close(segment_fd)  # each writer opens the active segment itself
    active = layout.segments[-1]
    written = layout.next_lsn - 1
    page = bytearray(WRITERS_FILE_SIZE)
    WRITERS_HEADER.pack_into(page, 0, WRITERS_MAGIC, SYNC_MODES.index(config.sync), 0, config.max_segment_size or 0)
    page[WRITERS_DURABLE:WRITERS_DURABLE + 8] = written.to_bytes(8, "little")
    torn = layout.torn_at
    page[WRITERS_TORN:WRITERS_TORN + 8] = (_NO_TORN if torn is None else torn).to_bytes(8, "little")
    WRITERS_SLOT.pack_into(page, WRITERS_SLOTS[0], active.seq, active.end, active.first_lsn, active.last_lsn,
                           written, written, active.seq, active.end)
    # Written for real before it is mapped (a full disk is ENOSPC here, not SIGBUS later). Never
    # synced: it means nothing once every writer is gone, and the next first opener rewrites it.
    _io.pwrite_all(fd, bytes(page), 0)
    state = _map(directory)
    try:
        publisher = _visible.Publisher(directory)
        publisher.publish(_visible.PUBLISHED, active.seq, written, active.end)  # P11: recovery synced it
    except BaseException:
        state.close()
        raise
    return state, publisher, torn


def _map(directory: str) -> mmap.mmap:
    """WRITERS mapped through an open file of its own.

    Python's mmap keeps a duplicate of the descriptor it was given, which
    keeps that open file alive: mapped through the lock-carrying one, its
    byte-range locks would outlive ``RangeLocks.close`` for as long as the
    mapping lives.
    """
    fd = _io.open_or_create(os.path.join(directory, WRITERS_NAME))
    try:
        return mmap.mmap(fd, WRITERS_FILE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        _io.close(fd)


def _check_config(directory: str, state: mmap.mmap, config: WalConfig) -> Optional[int]:
    # A later writer: the log's config is the first one's while any is attached.
    magic, mode, _, limit = WRITERS_HEADER.unpack_from(state, 0)
    if magic != WRITERS_MAGIC:
        raise WalError(f"{os.path.join(directory, WRITERS_NAME)}: not a walogs shared-writer state file "
                       "although shared writers are attached: close every writer of this log and open it again")
    theirs = WalConfig(max_segment_size=limit or None, sync=SYNC_MODES[mode])
    for name in ("sync", "max_segment_size"):
        mine, used = getattr(config, name), getattr(theirs, name)
        if mine != used:
            raise ValueError(
                f"{directory}: the shared writers attached to this log use {name}={used!r}, and this "
                f"open asks for {name}={mine!r}; every shared writer of a log uses the config of the "
                f"first one while any is attached: open with {name}={used!r}"
            )
    torn = int.from_bytes(state[WRITERS_TORN:WRITERS_TORN + 8], "little")
    return None if torn == _NO_TORN else torn


def detach(attachment: Attachment) -> None:
    """Leave the shared writers; the last one to leave marks the visible end closed (readers read all)."""
    locks = attachment.locks
    try:
        if locks.fd >= 0:
            locks.lock(WRITERS_LOCK_INIT)
            try:
                last = locks.try_lock(WRITERS_LOCK_ATTACHED)
                try:
                    attachment.publisher.close(mark_closed=last)
                except BufferError:
                    pass  # a half-built writer still views it (a failed open): unmapped when it is collected
            finally:
                locks.unlock(WRITERS_LOCK_ATTACHED)
                locks.unlock(WRITERS_LOCK_INIT)
        else:  # a forked child: the parent's writers go on
            try:
                attachment.publisher.close(mark_closed=False)
            except BufferError:
                pass
    finally:
        try:
            locks.close()  # releases INIT and ATTACHED
            try:
                attachment.state.close()
            except BufferError:
                pass  # the closed writer still views it (late waiters may read it): unmapped with the writer
        finally:
            attachment.lock.release()


def current_slot(state: mmap.mmap) -> tuple[int, ...]:
    """The state slot in force (read under APPEND for a consistent one)."""
    return WRITERS_SLOT.unpack_from(state, WRITERS_SLOTS[int.from_bytes(state[WRITERS_CURRENT:WRITERS_CURRENT + 4], "little")])


class CompletedSegments:
    """The completed segments of a shared log, listed from the directory (other processes rotate).

    A completed segment never changes, so its first LSN and size are read
    once (one ``pread`` of its first frame header) and kept.
    """

    def __init__(self, directory: str) -> None:
        self._dir = directory
        self._known: dict[int, tuple[str, int, int]] = {}  # seq -> (name, first_lsn, size)

    def list(self, active_seq: int, active_first: int, next_lsn: int) -> list[SegmentInfo]:
        """Segments older than ``active_seq``, oldest first, from one listing of the directory."""
        files, _ = _segments.segment_files(self._dir)
        found: list[tuple[int, str, int, int]] = []
        for seq in sorted(s for s in files if s < active_seq):
            known = self._known.get(seq)
            if known is None:
                path = os.path.join(self._dir, files[seq])
                try:
                    size = os.stat(path).st_size
                    first = _segments.peek_lsn(path) or 0 if size else 0
                except FileNotFoundError:
                    continue  # a checkpoint is deleting it
                known = self._known[seq] = (files[seq], first, size)
            found.append((seq, *known))
        for seq in [s for s in self._known if s not in files]:
            del self._known[seq]
        infos: list[SegmentInfo] = []
        following = active_first or next_lsn
        for seq, name, first, size in reversed(found):
            infos.append(SegmentInfo(seq, name, first, following - 1 if first else 0, size))
            if first:
                following = first
        infos.reverse()
        return infos
