"""walogs: a crash-safe write-ahead log with a Cython-compiled frame codec.

One writer process appends byte entries (:class:`Wal`) and gets back LSNs;
every acknowledged entry survives a crash. Any number of readers
(:class:`WalReader`) iterate and follow the log at the same time.
"""

from walogs._format import FRAME_HEADER_SIZE, MAX_ENTRY_SIZE
from walogs._impl import BUILD_INFO, IMPLEMENTATION
from walogs.config import DEFAULT_MAX_SEGMENT_SIZE, BuildInfo, TailState, WalConfig
from walogs.cursor import Cursor
from walogs.errors import (
    CursorLockedError,
    CursorLostError,
    EntryTooLargeError,
    LsnOutOfRangeError,
    WalClosedError,
    WalCorruptError,
    WalError,
    WalLockedError,
)
from walogs.reader import CursorPosition, WalReader
from walogs.wal import Wal

__version__ = "0.1.0"

__all__ = [
    "BUILD_INFO",
    "DEFAULT_MAX_SEGMENT_SIZE",
    "FRAME_HEADER_SIZE",
    "IMPLEMENTATION",
    "MAX_ENTRY_SIZE",
    "BuildInfo",
    "Cursor",
    "CursorLockedError",
    "CursorLostError",
    "CursorPosition",
    "EntryTooLargeError",
    "LsnOutOfRangeError",
    "TailState",
    "Wal",
    "WalClosedError",
    "WalConfig",
    "WalCorruptError",
    "WalError",
    "WalLockedError",
    "WalReader",
    "__version__",
]
