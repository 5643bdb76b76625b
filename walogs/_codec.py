"""The one place that chooses the compiled modules or their pure-Python twins.

``WALOGS_PURE_PYTHON=1`` (read once, at import) selects the fallback even
where the compiled module is present, like msgpack's MSGPACK_PUREPYTHON.
Without it, a compiled module that was never built or fails to load (a
missing shared library, a build for another Python) is not a silent switch:
the import warns once, with a ``RuntimeWarning`` and on the ``walogs``
logger, naming the module and the reason. ``BUILD_INFO`` says what runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from walogs.errors import FRAME_HEADER_SIZE

PURE_PYTHON_REQUESTED = os.environ.get("WALOGS_PURE_PYTHON", "") not in ("", "0")


@dataclass(frozen=True)
class BuildInfo:
    """What this installation of walogs runs: ``walogs.BUILD_INFO``.

    ``implementation`` is ``walogs.IMPLEMENTATION`` ("cython" or "python");
    ``codec`` and ``writer`` name the modules in use; ``crc`` is the library
    that computes CRC-32 ("libdeflate", "zlib", or "zlib (Python)" for the
    fallback); ``fallback`` says why a compiled module is not in use (None
    when both are).
    """

    implementation: str
    codec: str
    writer: str
    crc: str
    fallback: str | None

    def describe(self) -> str:
        """One line for ``walogs info`` and bug reports."""
        line = f"{self.implementation} (codec {self.codec}, writer {self.writer}, CRC-32 from {self.crc})"
        return line if self.fallback is None else f"{line}; {self.fallback}"


def _load_compiled(name: str) -> tuple[ModuleType | None, str | None]:
    """Import the compiled module ``walogs.<name>``: (module, None) or (None, why not)."""
    try:
        return importlib.import_module(f"walogs.{name}"), None
    except ImportError as exc:
        try:
            spec = importlib.util.find_spec(f"walogs.{name}")
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return None, f"walogs.{name} was never built (no C compiler or Cython at install time)"
        return None, f"walogs.{name} is installed but could not be loaded ({exc})"


def _warn_fallback(reason: str) -> None:
    message = (
        f"walogs is running a pure-Python fallback: {reason}. It is correct but 2-10x slower. "
        "Reinstall walogs where it can be compiled (a C compiler and Cython; libdeflate-dev for the fast CRC), "
        "or set WALOGS_PURE_PYTHON=1 to choose the fallback and silence this warning."
    )
    logging.getLogger("walogs").warning("%s", message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


_fallback: str | None = None
if TYPE_CHECKING:
    from walogs import _frame_py as codec
elif PURE_PYTHON_REQUESTED:
    from walogs import _frame_py as codec
else:
    codec, _fallback = _load_compiled("_frame")
    if codec is None:
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
    _writer, _fallback = _load_compiled("_writer")
    if _writer is None:
        from walogs._writer_py import SegmentWriter
    else:
        SegmentWriter = _writer.SegmentWriter

if _fallback is not None:
    _warn_fallback(_fallback)

BUILD_INFO = BuildInfo(
    implementation=IMPLEMENTATION,
    codec=codec.__name__,
    writer=SegmentWriter.__module__,
    crc=getattr(codec, "_CRC_BACKEND", "zlib (Python)"),
    fallback=_fallback if _fallback is not None else ("WALOGS_PURE_PYTHON=1 chose the fallback" if PURE_PYTHON_REQUESTED else None),
)

__all__ = [
    "BUILD_INFO",
    "IMPLEMENTATION",
    "PURE_PYTHON_REQUESTED",
    "BuildInfo",
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
