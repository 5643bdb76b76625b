"""asyncio: the blocking API run where it cannot block the event loop.

Writes (``append``, ``append_batch``, ``sync``, ``rotate``, ``checkpoint``,
``close``) run in worker threads; the compiled writer releases the GIL
while it writes and syncs, and concurrent appends share fdatasync calls
(group commit) as threads do. ``follow`` runs the blocking follower in a
thread that wakes at least every ``_SLICE`` seconds, so an abandoned
``async for`` frees its thread soon after. Same semantics as the blocking
API; a cancelled ``await append`` may still have been acknowledged (the
thread finishes the append): the LSN it lost to the caller is logged at
debug level on the ``walogs`` logger, and the entry stays in the log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from typing import Any, Optional, TypeVar

from walogs import reader as _reader
from walogs import wal as _wal
from walogs._types import Buffer, PathLike
from walogs.config import WalConfig
from walogs.cursor import Cursor as _Cursor

_log = logging.getLogger("walogs")
_T = TypeVar("_T")
_SLICE = 0.5  # a follower thread returns to see whether anyone still waits at least this often
_END = object()
# Appends wait in fdatasync; they need threads of their own to share one (the loop's default
# executor has only a few on a small machine).
_executor = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="walogs-aio")


async def _run(fn: Callable[..., _T], *args: Any) -> _T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, functools.partial(fn, *args))


class AsyncWal:
    """An open writer for asyncio: :func:`open` makes one; every method is awaited and never blocks the loop."""

    def __init__(self, wal: _wal.Wal) -> None:
        """Not for use: open a log with ``await walogs.aio.open(...)`` or ``async with walogs.aio.open(...)``."""
        self.wal = wal
        """The blocking :class:`walogs.Wal` underneath (its properties are cheap to read from the loop)."""

    async def append(self, data: Buffer) -> int:
        """Append one entry; its LSN, once durable as the sync mode promises.

        If the await is cancelled the append still completes in its thread
        and may be acknowledged: the entry stays in the log, and its LSN is
        logged at debug level (at-least-once).
        """
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(_executor, self.wal.append, data)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(functools.partial(_lost_to_caller, self.wal.path))
            raise

    async def append_batch(self, items: Iterable[Buffer]) -> range:
        """Append many entries with one write (and one sync); the range of their LSNs."""
        batch = list(items) if not isinstance(items, (bytes, bytearray, memoryview)) else items
        return await _run(self.wal.append_batch, batch)

    async def sync(self) -> None:
        """Make every written entry durable now."""
        await _run(self.wal.sync)

    async def rotate(self) -> None:
        """Finish the active segment and start a new one."""
        await _run(self.wal.rotate)

    async def checkpoint(self, applied_up_to: Optional[int] = None) -> int:
        """As :meth:`walogs.Wal.checkpoint`."""
        return await _run(self.wal.checkpoint, applied_up_to)

    async def drop_cursor(self, name: str) -> None:
        """As :meth:`walogs.Wal.drop_cursor`."""
        await _run(self.wal.drop_cursor, name)

    def stats(self) -> dict[str, object]:
        """As :meth:`walogs.Wal.stats` (no sync, no wait: called on the loop)."""
        return self.wal.stats()

    async def close(self) -> None:
        """Sync what the sync mode promises and release the lock."""
        await _run(self.wal.close)

    async def __aenter__(self) -> AsyncWal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _lost_to_caller(path: object, future: asyncio.Future[int]) -> None:
    if not future.cancelled() and future.exception() is None:
        _log.debug("%s: append cancelled by its caller after the log gave it LSN %d; the entry stays in the log",
                   path, future.result())


class _Opening:
    """What :func:`open` returns: await it for an :class:`AsyncWal`, or use it in ``async with``."""

    def __init__(self, path: PathLike, config: Optional[WalConfig], options: dict[str, Any]) -> None:
        self._args = (path, config)
        self._options = options
        self._wal: Optional[AsyncWal] = None

    async def _open(self) -> AsyncWal:
        wal = await _run(functools.partial(_wal.Wal.open, *self._args, **self._options))
        return AsyncWal(wal)

    def __await__(self) -> Generator[Any, None, AsyncWal]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncWal:
        self._wal = await self._open()
        return self._wal

    async def __aexit__(self, *exc_info: object) -> None:
        if self._wal is not None:
            await self._wal.close()


def open(path: PathLike, config: Optional[WalConfig] = None, **options: Any) -> _Opening:  # noqa: A001
    """Open a log as :meth:`walogs.Wal.open` does (``options``: ``lock_timeout``, ``create``, ...), in a thread.

    ``await walogs.aio.open(...)`` gives an :class:`AsyncWal`; ``async with
    walogs.aio.open(...) as wal:`` closes it on exit.
    """
    return _Opening(path, config, options)


async def _follow(make: Callable[[Optional[int], Optional[float]], Any], start: Optional[int],
                  timeout: Optional[float]) -> AsyncIterator[tuple[int, bytes]]:
    """Entries of a blocking follower, taken in a thread slice by slice (``make(start, slice_timeout)``)."""
    idle_since = time.monotonic()
    next_start = start
    first = True
    while True:
        left = None if timeout is None else timeout - (time.monotonic() - idle_since)
        if left is not None and left <= 0 and not first:
            return
        first = False  # even timeout=0 reads what is visible, as the blocking follow does
        chunk = _SLICE if left is None else max(min(_SLICE, left), 0.0)
        iterator = make(next_start, chunk)
        pending: Optional[concurrent.futures.Future[Any]] = None
        try:
            while True:
                pending = _executor.submit(next, iterator, _END)
                item = await asyncio.wrap_future(pending)
                pending = None
                if item is _END:
                    break
                idle_since = time.monotonic()
                next_start = item[0] + 1
                yield item
        finally:
            # Cancelled or abandoned while a thread is inside next(): the iterator is closed in
            # that thread's wake (at most one slice later), never while it runs.
            _executor.submit(_close_after, pending, iterator)


def _close_after(pending: Optional[concurrent.futures.Future[Any]], iterator: Any) -> None:
    if pending is not None:
        concurrent.futures.wait([pending])
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


class WalReader:
    """A reader for asyncio: ``follow`` waits without blocking the loop; cursors are awaited."""

    def __init__(self, path: PathLike) -> None:
        """As :class:`walogs.WalReader` (opening it only checks the directory)."""
        self.reader = _reader.WalReader(path)
        """The blocking :class:`walogs.WalReader` underneath."""

    def follow(self, start: Optional[int] = None, *,
               timeout: Optional[float] = None) -> AsyncIterator[tuple[int, bytes]]:
        """As :meth:`walogs.WalReader.follow`, as an async iterator."""
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        return _follow(lambda at, chunk: self.reader.follow(at, timeout=chunk), start, timeout)

    async def iter(self, start: Optional[int] = None) -> list[tuple[int, bytes]]:
        """The entries visible now, from ``start``, read in a thread (a list: for a long log, use follow)."""
        return await _run(lambda: list(self.reader.iter(start)))

    async def cursor(self, name: str, *, start: Optional[int] = None,
                     lock_timeout: Optional[float] = 0.0) -> AsyncCursor:
        """As :meth:`walogs.WalReader.cursor`, opened in a thread (it may wait for the owner)."""
        cur = await _run(functools.partial(self.reader.cursor, name, start=start, lock_timeout=lock_timeout))
        return AsyncCursor(cur)

    def cursors(self) -> dict[str, _reader.CursorPosition]:
        """As :meth:`walogs.WalReader.cursors`."""
        return self.reader.cursors()

    def close(self) -> None:
        """As :meth:`walogs.WalReader.close`."""
        self.reader.close()

    async def __aenter__(self) -> WalReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class AsyncCursor:
    """A named cursor for asyncio: ``await commit``, ``async for ... in follow()``."""

    def __init__(self, cursor: _Cursor) -> None:
        """Not for use: ``await reader.cursor(name)`` makes one."""
        self.cursor = cursor
        """The blocking :class:`walogs.Cursor` underneath."""

    @property
    def name(self) -> str:
        """The cursor's name."""
        return self.cursor.name

    @property
    def position(self) -> int:
        """The last committed LSN (0: none)."""
        return self.cursor.position

    @property
    def lag(self) -> int:
        """Visible entries after the position."""
        return self.cursor.lag

    async def commit(self, lsn: int) -> None:
        """As :meth:`walogs.Cursor.commit` (its fdatasync runs in a thread)."""
        await _run(self.cursor.commit, lsn)

    def follow(self, *, timeout: Optional[float] = None) -> AsyncIterator[tuple[int, bytes]]:
        """As :meth:`walogs.Cursor.follow`: from the position + 1, as an async iterator (CursorLostError too)."""
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        first = self.cursor.position + 1
        # Each slice starts after the last entry it yielded, not at the (uncommitted) position.
        return _follow(lambda at, chunk: self.cursor._follow_from(at if at is not None else first, chunk),
                       None, timeout)

    async def close(self) -> None:
        """Release ownership (never commits)."""
        await _run(self.cursor.close)

    async def __aenter__(self) -> AsyncCursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


__all__ = ["AsyncCursor", "AsyncWal", "WalReader", "open"]
