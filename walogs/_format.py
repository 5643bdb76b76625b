"""Every on-disk constant and layout of a walogs log directory, defined once.

docs/format.md describes these formats in words. Everything that reads or
writes them takes its layouts from here: the codecs (``_frame_py``, and
``_frame.pyx``, which has the same layouts in C and checks them against
these when it is imported), the segment files (``_segments``), ``VISIBLE``
(``_visible``), ``LSN_FLOOR`` (``_floor``), ``LOCK`` (``_lock``) and the
named cursors' files (``_cursor_file``). This
module imports nothing from walogs.
"""

from __future__ import annotations

import re
import struct

# ---------------------------------------------------------------------------
# Frames: len u32 | crc u32 | lsn u64 | data, little-endian (I1: the CRC covers len ++ lsn ++ data).

FRAME_HEADER = struct.Struct("<IIQ")
"""A frame's header: len u32, crc u32, lsn u64, little-endian; the entry's data follows it."""
FRAME_HEADER_SIZE = FRAME_HEADER.size
"""Bytes of frame header: len u32, crc u32, lsn u64, all little-endian."""
FRAME_CRC_PREFIX = struct.Struct("<IQ")
"""What a frame's CRC-32 covers before the data: len, then lsn (the crc field itself is skipped)."""
MAX_ENTRY_SIZE = 16 * 1024 * 1024
"""Largest entry, in bytes, that fits in one frame (docs/format.md)."""
MAX_LSN = (1 << 64) - 1
"""The highest LSN; LSN 0 is never written."""
SECTOR = 512
"""The storage block size the damage rules reason about: a power cut loses whole sectors."""


def frame_size(data: object) -> int:
    """Bytes the frame of entry ``data`` takes (header + data); TypeError if not bytes-like."""
    return FRAME_HEADER_SIZE + memoryview(data).nbytes  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Segment files.

SEGMENT_RE = re.compile(r"wal-([0-9]+)\.log")
"""A segment's file name: ``wal-`` + decimal digits + ``.log``; every other name is a side file."""
V1_NAME = "wal.log"
"""The single file of a legacy (v1) log, read as segment 1 and renamed to it by the first writer open."""


PREPARED_NAME = "SEGMENT.prepared"
"""The next segment while it is made ready ahead of rotation: real zeros, synced; renamed to the
segment's name at rotation. Not a segment name, so every segment scan (the Rust crate's too) ignores it."""
PREPARED_ZERO_CHUNK = 1 << 20
"""Bytes of zeros a prepared segment is filled with per write."""


def segment_name(seq: int) -> str:
    """The canonical file name of segment ``seq``: ``wal-`` + 6+ digits + ``.log``."""
    return f"wal-{seq:06d}.log"


# ---------------------------------------------------------------------------
# VISIBLE: the visible end (32 bytes at offset 0), then the write in flight (48 bytes).

VISIBLE_NAME = "VISIBLE"
VISIBLE_CLOSED, VISIBLE_RECOVERING, VISIBLE_PUBLISHED = 0, 1, 2
"""The visible end's states: no writer publishes, a writer is recovering, a writer published this end."""
RECORD_CRC_FROM = 8
"""In both VISIBLE records the CRC-32 covers the bytes from here (after magic and crc) to the record's end."""

VISIBLE_MAGIC = b"WLVE"
VISIBLE_RECORD = struct.Struct("<4sIIIQQ")
"""The visible end: magic, crc, state u32, seq u32, lsn u64, offset u64."""
VISIBLE_BODY = struct.Struct("<IIQQ")
"""The part of the visible end its CRC covers: state, seq, lsn, offset."""
VISIBLE_SIZE = VISIBLE_RECORD.size

IN_FLIGHT_OFFSET = VISIBLE_SIZE
"""Where the write-in-flight record starts in VISIBLE."""
IN_FLIGHT_MAGIC = b"WLIF"
IN_FLIGHT_RECORD = struct.Struct("<4sI16sQQQ")
"""The write in flight: magic, crc, boot id (16 bytes), seq u64, start u64, end u64."""
IN_FLIGHT_BODY = struct.Struct("<16sQQQ")
"""The part of the write in flight its CRC covers: boot id, seq, start, end."""
IN_FLIGHT_FIELDS = struct.Struct("<QQQ")
"""The end of that body, after the boot id: seq, start, end."""
IN_FLIGHT_SIZE = IN_FLIGHT_RECORD.size
BOOT_ID_SIZE = 16
"""Bytes of the boot id in the write in flight."""

VISIBLE_FILE_SIZE = IN_FLIGHT_OFFSET + IN_FLIGHT_SIZE
"""Bytes of the VISIBLE file: both records."""

# ---------------------------------------------------------------------------
# LSN_FLOOR: two slots; the valid one with the higher counter is the record.

FLOOR_NAME = "LSN_FLOOR"
FLOOR_TEMP_NAME = FLOOR_NAME + ".tmp"
"""The file LSN_FLOOR is first written as, then renamed from."""
FLOOR_MAGIC = b"WALOGSF2"
FLOOR_SLOT = struct.Struct("<8sQQQI4x")
"""One slot: magic, counter u64, floor u64, seq u64, crc u32, 4 zero bytes."""
FLOOR_SLOT_CRC_SPAN = 32
"""A slot's CRC-32 covers its first 32 bytes."""
FLOOR_SLOT_OFFSETS = (0, 512)
FLOOR_FILE_SIZE = 1024
FLOOR_LEGACY_MAGIC = b"WALOGSFL"
FLOOR_LEGACY = struct.Struct("<8sQI")
"""The one-record file an older walogs wrote: magic, floor u64, CRC-32 of the 16 bytes before it."""

