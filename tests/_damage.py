"""Building and damaging segment files, in the style of LevelDB's ``db/log_test.cc``.

LevelDB's log tests keep each damage case to a few lines with small helpers
(``SetByte``, ``ShrinkSize``, ``FixChecksum``); these are walogs' own, shared by
the recovery, corruption, salvage, reader and CLI suites. Frames are built
from docs/format.md (``conftest.make_frame``: struct + zlib), never by walogs.
"""

from __future__ import annotations

import os
import re
import struct

from conftest import make_frame

HEADER = 16
"""docs/format.md: len u32 | crc u32 | lsn u64, then the data."""

_SEGMENT = re.compile(r"wal-([0-9]+)\.log")


def seg_name(n: int) -> str:
    """The file name of segment ``n``."""
    return f"wal-{n:06d}.log"


def segments_of(directory) -> list[str]:
    """The segment file names in ``directory`` (exactly ``wal-<digits>.log``), in segment order."""
    found = [(int(m.group(1)), m.group(0)) for m in map(_SEGMENT.fullmatch, os.listdir(directory)) if m]
    return [name for _, name in sorted(found)]


def frames(first_lsn: int, payloads) -> bytes:
    """The frames of ``payloads`` at LSNs ``first_lsn``, ``first_lsn + 1``, ..., back to back."""
    return b"".join(make_frame(first_lsn + i, p) for i, p in enumerate(payloads))


def frames_of(path) -> list[tuple[int, int, int]]:
    """``(offset, total length, lsn)`` of each whole frame header in a segment file (CRCs unchecked)."""
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos + HEADER <= len(data):
        length, _, lsn = struct.unpack_from("<IIQ", data, pos)
        if pos + HEADER + length > len(data):
            break
        out.append((pos, HEADER + length, lsn))
        pos += HEADER + length
    return out


def write_segments(directory, files: dict[str, bytes]) -> None:
    """A directory holding exactly ``files`` (name -> bytes), as the Rust crate leaves one: no side files."""
    os.makedirs(directory)
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def set_bytes(path, offset: int, data: bytes) -> None:
    """Overwrite the file's bytes at ``offset`` with ``data`` (LevelDB's SetByte, for a run of bytes)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def flip_bit(path, offset: int, bit: int = 4) -> None:
    """Flip one bit of the byte at ``offset`` (bit 4, 0x10, unless told)."""
    with open(path, "rb") as f:
        f.seek(offset)
        byte = f.read(1)[0]
    set_bytes(path, offset, bytes([byte ^ (1 << bit)]))


def flipped(buf: bytes, offset: int, bit: int = 4) -> bytes:
    """``buf`` with one bit of the byte at ``offset`` flipped."""
    damaged = bytearray(buf)
    damaged[offset] ^= 1 << bit
    return bytes(damaged)


def append_bytes(path, data: bytes) -> None:
    """``data`` after the file's end: a torn write, junk, or zeros of unwritten storage."""
    with open(path, "ab") as f:
        f.write(data)


def shrink(path, by: int) -> None:
    """Cut the last ``by`` bytes off the file (LevelDB's ShrinkSize)."""
    os.truncate(path, os.path.getsize(path) - by)
