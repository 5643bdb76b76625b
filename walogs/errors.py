"""Exception types and format constants shared by both codec implementations."""

from __future__ import annotations

MAX_ENTRY_SIZE = 16 * 1024 * 1024
"""Largest entry, in bytes, that fits in one frame (FORMAT.md)."""

FRAME_HEADER_SIZE = 16
"""Bytes of frame header: len u32, crc u32, lsn u64, all little-endian."""

DEFAULT_MAX_SEGMENT_SIZE = 64 * 1024 * 1024
"""Default size at which the writer starts a new segment."""


def format_duration(seconds: float) -> str:
    """A duration for a message, readable at any scale: "0.04 ms", "3.9 ms", "120 ms", "1.2 s", "75 s"."""
    ms = seconds * 1000
    if round(ms, 2) < 1:
        return f"{ms:.2f} ms"
    if round(ms, 1) < 10:
        return f"{ms:.1f} ms"
    if round(ms) < 1000:
        return f"{ms:.0f} ms"
    return f"{seconds:.1f} s" if round(seconds, 1) < 60 else f"{seconds:.0f} s"


def as_batch(items: object) -> list:
    """``items`` as a list of entries: what ``append_batch`` and ``encode_batch`` take.

    A list is returned as it is; any other iterable is listed. One bytes-like
    object or str is iterable too (of ints, of characters), but is almost
    always a single entry passed by mistake: it raises TypeError saying so, as
    does anything that is not iterable.
    """
    if type(items) is list:
        return items
    single = isinstance(items, str)
    if not single:
        try:
            memoryview(items)  # type: ignore[arg-type]
            single = True
        except TypeError:
            pass
    if not single:
        try:
            iterator = iter(items)  # type: ignore[call-overload]
        except TypeError:
            pass
        else:
            return list(iterator)
    raise TypeError(
        f"a batch must be an iterable of entries (bytes-like objects), such as a list of bytes, "
        f"not {type(items).__name__}"
        + (": to append one entry use append(data) or append_batch([data])" if single else "")
    )


class WalError(Exception):
    """Base class of every error walogs raises on its own account."""


class WalCorruptError(WalError):
    """The log holds damage that recovery must not silently repair.

    ``reason`` is the whole message. Where the damage is at one place,
    ``segment`` (file name), ``offset`` and ``in_last_segment`` say where;
    ``walogs repair`` cuts only damage in the last segment.
    """

    def __init__(self, reason: str, *, segment: str | None = None, offset: int | None = None,
                 in_last_segment: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.segment = segment
        self.offset = offset
        self.in_last_segment = in_last_segment


class EntryTooLargeError(WalError, ValueError):
    """An entry is larger than MAX_ENTRY_SIZE; nothing was written (I7)."""

    def __init__(self, size: int, max: int = MAX_ENTRY_SIZE) -> None:  # noqa: A002 - API.md names it .max
        super().__init__(
            f"entry of {size} bytes is larger than the maximum of {max} bytes; "
            "split it into smaller entries"
        )
        self.size = size
        self.max = max


class WalLockedError(WalError):
    """Another writer holds the directory's writer lock (I6)."""

    def __init__(self, path: object, pid: int | None = None, waited: float = 0.0) -> None:
        holder = f"process {pid}" if pid else "another writer"
        super().__init__(
            f"{path}: the writer lock is held by {holder} (waited {format_duration(waited)}); "
            "only one Wal may write a directory at a time: close the other writer, "
            "pass lock_timeout to wait, or use WalReader to read"
        )
        self.path = path
        self.pid = pid


class WalClosedError(WalError):
    """A call was made on a closed handle."""


class LsnOutOfRangeError(WalError, LookupError):
    """A requested LSN is not stored (checkpointed away, or not yet written)."""