# ---------------------------------------------------------------------------
# LOCK

LOCK_NAME = "LOCK"
"""The writer lock's file; it holds the holder's pid."""

# ---------------------------------------------------------------------------
# WRITERS: the state every shared writer of a log maps (docs/shared-writers.md).
# Little-endian, 8-byte aligned fields at fixed offsets; two state slots, the
# current one named by WRITERS_CURRENT, so a kill between two stores leaves a
# whole old or a whole new state.

WRITERS_NAME = "WRITERS"
"""The shared writers' state file (only while ``Wal.open(..., shared=True)`` is used)."""
WRITERS_MAGIC = b"WALOGSW1"
WRITERS_FILE_SIZE = 4096
"""Bytes of the WRITERS file: one page, written for real before it is mapped."""
WRITERS_HEADER = struct.Struct("<8sIIQ")
"""At 0: magic, sync mode u32 (an index into config.SYNC_MODES), 4 zero bytes, max segment size u64 (0: none)."""
WRITERS_CURRENT = 24
"""u32 at 24: which slot (0 or 1) holds the state."""
WRITERS_DIRTY = 28
"""u32 at 28: 1 while an append or rotation may have left bytes or a file the state does not list."""
WRITERS_DURABLE = 32
"""u64 at 32: the highest LSN an fdatasync made durable; only grows while writers are attached."""
WRITERS_POISON = struct.Struct("<iI")
"""At 40: errno of the failure that poisoned every shared writer (0: none), pid of the process it hit."""
WRITERS_POISON_AT = 40
WRITERS_TORN = 48
"""u64 at 48: where recovery cut a torn tail at the first open (all ones: it found none)."""
WRITERS_UNSYNCED = 56
"""u32 at 56: appends written since the last sync took its target (the gather's futex word)."""
WRITERS_WANT = 60
"""u32 at 60: how many of those a gathering leader waits for (0: no leader gathers)."""
WRITERS_GATHER = struct.Struct("<IIQ")
"""At 192: appends the last sync covered u32, 4 zero bytes, how long it took in ns u64."""
WRITERS_GATHER_AT = 192
WRITERS_SYNCS = 208
"""u32 at 208: counts the ends of leaders' syncs (the futex word durable-waiters sleep on)."""
WRITERS_WAIT_GUARD = 0.02
"""Seconds a durable-waiter sleeps at most before it looks again: a leader killed mid-sync wakes no one."""
WRITERS_SLOT = struct.Struct("<QQQQQQQQ")
"""A state slot: seq, end, first_lsn, last_lsn, written (the last LSN written), synced_lsn, synced_seq, synced_end."""
WRITERS_SLOT_FIELDS = ("seq", "end", "first_lsn", "last_lsn", "written", "synced_lsn", "synced_seq", "synced_end")
"""The names of a state slot's u64 fields, in order (the compiled writer checks its offsets against them)."""
WRITERS_SLOTS = (64, 128)

# Byte-range OFD locks on the WRITERS file (beyond its data; a lock needs no bytes).
WRITERS_LOCK_ATTACHED = 8192
"""Read-locked by every attached shared writer for its lifetime."""
WRITERS_LOCK_INIT = 8193
"""Held while a process attaches or detaches (the first runs recovery under it)."""
WRITERS_LOCK_APPEND = 8194
"""Held to write frames, rotate, or read and change the state slots."""
WRITERS_LOCK_SYNC = 8195
"""Held by the process leading a group-commit fdatasync."""
WRITERS_LOCK_FLOOR = 8196
"""Held while LSN_FLOOR is advanced."""
WRITERS_LOCK_CHECKPOINT = 8197
"""Held by the process checkpointing."""

# Named cursors: ``cursors/<name>.cursor``, two slots like LSN_FLOOR, then the owner's pid.

CURSORS_DIR = "cursors"
"""The folder of the log directory that holds one file per named cursor (the segment scan never looks in it)."""
CURSOR_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""A valid cursor name: 1 to 64 characters of letters, digits, ``.``, ``_`` and ``-``."""
CURSOR_SUFFIX = ".cursor"
"""A cursor's file is its name + this suffix (so ``.`` and ``..`` are names like any other)."""
CURSOR_FILE_RE = re.compile(r"([A-Za-z0-9._-]{1,64})\.cursor")
"""The file name of a cursor; its temp file (``<name>.cursor.tmp``) and anything else do not match."""
CURSOR_TEMP_SUFFIX = ".tmp"
"""A new cursor's file is written under its name + this suffix, then renamed."""
CURSOR_MAGIC = b"WLCURSR1"
CURSOR_SLOT = struct.Struct("<8sQQI4x")
"""One slot: magic, counter u64, position u64, crc u32, 4 zero bytes."""
CURSOR_SLOT_CRC_SPAN = 24
"""A slot's CRC-32 covers its first 24 bytes (magic, counter, position)."""
CURSOR_SLOT_OFFSETS = (0, 512)
"""Each slot in a sector of its own: a torn write of one never touches the other."""
CURSOR_OWNER = struct.Struct("<I")
"""The pid of the process that owns the cursor (informational, never synced), after the slots."""
CURSOR_OWNER_OFFSET = 1024
CURSOR_FILE_SIZE = CURSOR_OWNER_OFFSET + CURSOR_OWNER.size


def cursor_file_name(name: str) -> str:
    """The file name, inside ``cursors/``, of the cursor called ``name`` (already validated)."""
    return name + CURSOR_SUFFIX
