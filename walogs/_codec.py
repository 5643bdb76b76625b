"""The old home of the implementation choice, kept only for ``wal.py`` and ``_writer_py.py``.

Those two still read ``_codec.SegmentWriter``, ``_codec.frame_size``,
``_codec.encode`` and ``_codec.encode_batch``; everything else imports
``walogs._impl`` (the choice) or ``walogs._format`` (``frame_size``). Delete
this module once they do too (issue #12).

Each name is looked up on first use, not at import: ``_impl`` imports the
Python writer, which imports this module, so importing ``_impl`` here would
close an import loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from walogs._format import frame_size
    from walogs._impl import SegmentWriter, codec

    encode = codec.encode
    encode_batch = codec.encode_batch

__all__ = ["SegmentWriter", "encode", "encode_batch", "frame_size"]


def __getattr__(name: str) -> object:
    if name == "frame_size":
        from walogs import _format as home
    elif name in ("SegmentWriter", "codec"):
        from walogs import _impl as home
    elif name in ("encode", "encode_batch"):
        from walogs._impl import codec as home
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(home, name)
    globals()[name] = value  # looked up once: later reads are plain module attributes
    return value
