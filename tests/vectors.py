"""Literal frame test vectors: (lsn, data, frame as hex).

The first is docs/format.md's own. Each frame was produced once by ``frame()``
below (struct + zlib.crc32, no walogs code) and pasted here as text, so a
change in either codec cannot quietly change the expected bytes (I1, P8).
Regenerate only on purpose, with ``python tests/vectors.py``, and review the
diff: a different frame means a different on-disk format.
"""

from __future__ import annotations

import struct
import zlib

VECTORS: list[tuple[int, bytes, str]] = [
    # docs/format.md: len=5, crc=0x10e5952f, lsn=1, b"hello"
    (1, b"hello", "050000002f95e510010000000000000068656c6c6f"),
    (1, b"", "00000000f1c67fb70100000000000000"),
    (2**64 - 1, b"\x00", "01000000b47cc9f2ffffffffffffffff00"),
    (0x0102030405060708, b"walogs", "06000000b688ad0e080706050403020177616c6f6773"),
    (42, bytes(range(16)), "100000002f01ba4c2a00000000000000000102030405060708090a0b0c0d0e0f"),
    (
        7,
        b"\xff" * 33,
        "210000007e8f2bf10700000000000000" + "ff" * 33,
    ),
]


def frame(lsn: int, data: bytes) -> bytes:
    """The frame for ``(lsn, data)`` straight from docs/format.md: struct + zlib only."""
    # The header layout is written out here, not imported from walogs._format, on purpose:
    # this is the independent oracle that _format and both codecs are checked against
    # (tests/test_layout.py checks _format.FRAME_HEADER against these frames).
    crc = zlib.crc32(data, zlib.crc32(struct.pack("<IQ", len(data), lsn)))
    return struct.pack("<IIQ", len(data), crc, lsn) + data


if __name__ == "__main__":
    for lsn, data, _ in VECTORS:
        print(f"    ({lsn:#x}, {data!r}, {frame(lsn, data).hex()!r}),")
