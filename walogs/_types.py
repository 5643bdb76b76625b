"""What the API accepts, shared by the writer, the readers and both codecs: a path, an entry, a batch."""

from __future__ import annotations

import os
import sys
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]
"""A log directory: a str or an ``os.PathLike`` of one."""

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing import Protocol

    class Buffer(Protocol):
        """A bytes-like object (``collections.abc.Buffer`` from Python 3.12 on)."""

        def __buffer__(self, flags: int, /) -> memoryview: ...


def as_batch(items: object) -> list:
    """``items`` as a list of entries: what ``append_batch`` and ``encode_batch`` take.

    A list is returned as it is; any other iterable is listed. One bytes-like
    object or str is iterable too (of ints, of characters), but is almost
    always a single entry passed by mistake: it raises TypeError saying so, as
    does anything that is not iterable.
    """
    if type(items) is list:
        return items
    single = isinstance(items, str)
    if not single:
        try:
            memoryview(items)  # type: ignore[arg-type]
            single = True
        except TypeError:
            pass
    if not single:
        try:
            iterator = iter(items)  # type: ignore[call-overload]
        except TypeError:
            pass
        else:
            return list(iterator)
    raise TypeError(
        f"a batch must be an iterable of entries (bytes-like objects), such as a list of bytes, "
        f"not {type(items).__name__}"
        + (": to append one entry use append(data) or append_batch([data])" if single else "")
    )
