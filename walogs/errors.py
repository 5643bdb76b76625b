"""The exception types walogs raises, shared by both implementations.

``format_duration`` words the wait in WalLockedError's message.
"""

from __future__ import annotations

from walogs._format import MAX_ENTRY_SIZE

# Re-exported, unused here: walogs._writer, _writer_py and wal import these (and MAX_ENTRY_SIZE)
# from here until they import them from their homes. Nothing else should.
from walogs._format import FRAME_HEADER_SIZE  # noqa: F401, E402
from walogs._types import as_batch  # noqa: F401, E402


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
    """An entry is larger than MAX_ENTRY_SIZE; nothing was written."""

    def __init__(self, size: int, max: int = MAX_ENTRY_SIZE) -> None:  # noqa: A002 - the documented attribute is .max
        super().__init__(
            f"entry of {size} bytes is larger than the maximum of {max} bytes; "
            "split it into smaller entries"
        )
        self.size = size
        self.max = max


class WalLockedError(WalError):
    """Another writer holds the directory's writer lock: one writer per directory."""

    def __init__(self, path: object, pid: int | None = None, waited: float = 0.0, shared: bool = False,
                 held_shared: bool = False) -> None:
        if held_shared:
            why = (f"{path}: shared writers hold the log (waited {format_duration(waited)}); an exclusive "
                   "Wal cannot open it while any shared writer is attached: open it with shared=True, "
                   "close the shared writers, pass lock_timeout to wait, or use WalReader to read")
        else:
            holder = f"process {pid}" if pid else "another writer"
            what = ("shared writers cannot attach while an exclusive writer holds the log: close it, "
                    "or open every writer with shared=True" if shared
                    else "only one Wal may write a directory at a time: close the other writer, or open "
                    "every writer with shared=True")
            why = (f"{path}: the writer lock is held by {holder} (waited {format_duration(waited)}); "
                   f"{what}; pass lock_timeout to wait, or use WalReader to read")
        super().__init__(why)
        self.path = path
        self.pid = pid


class WalClosedError(WalError):
    """A call was made on a closed handle."""


class LsnOutOfRangeError(WalError, LookupError):
    """A requested LSN is not stored (checkpointed away, or not yet written)."""


class CursorLockedError(WalLockedError):
    """Another owner holds the named cursor: one owner per cursor, across processes.

    ``path`` is the cursor's file, ``name`` the cursor, ``pid`` the owner's
    recorded pid (None if unknown).
    """

    def __init__(self, path: object, name: str, pid: int | None = None, waited: float = 0.0) -> None:
        holder = f"process {pid}" if pid else "another owner"
        WalError.__init__(
            self,
            f"{path}: cursor {name!r} is owned by {holder} (waited {format_duration(waited)}); "
            "a cursor has one owner at a time: close the other Cursor, pass lock_timeout to wait, "
            "or use another cursor name",
        )
        self.path = path
        self.pid = pid
        self.name = name


class CursorLostError(LsnOutOfRangeError):
    """A checkpoint deleted entries a named cursor had not committed (past ``max_retained_bytes``).

    ``name`` is the cursor, ``first_missing`` the first LSN it will never
    see, ``first_lsn`` the oldest LSN still stored (None: none is).
    """

    def __init__(self, directory: object, name: str, first_missing: int, first_lsn: int | None) -> None:
        now = f"the oldest stored LSN is {first_lsn}" if first_lsn else "no entry is stored now"
        super().__init__(
            f"{directory}: cursor {name!r} is lost: LSN {first_missing} and later entries it had not "
            f"committed were checkpointed away because the log passed max_retained_bytes ({now}); "
            "nothing is skipped silently: rebuild what this consumer derives from a snapshot, then "
            "commit first_lsn - 1 to resume (or drop the cursor)"
        )
        self.name = name
        self.first_missing = first_missing
        self.first_lsn = first_lsn
