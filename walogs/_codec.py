"""The one place that chooses the compiled modules or their pure-Python twins.

``WALOGS_PURE_PYTHON=1`` (read once, at import) selects the fallback even
where the compiled module is present, like msgpack's MSGPACK_PUREPYTHON.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from walogs.errors import FRAME_HEADER_SIZE

PURE_PYTHON_REQUESTED = os.environ.get("WALOGS_PURE_PYTHON", "") not in ("", "0")

if TYPE_CHECKING:
    from walogs import _frame_py as codec
elif PURE_PYTHON_REQUESTED:
    from walogs import _frame_py as codec
else:
    try:
        from walogs import _frame as codec
    except ImportError:
        from walogs import _frame_py as codec

IMPLEMENTATION = "python" if codec.__name__.endswith("_frame_py") else "cython"

encode = codec.encode
encode_batch = codec.encode_batch
decode = codec.decode
scan = codec.scan
find_frame = codec.find_frame
FrameReader = codec.FrameReader
pack_visible = codec.pack_visible
VISIBLE_SIZE = codec.VISIBLE_SIZE
pack_in_flight = codec.pack_in_flight
IN_FLIGHT_SIZE = codec.IN_FLIGHT_SIZE
BOOT_ID_SIZE = codec.BOOT_ID_SIZE


def frame_size(data: object) -> int:
    """Bytes the frame of entry ``data`` takes (header + data); TypeError if not bytes-like."""
    return FRAME_HEADER_SIZE + memoryview(data).nbytes

# The active segment's writer, chosen the same way; imported last, as it uses the codec.
if TYPE_CHECKING or IMPLEMENTATION == "python":
    from walogs._writer_py import SegmentWriter
else:
    try:
        from walogs._writer import SegmentWriter
    except ImportError:  # built without it (an old build in place): the twin is correct, only slower
        from walogs._writer_py import SegmentWriter

__all__ = [
    "IMPLEMENTATION",
    "PURE_PYTHON_REQUESTED",
    "FrameReader",
    "SegmentWriter",
    "BOOT_ID_SIZE",
    "IN_FLIGHT_SIZE",
    "VISIBLE_SIZE",
    "codec",
    "decode",
    "encode",
    "encode_batch",
    "find_frame",
    "frame_size",
    "pack_in_flight",
    "pack_visible",
    "scan",
]
