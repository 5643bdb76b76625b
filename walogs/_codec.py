"""The one place that chooses the frame codec: compiled ``_frame`` or ``_frame_py``.

``WALOGS_PURE_PYTHON=1`` (read once, at import) selects the fallback even
where the compiled module is present, like msgpack's MSGPACK_PUREPYTHON.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

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

__all__ = [
    "IMPLEMENTATION",
    "PURE_PYTHON_REQUESTED",
    "FrameReader",
    "VISIBLE_SIZE",
    "codec",
    "decode",
    "encode",
    "encode_batch",
    "find_frame",
    "pack_visible",
    "scan",
]
