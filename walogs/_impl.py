"""Which implementation runs: the compiled codec and writers, or their pure-Python twins.

``WALOGS_PURE_PYTHON=1`` (read once, at import) chooses the twins even where
the compiled modules are present, like msgpack's MSGPACK_PUREPYTHON. Without
it, a compiled module that was never built or fails to load is not a silent
switch: the import warns once, with a ``RuntimeWarning`` and on the ``walogs``
logger, naming the module and why. The compiled writers (the single-process
``_writer`` and the ``_shared_writer``) need the compiled codec; the Python
writers run with either. Type checkers see the twins.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import warnings
from typing import TYPE_CHECKING, Optional

from walogs.config import BuildInfo

PURE_PYTHON_REQUESTED = os.environ.get("WALOGS_PURE_PYTHON", "") not in ("", "0")


def _load_compiled(name: str) -> tuple[object, Optional[str]]:
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


_fallback: Optional[str] = None
if TYPE_CHECKING or PURE_PYTHON_REQUESTED:
    from walogs import _frame_py as codec
    from walogs import _writer_py as _writer_module
    from walogs import _shared_writer_py as _shared_module
else:
    codec, _fallback = _load_compiled("_frame")
    _writer_module = _shared_module = None
    if codec is None:
        from walogs import _frame_py as codec
    else:  # both compiled writers build frames with the compiled codec's C functions
        _writer_module, _writer_fallback = _load_compiled("_writer")
        _shared_module, _shared_fallback = _load_compiled("_shared_writer")
        _fallback = "; ".join(why for why in (_writer_fallback, _shared_fallback) if why) or None
    if _writer_module is None:
        from walogs import _writer_py as _writer_module
    if _shared_module is None:
        from walogs import _shared_writer_py as _shared_module
    if _fallback is not None:
        message = (
            f"walogs is running a pure-Python fallback: {_fallback}. It is correct but 2-10x slower. "
            "Reinstall walogs where it can be compiled (a C compiler and Cython; libdeflate-dev for the "
            "fast CRC), or set WALOGS_PURE_PYTHON=1 to choose the fallback and silence this warning."
        )
        logging.getLogger("walogs").warning("%s", message)
        warnings.warn(message, RuntimeWarning, stacklevel=1)

SegmentWriter = _writer_module.SegmentWriter
SharedWriter = _shared_module.SharedWriter
IMPLEMENTATION = "python" if codec.__name__ == "walogs._frame_py" else "cython"
BUILD_INFO = BuildInfo(
    implementation=IMPLEMENTATION,
    codec=codec.__name__,
    writer=SegmentWriter.__module__,
    shared_writer=SharedWriter.__module__,
    crc=getattr(codec, "_CRC_BACKEND", "zlib (Python)"),
    fallback=_fallback or ("WALOGS_PURE_PYTHON=1 chose the fallback" if PURE_PYTHON_REQUESTED else None),
)
