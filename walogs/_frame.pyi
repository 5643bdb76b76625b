"""Type stub for the compiled frame codec ``walogs._frame``.

Same names and signatures as ``walogs._frame_py``, the readable spec (P8).
"""

from collections.abc import Iterable, Iterator
from typing import Final

from walogs.errors import FRAME_HEADER_SIZE as FRAME_HEADER_SIZE
from walogs.errors import MAX_ENTRY_SIZE as MAX_ENTRY_SIZE
from walogs.errors import EntryTooLargeError as EntryTooLargeError

SCAN_END: Final[int]
SCAN_SHORT: Final[int]
SCAN_BAD_LEN: Final[int]
SCAN_BAD_CRC: Final[int]
SCAN_BAD_LSN: Final[int]
SCAN_RUNNING: Final[int]
FIND_NONE: Final[int]
FIND_FRAME: Final[int]
FIND_SHORT: Final[int]

_MAX_LSN: Final[int]
_CRC_BACKEND: str  # "libdeflate" or "zlib": which library computes the CRC in this build

def encode(lsn: int, data: object) -> bytes: ...
def encode_batch(first_lsn: int, items: Iterable[object]) -> bytes: ...
def scan(buf: object, offset: int = 0, expect_lsn: int = 0) -> tuple[int, int, int, int, int]: ...
def decode(buf: object, offset: int = 0, expect_lsn: int = 0) -> tuple[list[tuple[int, bytes]], int, int]: ...
def find_frame(buf: object, offset: int, after_lsn: int, bad_offset: int) -> tuple[int, int]: ...

class FrameReader(Iterator[tuple[int, bytes]]):
    def __init__(self, buf: object, offset: int = 0, expect_lsn: int = 0, skip_before: int = 0) -> None: ...
    @property
    def offset(self) -> int: ...
    @property
    def status(self) -> int: ...
    @property
    def last_lsn(self) -> int: ...
    def __iter__(self) -> FrameReader: ...
    def __next__(self) -> tuple[int, bytes]: ...
