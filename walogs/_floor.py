"""The LSN floor side file: where LSNs continue when no entry is stored (P1).

``<dir>/LSN_FLOOR`` holds 20 bytes: the magic ``WALOGSFL``, the next LSN as
u64 little-endian, and a CRC-32 of those 16 bytes as u32 little-endian.
It is written (temp file, fsync, rename, directory sync) by a checkpoint
before it deletes a segment, so a log whose every entry was checkpointed
away never hands out an LSN twice. The Rust crate ignores the file; a
directory without it opens as before (FORMAT.md: side files are optional).
"""

from __future__ import annotations

import os
import struct
import zlib

from walogs import _io
from walogs.errors import WalCorruptError

FLOOR_NAME = "LSN_FLOOR"
_MAGIC = b"WALOGSFL"
_BODY = struct.Struct("<8sQ")
_CRC = struct.Struct("<I")


def read_floor(directory: str) -> int:
    """The next LSN recorded by the last checkpoint, 0 if there is no floor file."""
    path = os.path.join(directory, FLOOR_NAME)
    try:
        fd = _io.open_read(path)
    except FileNotFoundError:
        return 0
    try:
        raw = os.pread(fd, 64, 0)
    finally:
        _io.close(fd)
    body, crc = raw[: _BODY.size], raw[_BODY.size : _BODY.size + _CRC.size]
    if len(raw) != _BODY.size + _CRC.size or _CRC.unpack(crc)[0] != zlib.crc32(body):
        raise WalCorruptError(
            f"{path}: damaged LSN floor file ({len(raw)} bytes); if the segments still hold "
            "entries, delete the file and open again"
        )
    magic, next_lsn = _BODY.unpack(body)
    if magic != _MAGIC:
        raise WalCorruptError(f"{path}: not an LSN floor file (bad magic {magic!r})")
    return next_lsn


def write_floor(directory: str, next_lsn: int) -> None:
    """Durably record that LSNs continue from ``next_lsn`` (I3: rename, then directory sync)."""
    path = os.path.join(directory, FLOOR_NAME)
    temp = path + ".tmp"
    body = _BODY.pack(_MAGIC, next_lsn)
    fd = _io.open_or_create(temp, os.O_WRONLY | os.O_TRUNC)
    try:
        _io.pwrite_all(fd, body + _CRC.pack(zlib.crc32(body)), 0)
        _io.fsync(fd)
    finally:
        _io.close(fd)
    _io.rename(temp, path)
    _io.sync_dir(directory)
