"""A named cursor's file, ``<dir>/cursors/<name>.cursor``: its layout on disk, created, read, updated, listed, dropped.

The layout is in ``walogs._format`` (docs/format.md describes it): two
slots, each in a 512-byte sector of its own, like LSN_FLOOR's. A slot is
a magic, a counter, the committed position and a CRC-32; the valid slot
with the higher counter is the record. An update writes the older slot and
fdatasyncs, so a crash (or a power loss tearing that sector) leaves the
other slot, the previous position, whole. After the slots, the
owner's pid, rewritten when a process takes ownership and never synced: it
only names the owner in messages and ``walogs info``.

A new file is written whole under a temp name (``<name>.cursor.tmp``),
fdatasynced, renamed to its name and the folder synced, by one
creator at a time (they hold the log directory's flock exclusively). A
creator killed before the rename leaves its temp file, which the next
creation of that name overwrites.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Optional

from walogs import _io
from walogs._format import (
    CURSOR_FILE_RE,
    CURSOR_FILE_SIZE,
    CURSOR_MAGIC,
    CURSOR_NAME_RE,
    CURSOR_OWNER,
    CURSOR_OWNER_OFFSET,
    CURSOR_SLOT,
    CURSOR_SLOT_CRC_SPAN,
    CURSOR_SLOT_OFFSETS,
    CURSORS_DIR,
    CURSOR_TEMP_SUFFIX as TEMP_SUFFIX,
    cursor_file_name,
)
from walogs.errors import WalCorruptError


@dataclass(frozen=True)
class Record:
    """A cursor file's record: the committed position, and the slot and counter that hold it."""

    position: int
    counter: int
    slot: int
    owner_pid: Optional[int] = None


def check_name(name: object) -> str:
    """``name`` if it is a valid cursor name; TypeError or ValueError saying what a name may be."""
    if not isinstance(name, str):
        raise TypeError(f"a cursor name must be a str, not {type(name).__name__}")
    if CURSOR_NAME_RE.fullmatch(name) is None:
        raise ValueError(
            f"invalid cursor name {name!r}: use 1 to 64 characters of letters, digits, '.', '_' and '-'"
        )
    return name


def folder(directory: str) -> str:
    """The cursors folder of log ``directory``."""
    return os.path.join(directory, CURSORS_DIR)


def path_of(directory: str, name: str) -> str:
    """The file of cursor ``name`` in log ``directory``."""
    return os.path.join(directory, CURSORS_DIR, cursor_file_name(name))


def ensure_folder(directory: str) -> str:
    """Create the cursors folder if missing, durably (its parent is synced); its path."""
    # I3: the folder's entry must be durable before a cursor file in it is relied on.
    path = folder(directory)
    try:
        _io.mkdir(path)
    except FileExistsError:
        pass
    _io.sync_dir(directory)
    return path


def pack_slot(counter: int, position: int) -> bytes:
    """One slot's bytes."""
    body = CURSOR_SLOT.pack(CURSOR_MAGIC, counter, position, 0)
    return CURSOR_SLOT.pack(CURSOR_MAGIC, counter, position, zlib.crc32(body[:CURSOR_SLOT_CRC_SPAN]))


def decode(raw: bytes, path: str) -> Record:
    """The record in a cursor file's bytes; WalCorruptError if neither slot is valid."""
    best: Optional[Record] = None
    for slot, at in enumerate(CURSOR_SLOT_OFFSETS):
        chunk = raw[at : at + CURSOR_SLOT.size]
        if len(chunk) < CURSOR_SLOT.size:
            continue
        magic, counter, position, crc = CURSOR_SLOT.unpack(chunk)
        if magic != CURSOR_MAGIC or crc != zlib.crc32(chunk[:CURSOR_SLOT_CRC_SPAN]):
            continue
        if best is None or counter > best.counter:
            best = Record(position, counter, slot)
    if best is None:
        raise WalCorruptError(
            f"{path}: damaged cursor file ({len(raw)} bytes, no valid record); a commit never "
            "damages both of its records, so something else wrote it: drop the cursor "
            "(or remove the file) and create it again at the position its consumer last applied"
        )
    owner = raw[CURSOR_OWNER_OFFSET : CURSOR_OWNER_OFFSET + CURSOR_OWNER.size]
    pid = CURSOR_OWNER.unpack(owner)[0] if len(owner) == CURSOR_OWNER.size else 0
    return Record(best.position, best.counter, best.slot, pid or None)


def read_fd(fd: int, path: str) -> Record:
    """The record of the open cursor file ``fd``."""
    return decode(os.pread(fd, CURSOR_FILE_SIZE, 0), path)


def read(path: str) -> Optional[Record]:
    """The record of the cursor file ``path``; None if there is no such file."""
    try:
        raw = _io.read_at(path, CURSOR_FILE_SIZE, 0)
    except FileNotFoundError:
        return None
    return decode(raw, path)


def write(fd: int, current: Record, position: int) -> Record:
    """Durably make ``position`` the record: the older slot, then fdatasync. The record now."""
    # P13: a torn write of one slot leaves the other, the previous position.
    slot = 1 - current.slot  # the newest record stays whole if this write tears
    counter = current.counter + 1
    _io.pwrite_all(fd, pack_slot(counter, position), CURSOR_SLOT_OFFSETS[slot])
    _io.fdatasync(fd)
    return Record(position, counter, slot, current.owner_pid)


def record_owner(fd: int) -> None:
    """Write this process's pid after the slots (a courtesy for messages; never synced)."""
    try:
        _io.pwrite_all(fd, CURSOR_OWNER.pack(os.getpid()), CURSOR_OWNER_OFFSET)
    except OSError:
        pass


def create(directory: str, name: str, position: int) -> bool:
    """Create cursor ``name`` at ``position``, whole and durable; False if it exists already.

    The caller holds the log directory's flock (``_retention.cursors_held``),
    so no other creator renames over the file between the check and the rename.
    """
    cursors = ensure_folder(directory)
    final = path_of(directory, name)
    if os.path.lexists(final):
        return False
    temp = final + TEMP_SUFFIX
    content = bytearray(CURSOR_FILE_SIZE)
    content[: CURSOR_SLOT.size] = pack_slot(1, position)
    fd = _io.open_or_create(temp, os.O_WRONLY | os.O_TRUNC)
    try:
        _io.pwrite_all(fd, bytes(content), 0)
        _io.fdatasync(fd)
    finally:
        _io.close(fd)
    _io.rename(temp, final)
    _io.sync_dir(cursors)  # I3
    return True


def names(directory: str) -> list[str]:
    """The names of the cursors of log ``directory``, sorted (none when it has no cursors folder)."""
    try:
        entries = _io.listdir(folder(directory))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        match = CURSOR_FILE_RE.fullmatch(entry)
        if match is not None:
            found.append(match.group(1))
    return sorted(found)
