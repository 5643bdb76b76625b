# cython: language_level=3, embedsignature=True
# cython: binding=True, cdivision=True, annotation_typing=False, autotestdict=False
"""Frame codec in C: the compiled twin of ``_frame_py``, the readable spec.

Both modules expose the same names with the same signatures, results,
exceptions and bytes; ``tests/test_codec.py`` holds them to it. Nothing here
does I/O: callers hand in buffers and get back frames, offsets and verdicts.
The layouts are ``walogs._format``'s (docs/format.md). C code needs them as
constants: they are checked against ``_format`` when this module is imported.

How this module stays safe and fast:

- Buffers are read through raw pointers with an explicit length check before
  every read (a header needs 16 bytes left, a frame its whole length), so a
  torn tail is SCAN_SHORT / FIND_SHORT, never a read past the end. A len field
  is compared with MAX_ENTRY_SIZE before it is used, and a frame is only ever
  copied out of the buffer after all its bytes were found there: a len of
  0xFFFFFFFF allocates nothing.
- Every function that reads a buffer takes it through ``_read_view``: bytes
  as they are, anything else as the spec's flat byte view, which stays
  exported while its pointer is used (a bytearray, mmap or memoryview cannot
  be resized or closed under the loop). ``scan`` and ``find_frame`` walk the
  buffer without creating a Python object per frame and release the GIL on
  buffers above 64 KiB; the readers release it for the CRC and copy of frames
  above 64 KiB.
- ``ChainReader`` takes each frame from its current FrameReader with a direct
  C call (``FrameReader._next``), so iterating a whole log costs one C-level
  ``next`` per entry; Python code runs only between readers (once per chunk).
- Integer arguments (LSNs, offsets) are range-checked as Python ints before
  they are converted, so an out-of-range value gives the spec's ValueError,
  never an OverflowError, and C arithmetic on LSNs is unsigned 64-bit.
"""

import zlib

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.memoryview cimport PyMemoryView_GET_BUFFER
from cpython.number cimport PyNumber_Index
from libc.stdint cimport int64_t, uint32_t, uint64_t, UINT64_MAX
from libc.string cimport memcpy

cimport cython

from walogs._format import (
    BOOT_ID_SIZE,
    FRAME_HEADER_SIZE,
    IN_FLIGHT_BODY,
    IN_FLIGHT_MAGIC,
    IN_FLIGHT_RECORD,
    IN_FLIGHT_SIZE,
    MAX_ENTRY_SIZE,
    RECORD_CRC_FROM,
    VISIBLE_BODY,
    VISIBLE_MAGIC,
    VISIBLE_RECORD,
    VISIBLE_SIZE,
)
from walogs._format import MAX_LSN as _MAX_LSN
from walogs._types import as_batch
from walogs.errors import EntryTooLargeError

cdef extern from "_crc.h" nogil:
    # I1: CRC-32 (IEEE, zlib's) from libdeflate or zlib, chosen at build time.
    uint32_t walogs_crc32(uint32_t crc, const unsigned char *p, size_t n)
    const char *WALOGS_CRC_BACKEND

# Why a scan or a reader stopped.
SCAN_END = 0
"""Stopped exactly at the end of the buffer: every byte was a whole frame."""
SCAN_SHORT = 1
"""The bytes at the stop offset are a header or frame cut off by the end of the buffer."""
SCAN_BAD_LEN = 2
"""The len field exceeds MAX_ENTRY_SIZE: not a frame."""
SCAN_BAD_CRC = 3
"""The CRC does not match: not a frame."""
SCAN_BAD_LSN = 4
"""A whole frame with a valid CRC but not the expected LSN (LSN 0, or not the previous LSN plus one)."""
SCAN_RUNNING = -1
"""FrameReader.status while the reader has not stopped yet."""

# What find_frame found.
FIND_NONE = 0
"""No plausible frame header starts before the last 15 bytes of the buffer."""
FIND_FRAME = 1
"""A whole, valid, continuing frame starts at the returned offset."""
FIND_SHORT = 2
"""A plausible header starts at the returned offset, but its frame runs past the buffer."""

# The same values for C code (an enum, not DEF: Cython 3 deprecates DEF).
cdef enum:
    _S_RUNNING = -1
    _S_END = 0
    _S_SHORT = 1
    _S_BAD_LEN = 2
    _S_BAD_CRC = 3
    _S_BAD_LSN = 4
    _F_NONE = 0
    _F_FRAME = 1
    _F_SHORT = 2
    _HDR = 16                 # the header layout below is fixed: len, crc, lsn
    _NOGIL_MIN = 64 * 1024    # release the GIL for C loops over more bytes than this

# find_frame's LSN window upper bound (see _Window).
cdef enum:
    _HI_NONNEG = 0
    _HI_NEG = 1
    _HI_ALWAYS = 2

if FRAME_HEADER_SIZE != _HDR:
    raise ImportError(f"walogs._frame is built for {_HDR}-byte frame headers, not {FRAME_HEADER_SIZE}")
cdef uint32_t _MAX_LEN = MAX_ENTRY_SIZE
if _MAX_LEN != MAX_ENTRY_SIZE:
    raise ImportError(f"MAX_ENTRY_SIZE {MAX_ENTRY_SIZE} does not fit a u32 len field")

_CRC_BACKEND = WALOGS_CRC_BACKEND.decode("ascii")
"""Which library computes the CRC in this build: "libdeflate" or "zlib" (diagnostics only)."""

cdef unsigned char _EMPTY_BYTE[1]
cdef const unsigned char *_EMPTY = _EMPTY_BYTE   # a valid pointer for empty buffers (never read)


# ---------------------------------------------------------------------------
# Little-endian access and the frame CRC: pure C, callable without the GIL.
# (Shifts rather than casts: no alignment or endianness assumption; compilers
# turn each into one load or store on little-endian machines.)

cdef inline uint32_t _le32(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _le64(const unsigned char *p) noexcept nogil:
    return (<uint64_t>_le32(p)) | ((<uint64_t>_le32(p + 4)) << 32)


cdef inline void _put32(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>v
    p[1] = <unsigned char>(v >> 8)
    p[2] = <unsigned char>(v >> 16)
    p[3] = <unsigned char>(v >> 24)


cdef inline void _put64(unsigned char *p, uint64_t v) noexcept nogil:
    _put32(p, <uint32_t>v)
    _put32(p + 4, <uint32_t>(v >> 32))


cdef inline uint32_t _frame_crc(const unsigned char *h, size_t length) noexcept nogil:
    # I1: the CRC covers len ++ lsn ++ data, skipping the crc field itself
    # (bytes 4..7); data follows the header directly, so lsn ++ data is one run.
    return walogs_crc32(walogs_crc32(0, h, 4), h + 8, 8 + length)


cdef inline void _build(unsigned char *dst, const unsigned char *src, size_t size, uint64_t lsn) noexcept nogil:
    # One frame at dst (16 + size bytes): header, data, then the CRC over the
    # bytes just written.
    _put32(dst, <uint32_t>size)
    _put64(dst + 8, lsn)
    if size:
        memcpy(dst + _HDR, src, size)
    _put32(dst + 4, _frame_crc(dst, size))


cdef inline int _examine(const unsigned char *p, Py_ssize_t n, Py_ssize_t off, uint64_t expect,
                         bint any_lsn, Py_ssize_t *total, uint64_t *lsn_out) noexcept nogil:
    # The spec's _examine: the status of the frame at p[off:n] (_S_RUNNING:
    # valid), with its total length and LSN when it is valid.
    cdef Py_ssize_t remaining = n - off
    cdef const unsigned char *h
    cdef uint32_t length
    cdef uint64_t lsn
    if remaining < _HDR:
        return _S_SHORT
    h = p + off
    length = _le32(h)
    if length > _MAX_LEN:
        return _S_BAD_LEN            # before length is used for anything
    if remaining - _HDR < <Py_ssize_t>length:
        return _S_SHORT              # never read past the buffer
    if _frame_crc(h, length) != _le32(h + 4):
        return _S_BAD_CRC            # I1
    lsn = _le64(h + 8)
    # I9, I12: LSN 0 is never written and LSNs count up by exactly one.
    if lsn == 0 or (not any_lsn and lsn != expect):
        return _S_BAD_LSN
    total[0] = _HDR + <Py_ssize_t>length
    lsn_out[0] = lsn
    return _S_RUNNING


cdef inline bint _big_frame_at(const unsigned char *p, Py_ssize_t n, Py_ssize_t off) noexcept nogil:
    # Whether the frame at off is worth releasing the GIL for (its CRC, its copy).
    return n - off >= _HDR and _le32(p + off) > _NOGIL_MIN


cdef int _scan_loop(const unsigned char *p, Py_ssize_t n, Py_ssize_t *off_io, uint64_t expect, bint any_lsn,
                    Py_ssize_t *count_out, uint64_t *first_out, uint64_t *last_out) noexcept nogil:
    # I5: validate frames from off_io on, stopping at the first non-frame.
    cdef Py_ssize_t off = off_io[0]
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t total = 0
    cdef uint64_t lsn = 0
    cdef uint64_t first = 0
    cdef uint64_t last = 0
    cdef int status = _S_END
    while off < n:
        status = _examine(p, n, off, expect, any_lsn, &total, &lsn)
        if status != _S_RUNNING:
            break
        if count == 0:
            first = lsn
        count += 1
        last = lsn
        # I12: the next frame must carry lsn + 1. After 2**64-1 this wraps to
        # 0, which no frame may carry: the spec's 2**64.
        expect = lsn + 1
        any_lsn = False
        off += total
    else:
        status = _S_END
    off_io[0] = off
    count_out[0] = count
    first_out[0] = first
    last_out[0] = last
    return status


# ---------------------------------------------------------------------------
# find_frame's LSN window, exact for any Python ints after_lsn and bad_offset.
#
# A header at o is a candidate when  after_lsn < lsn <= after_lsn + 1 + (o - bad_offset) // 16.
# With c = after_lsn + 1 and bad_offset = 16 * q + r (0 <= r < 16, Python's
# divmod) the upper bound is  k + s(o)  where  k = c - q  (a Python int, worked
# out once) and  s(o) = (o - r) // 16  which lies in [-1, PY_SSIZE_T_MAX // 16]
# for 0 <= o. k is sorted into: k >= 2**64 (the bound never binds: s >= -1),
# 0 <= k < 2**64 (kmag = k), -2**62 < k < 0 (kmag = -k); k <= -2**62 means
# no LSN fits anywhere and is handled before the loop.

cdef struct _Window:
    uint64_t lo       # lsn must be >= lo (0 when after_lsn < 0: LSN 0 passes, as in the spec)
    int hi_mode       # _HI_NONNEG, _HI_NEG or _HI_ALWAYS
    uint64_t kmag
    Py_ssize_t r


cdef inline bint _in_window(uint64_t lsn, Py_ssize_t o, const _Window *w) noexcept nogil:
    cdef Py_ssize_t s
    cdef int64_t h
    if lsn < w.lo:
        return False
    if w.hi_mode == _HI_ALWAYS:
        return True
    s = (o - w.r) // 16 if o >= w.r else -1     # floor division; o - r >= -15
    if w.hi_mode == _HI_NONNEG:
        if s >= 0:
            if w.kmag > UINT64_MAX - <uint64_t>s:
                return True                      # bound >= 2**64 > any lsn
            return lsn <= w.kmag + <uint64_t>s
        if w.kmag == 0:
            return False                         # bound is -1
        return lsn <= w.kmag - 1
    h = <int64_t>s - <int64_t>w.kmag             # kmag < 2**62, s < 2**59: no overflow
    if h < 0:
        return False
    return lsn <= <uint64_t>h


cdef Py_ssize_t _find_loop(const unsigned char *p, Py_ssize_t n, Py_ssize_t o, const _Window *w,
                           int *found) noexcept nogil:
    # P10: the first header at or after o that could continue the log.
    cdef Py_ssize_t end = n - _HDR
    cdef const unsigned char *h
    cdef uint32_t length
    while o <= end:
        h = p + o
        length = _le32(h)
        if length <= _MAX_LEN and _in_window(_le64(h + 8), o, w):
            if <Py_ssize_t>length > end - o:     # o + 16 + length > n
                found[0] = _F_SHORT
                return o
            if _frame_crc(h, length) == _le32(h + 4):
                found[0] = _F_FRAME
                return o
        o += 1
    found[0] = _F_NONE
    return o


# ---------------------------------------------------------------------------
# Argument handling: the spec's checks, in the spec's order, with its messages.

cdef object _entry_view(object data):
    """A flat byte view of ``data``, or TypeError for anything not bytes-like."""
    if type(data) is bytearray:
        return memoryview(data)     # always flat, contiguous, "B": skip the checks
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"an entry must be a bytes-like object, not {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        raise TypeError("an entry must be a C-contiguous bytes-like object")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


cdef object _byte_view(object buf):
    # The spec's _byte_view. A non-contiguous 1-D "B" view passes the spec's
    # _byte_view and fails at its first struct/zlib read; this raises that
    # BufferError up front (the typed memoryview would raise ValueError).
    if buf is None:
        raise TypeError("buffer must be a bytes-like object, not None")
    view = memoryview(buf)
    if view.format != "B" or view.ndim != 1:
        return view.cast("B")
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return view


cdef object _read_view(object buf, const unsigned char **p, Py_ssize_t *n):
    # The one way a function takes a buffer to read: bytes as they are, anything else
    # as the spec's _byte_view. Sets *p and *n; returns the object that keeps *p valid
    # and the buffer exported (pinned): hold it for as long as *p is used.
    cdef object view
    if type(buf) is bytes:
        p[0] = <const unsigned char *>PyBytes_AS_STRING(buf)
        n[0] = PyBytes_GET_SIZE(buf)
        return buf
    view = _byte_view(buf)
    n[0] = PyMemoryView_GET_BUFFER(view).len
    p[0] = <const unsigned char *>PyMemoryView_GET_BUFFER(view).buf if n[0] else _EMPTY
    return view


cdef Py_ssize_t _check_offset(object offset, Py_ssize_t size) except -1:
    # Checked as a Python int first: 2**70 is a ValueError, not an OverflowError.
    if not 0 <= offset <= size:
        raise ValueError(f"offset {offset} is outside the buffer of {size} bytes")
    return offset


cdef object _as_int(object value):
    return value if type(value) is int else PyNumber_Index(value)


cdef uint64_t _lsn_arg(object lsn) except 0:
    # I9: an LSN to write, 1..2**64-1, else the spec's ValueError.
    cdef uint64_t v = 0
    if type(lsn) is int:
        try:
            v = PyLong_AsUnsignedLongLong(lsn)   # OverflowError below 0 or above 2**64-1
        except OverflowError:
            v = 0
    else:
        if 1 <= lsn <= _MAX_LSN:
            v = PyLong_AsUnsignedLongLong(PyNumber_Index(lsn))
    if v == 0:
        raise ValueError(f"LSN {lsn} is out of range: LSNs run from 1 to 2**64-1")
    return v


cdef int _expect_arg(object expect_lsn, uint64_t *expect, bint *any_lsn) except -1:
    # expect_lsn 0 accepts any LSN >= 1. A value no u64 can equal (negative,
    # above 2**64-1) rejects every frame: expect 0 with any_lsn False, because
    # LSN 0 is itself rejected (I9).
    value = _as_int(expect_lsn)
    any_lsn[0] = value == 0
    expect[0] = PyLong_AsUnsignedLongLong(value) if 0 < value <= _MAX_LSN else 0
    return 0


cdef inline const unsigned char *_data_ptr(object view) noexcept:
    # The bytes of a bytes object or of a view made by _entry_view (flat, "B").
    if type(view) is bytes:
        return <const unsigned char *>PyBytes_AS_STRING(view)
    return <const unsigned char *>PyMemoryView_GET_BUFFER(view).buf


cdef inline Py_ssize_t _data_len(object view) noexcept:
    if type(view) is bytes:
        return PyBytes_GET_SIZE(view)
    return PyMemoryView_GET_BUFFER(view).len


cdef object _copy_out(const unsigned char *src, Py_ssize_t size):
    # A new bytes object holding src[:size]; the copy runs without the GIL
    # when it is large.
    cdef object out
    cdef unsigned char *dst
    if size <= _NOGIL_MIN:
        return PyBytes_FromStringAndSize(<const char *>src, size)
    out = PyBytes_FromStringAndSize(NULL, size)
    dst = <unsigned char *>PyBytes_AS_STRING(out)
    with nogil:
        memcpy(dst, src, <size_t>size)
    return out


# ---------------------------------------------------------------------------
# Public API

def encode(lsn: int, data: object) -> bytes:
    """Return the frame holding ``data`` with LSN ``lsn``.

    Raises TypeError if ``data`` is not bytes-like, EntryTooLargeError if it
    is longer than MAX_ENTRY_SIZE, ValueError if ``lsn`` is not in
    1..2**64-1.
    """
    cdef object view = data
    cdef const unsigned char *src
    cdef Py_ssize_t size
    cdef uint64_t v
    cdef object out
    cdef unsigned char *dst
    if type(data) is not bytes:
        view = _entry_view(data)
    src = _data_ptr(view)
    size = _data_len(view)
    if size > <Py_ssize_t>_MAX_LEN:
        raise EntryTooLargeError(size, MAX_ENTRY_SIZE)   # I7: nothing built
    v = _lsn_arg(lsn)
    out = PyBytes_FromStringAndSize(NULL, _HDR + size)
    dst = <unsigned char *>PyBytes_AS_STRING(out)
    if size > _NOGIL_MIN:
        with nogil:
            _build(dst, src, <size_t>size, v)
    else:
        _build(dst, src, <size_t>size, v)
    return out


cdef struct _Piece:
    const unsigned char *p
    size_t n


def encode_batch(first_lsn: int, items: Iterable[object]) -> bytes:
    """Return the frames of ``items`` back to back, LSNs counting up from ``first_lsn``.

    Every item is checked before any frame is built, so a bad item raises
    (TypeError, EntryTooLargeError) with nothing encoded. An empty ``items``
    gives ``b""``; one bytes-like object or str instead of an iterable of
    entries is a TypeError that says so.
    """
    cdef list views = []
    cdef object view
    cdef Py_ssize_t size, count, i
    cdef Py_ssize_t total = 0
    cdef uint64_t first
    cdef object out
    cdef unsigned char *dst
    cdef _Piece *pieces
    # Every item's type first, then every size, as the spec does (I7).
    for item in as_batch(items):
        views.append(item if type(item) is bytes else _entry_view(item))
    for view in views:
        size = _data_len(view)
        if size > <Py_ssize_t>_MAX_LEN:
            raise EntryTooLargeError(size, MAX_ENTRY_SIZE)
        total += _HDR + size
    count = len(views)
    if count == 0:
        return b""
    first = _lsn_arg(first_lsn)           # I9: the first LSN, then the last
    _lsn_arg(first_lsn + count - 1)       # (a Python int: 2**64 is a ValueError)
    # All frames go into one preallocated bytes object. The views list keeps
    # every source alive (bytes) or pinned (memoryviews) while the GIL is out.
    pieces = <_Piece *>PyMem_Malloc(<size_t>count * sizeof(_Piece))
    if pieces == NULL:
        raise MemoryError()
    try:
        for i in range(count):
            view = views[i]
            pieces[i].p = _data_ptr(view)
            pieces[i].n = <size_t>_data_len(view)
        out = PyBytes_FromStringAndSize(NULL, total)
        dst = <unsigned char *>PyBytes_AS_STRING(out)
        if total > _NOGIL_MIN:
            with nogil:
                _build_all(dst, pieces, count, first)
        else:
            _build_all(dst, pieces, count, first)
    finally:
        PyMem_Free(pieces)
    return out


cdef void _build_all(unsigned char *dst, const _Piece *pieces, Py_ssize_t count, uint64_t first) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        _build(dst, pieces[i].p, pieces[i].n, first + <uint64_t>i)   # no wrap: last LSN checked
        dst += _HDR + pieces[i].n


def scan(buf: object, offset: int = 0, expect_lsn: int = 0) -> tuple[int, int, int, int, int]:
    """Validate frames from ``offset`` on without building an object per frame.

    ``expect_lsn`` is the LSN the first frame must carry (0: any LSN >= 1);
    each later frame must carry the previous LSN plus one. Stops at the end of
    the buffer or at the first thing that is not such a frame.

    Returns ``(end_offset, count, first_lsn, last_lsn, status)``: the offset
    just past the last valid frame, how many valid frames there were, their
    first and last LSN (0 when none), and one of the SCAN_* reasons.
    """
    cdef const unsigned char *p
    cdef Py_ssize_t n
    cdef Py_ssize_t off, count = 0
    cdef uint64_t expect = 0, first = 0, last = 0
    cdef bint any_lsn = True
    cdef int status
    cdef object _keep = _read_view(buf, &p, &n)
    off = _check_offset(offset, n)
    _expect_arg(expect_lsn, &expect, &any_lsn)
    if n - off > _NOGIL_MIN:
        with nogil:
            status = _scan_loop(p, n, &off, expect, any_lsn, &count, &first, &last)
    else:
        status = _scan_loop(p, n, &off, expect, any_lsn, &count, &first, &last)
    return off, count, first, last, status


@cython.embedsignature(False)
@cython.auto_pickle(False)   # not picklable, like the spec's (which holds a memoryview)
cdef class FrameReader:
    # The first two lines are CPython's own text-signature header: the type's
    # __doc__ drops them and __text_signature__ keeps the part after the name,
    # so inspect.signature(FrameReader) works as on the fallback class (P8).
    # (Cython's embedsignature does not produce one for a cdef class.)
    """FrameReader(buf, offset=0, expect_lsn=0, skip_before=0)
--

Iterator of ``(lsn, data)`` over the frames of a buffer, one per ``next``.

    ``expect_lsn`` works as in :func:`scan`. Frames with an LSN below
    ``skip_before`` are validated but not returned. After the iterator is
    exhausted, ``status`` tells why (a SCAN_* value), ``offset`` is just past
    the last valid frame and ``last_lsn`` is that frame's LSN (or the
    ``expect_lsn - 1`` it started from, 0 if none). Once stopped, it lets go
    of ``buf`` (the buffer can be resized or freed).
    """

    cdef object _owner                    # what _read_view returned: keeps _p valid
    cdef const unsigned char *_p
    cdef Py_ssize_t _n
    cdef Py_ssize_t _offset
    cdef int _status
    cdef uint64_t _expect
    cdef bint _any_lsn
    cdef uint64_t _last
    cdef bint _have_last
    cdef object _last_before              # last_lsn until a frame was read
    cdef uint64_t _skip_before
    cdef bint _skip_all

    def __cinit__(self):
        # A subclass that skips __init__ gets an empty, finished reader.
        self._p = _EMPTY
        self._n = 0
        self._status = _S_END
        self._last_before = 0

    def __init__(self, buf: object, offset: int = 0, expect_lsn: int = 0, skip_before: int = 0) -> None:
        cdef const unsigned char *p
        cdef Py_ssize_t n
        cdef uint64_t expect = 0
        cdef bint any_lsn = True
        owner = _read_view(buf, &p, &n)
        off = _check_offset(offset, n)
        _expect_arg(expect_lsn, &expect, &any_lsn)
        expect_lsn = _as_int(expect_lsn)
        skip_before = _as_int(skip_before)
        # Nothing fails from here on: commit the new state at once.
        self._owner = owner
        self._p = p
        self._n = n
        self._offset = off
        self._status = _S_RUNNING
        self._expect = expect
        self._any_lsn = any_lsn
        self._have_last = False
        self._last = 0
        self._last_before = expect_lsn - 1 if expect_lsn else 0
        # A valid frame's LSN is >= 1: skip_before <= 1 skips nothing.
        self._skip_all = skip_before > _MAX_LSN
        self._skip_before = PyLong_AsUnsignedLongLong(skip_before) if 1 < skip_before <= _MAX_LSN else 0

    @property
    def offset(self):
        """Offset just past the last valid frame read so far."""
        return self._offset

    @property
    def status(self):
        """SCAN_RUNNING until the reader stops, then why it stopped (a SCAN_* value)."""
        return self._status

    @property
    def last_lsn(self):
        """LSN of the last valid frame read (or ``expect_lsn - 1``, 0 if none)."""
        if self._have_last:
            return self._last
        return self._last_before

    def __iter__(self):
        return self

    def __next__(self):
        cdef object item = self._next()
        if item is None:
            raise StopIteration
        return item

    @cython.final
    cdef void _release(self):
        # A stopped reader lets go of its buffer, as the spec's does (the
        # caller's local _keep holds it until _next returns).
        self._owner = None
        self._p = _EMPTY
        self._n = 0

    @cython.final
    cdef object _next(self):
        # __next__ without the StopIteration: the next (lsn, data), or None once
        # the reader has stopped. ChainReader calls it directly, in C.
        cdef int status
        cdef Py_ssize_t off
        cdef Py_ssize_t total = 0
        cdef uint64_t lsn = 0
        # A local reference keeps the buffer alive and exported while the GIL
        # is released below, even if another thread re-runs __init__ meanwhile.
        cdef object _keep = self._owner
        while self._status == _S_RUNNING:
            off = self._offset
            if off >= self._n:
                self._status = _S_END
                self._release()
                break
            if _big_frame_at(self._p, self._n, off):
                with nogil:
                    status = _examine(self._p, self._n, off, self._expect, self._any_lsn, &total, &lsn)
            else:
                status = _examine(self._p, self._n, off, self._expect, self._any_lsn, &total, &lsn)
            if status != _S_RUNNING:
                self._status = status   # I10: a bad frame is never yielded
                self._release()
                break
            self._offset = off + total
            self._last = lsn
            self._have_last = True
            self._expect = lsn + 1      # wraps to 0 after 2**64-1: matches nothing (I12)
            self._any_lsn = False
            if self._skip_all or lsn < self._skip_before:
                continue
            return lsn, _copy_out(self._p + off + _HDR, total - _HDR)
        return None


cdef object _END = object()    # "no frame": a reader or ``readers`` is exhausted


cdef inline object _pull(object reader):
    # The next frame of reader, or _END. A FrameReader is read in C; a subclass
    # through its own __next__, which it may override (as in the spec).
    cdef object item
    if type(reader) is FrameReader:
        item = (<FrameReader>reader)._next()
        return _END if item is None else item
    return next(reader, _END)


@cython.embedsignature(False)
@cython.auto_pickle(False)   # holds an iterator (usually a generator): not picklable
cdef class ChainReader:
    # The text-signature header again, as for FrameReader.
    """ChainReader(readers)
--

Iterator of ``(lsn, data)`` over the frames of each FrameReader from ``readers``, in turn.

    ``readers`` is an iterable of FrameReader objects, typically a generator.
    The next reader is asked for only when the current one is exhausted, so
    whatever produces them can look at the exhausted reader (``status``,
    ``offset``, ``last_lsn``) before it makes the next one: read on from
    where that one stopped, or end the chain. Each reader's frames come out
    exactly as its own ``next`` gives them.

    The chain ends when ``readers`` is exhausted, or when ``readers`` or a
    reader raises: the exception propagates and ``readers`` is closed (if it
    has a ``close`` method). An ended chain raises StopIteration. Anything
    but a FrameReader from ``readers`` is a TypeError. :meth:`close` ends
    the chain early. Like a generator, a chain cannot be re-entered while a
    ``next`` runs (ValueError).
    """

    cdef object _readers      # iterator of FrameReaders; None once the chain has ended
    cdef object _reader       # the reader being read; None before the first one
    cdef bint _running        # inside __next__: re-entry is a ValueError, as for generators

    def __init__(self, readers: Iterable[FrameReader]) -> None:
        self._readers = iter(readers)
        self._reader = None

    def __iter__(self):
        return self

    def __next__(self):
        # The hot path is one C call into the current reader per frame;
        # Python code (readers) runs only when a reader is exhausted.
        cdef object reader = self._reader
        cdef object item
        if self._running:
            raise ValueError("ChainReader already executing")
        self._running = True
        try:
            item = _END if reader is None else _pull(reader)
            if item is _END:
                item = self._refill()
        except BaseException:
            self._running = False
            self._end(True)
            raise
        self._running = False
        if item is _END:
            raise StopIteration
        return item

    cdef object _refill(self):
        # The spec's _refill: the first frame of the next readers, or _END when
        # readers is exhausted (which ends the chain).
        cdef object reader
        cdef object item
        while self._readers is not None:
            reader = next(self._readers, _END)
            if reader is _END:
                self._end(False)
                break
            if not isinstance(reader, FrameReader):
                raise TypeError(
                    f"ChainReader: readers must yield FrameReader objects, not {type(reader).__name__}"
                )
            self._reader = reader
            item = _pull(reader)
            if item is not _END:
                return item
        return _END

    cdef int _end(self, bint close) except -1:
        readers = self._readers
        self._readers = None
        self._reader = None
        if close and readers is not None:
            closer = getattr(readers, "close", None)
            if closer is not None:
                closer()
        return 0

    def close(self) -> None:
        """End the chain now and close ``readers`` (a generator runs its ``finally`` blocks)."""
        if self._running:
            raise ValueError("ChainReader already executing")
        self._end(True)


def decode(buf: object, offset: int = 0, expect_lsn: int = 0) -> tuple[list[tuple[int, bytes]], int, int]:
    """Decode frames from ``offset`` on: ``(frames, end_offset, status)``.

    ``frames`` is the list of ``(lsn, data)`` pairs before the first thing
    that is not a frame; the rest is as in :func:`scan`.
    """
    cdef const unsigned char *p
    cdef Py_ssize_t n
    cdef Py_ssize_t off
    cdef Py_ssize_t total = 0
    cdef uint64_t expect = 0, lsn = 0
    cdef bint any_lsn = True
    cdef int status = _S_END
    cdef list frames = []
    cdef object _keep = _read_view(buf, &p, &n)
    off = _check_offset(offset, n)
    _expect_arg(expect_lsn, &expect, &any_lsn)
    while off < n:
        if _big_frame_at(p, n, off):
            with nogil:
                status = _examine(p, n, off, expect, any_lsn, &total, &lsn)
        else:
            status = _examine(p, n, off, expect, any_lsn, &total, &lsn)
        if status != _S_RUNNING:
            break                       # I10: a bad frame is never returned
        frames.append((lsn, _copy_out(p + off + _HDR, total - _HDR)))
        expect = lsn + 1                # I12 (wraps to 0: matches nothing)
        any_lsn = False
        off += total
    else:
        status = _S_END
    return frames, off, status


def find_frame(buf: object, offset: int, after_lsn: int, bad_offset: int) -> tuple[int, int]:
    """Find the first frame at or after ``offset`` that could continue the log.

    A candidate is a header at any byte offset ``o`` whose len is at most
    MAX_ENTRY_SIZE and whose LSN lies in ``after_lsn + 1`` ..
    ``after_lsn + 1 + (o - bad_offset) // 16``: more frames than that cannot
    fit between the bad frame at ``bad_offset`` (relative to ``buf``, may be
    negative) and ``o``. The window keeps random bytes from passing for a
    frame (docs/format.md).

    Returns ``(o, FIND_FRAME)`` for the first whole candidate with a valid
    CRC, ``(o, FIND_SHORT)`` for a candidate whose frame runs past the
    buffer (the caller must read more to judge it), or ``(o, FIND_NONE)``
    where ``o`` is the first offset whose header the buffer could not hold.
    """
    cdef const unsigned char *p
    cdef Py_ssize_t n
    cdef Py_ssize_t off, o
    cdef _Window w
    cdef int found = _F_NONE
    cdef object _keep = _read_view(buf, &p, &n)
    off = _check_offset(offset, n)
    c = _as_int(after_lsn) + 1
    q, r = divmod(_as_int(bad_offset), _HDR)
    k = c - q
    if c > _MAX_LSN or k <= -(1 << 62):
        # No LSN can lie in the window at any offset: the spec's loop runs to
        # the end without a candidate.
        return max(n - _HDR + 1, off), FIND_NONE
    w.lo = PyLong_AsUnsignedLongLong(c) if c > 0 else 0
    w.r = r
    w.kmag = 0
    if k > _MAX_LSN:
        w.hi_mode = _HI_ALWAYS
    elif k >= 0:
        w.hi_mode = _HI_NONNEG
        w.kmag = PyLong_AsUnsignedLongLong(k)
    else:
        w.hi_mode = _HI_NEG
        w.kmag = PyLong_AsUnsignedLongLong(-k)
    if n - off > _NOGIL_MIN:
        with nogil:
            o = _find_loop(p, n, off, &w, &found)
    else:
        o = _find_loop(p, n, off, &w, &found)
    return o, found   # o >= offset: the spec's max(o, offset)


# ---------------------------------------------------------------------------
# The two records of VISIBLE (walogs._visible): the visible end, written after
# every write under sync="none", and the write in flight, stored before every
# write of frames. One C call each instead of struct packing and zlib in Python.
# walogs._format lays them out; C has the sizes and field offsets as constants
# for the nogil builders, and the magics from _format. Both are checked below,
# once, against _format's layouts.

cdef enum:
    _VIS_SIZE = 32
    _IF_SIZE = 48
    _IF_BOOT = 16
    _CRC_FROM = 8        # the CRC covers the rest of each record, after magic and crc

cdef unsigned char _VIS_MAGIC[4]
cdef unsigned char _IF_MAGIC[4]


cdef uint64_t _u64_field(str name, object value, uint64_t top) except? 0xFFFFFFFFFFFFFFFF:
    # Range-checked as a Python int first: the spec's ValueError, never OverflowError.
    value = _as_int(value)
    if not 0 <= value <= top:
        raise ValueError(f"{name} {value} is out of range 0..{top}")
    return PyLong_AsUnsignedLongLong(value)


cdef int _check_buffer(object candidate) except -1:
    # The twin's TypeErrors for what is not bytes-like, worded alike.
    if candidate is None:
        raise TypeError("buffer must be a bytes-like object, not None")
    if not PyObject_CheckBuffer(candidate):
        memoryview(candidate)   # raises the spec's TypeError, worded as memoryview words it
    return 0


cdef int _get_writable(object buf, Py_buffer *view, str func, str record, Py_ssize_t need) except -1:
    # The one way a pack function takes the buffer it writes a record into, with the
    # spec's checks and messages. The caller releases *view once the record is stored.
    cdef Py_ssize_t length
    _check_buffer(buf)
    PyObject_GetBuffer(buf, view, PyBUF_SIMPLE)
    length = view.len
    if view.readonly:
        PyBuffer_Release(view)
        raise TypeError(f"{func} needs a writable buffer, not a read-only {type(buf).__name__}")
    if length < need:
        PyBuffer_Release(view)
        raise ValueError(f"{record} needs {need} bytes, the buffer has {length}")
    return 0


def pack_visible(buf: object, state: int, seq: int, lsn: int, offset: int) -> None:
    """Write the visible-end record for ``(state, seq, lsn, offset)`` into ``buf[:VISIBLE_SIZE]``.

    The record is ``walogs._format.VISIBLE_RECORD`` (docs/format.md), its
    CRC-32 computed. ``buf`` must be a writable buffer of at least
    VISIBLE_SIZE bytes (TypeError, ValueError); state and seq must fit a
    u32, lsn and offset a u64 (ValueError). The writer publishes through
    this after every write under ``sync="none"``, so it is on the append path.
    """
    cdef Py_buffer view
    cdef uint64_t v_state = _u64_field("VISIBLE state", state, 0xFFFFFFFF)
    cdef uint64_t v_seq = _u64_field("VISIBLE seq", seq, 0xFFFFFFFF)
    cdef uint64_t v_lsn = _u64_field("VISIBLE lsn", lsn, UINT64_MAX)
    cdef uint64_t v_offset = _u64_field("VISIBLE offset", offset, UINT64_MAX)
    _get_writable(buf, &view, "pack_visible", "a VISIBLE record", _VIS_SIZE)
    try:
        build_visible(<unsigned char *>view.buf, <uint32_t>v_state, <uint32_t>v_seq, v_lsn, v_offset)
    finally:
        PyBuffer_Release(&view)


cdef void build_visible(unsigned char *dst, uint32_t state, uint32_t seq, uint64_t lsn, uint64_t offset) noexcept nogil:
    # Built whole, then stored with one memcpy: a reader racing the store
    # sees the old or the new record or a mix, and the CRC rejects a mix.
    cdef unsigned char record[_VIS_SIZE]
    memcpy(record, _VIS_MAGIC, 4)
    _put32(record + 8, state)
    _put32(record + 12, seq)
    _put64(record + 16, lsn)
    _put64(record + 24, offset)
    _put32(record + 4, walogs_crc32(0, record + _CRC_FROM, _VIS_SIZE - _CRC_FROM))
    memcpy(dst, record, _VIS_SIZE)


def pack_in_flight(buf: object, boot: object, seq: int, start: int, end: int) -> None:
    """Write the in-flight record for ``(boot, seq, start, end)`` into ``buf[:IN_FLIGHT_SIZE]``.

    The record is ``walogs._format.IN_FLIGHT_RECORD`` (docs/format.md), its
    CRC-32 computed. ``buf`` must be a writable buffer of at least
    IN_FLIGHT_SIZE bytes and ``boot`` a bytes-like object of exactly
    BOOT_ID_SIZE bytes (TypeError, ValueError); seq, start and end must fit
    a u64 (ValueError). The writer stores it before every write of frames,
    so it is on the append path.
    """
    cdef Py_buffer view
    cdef const unsigned char *boot_p
    cdef Py_ssize_t boot_n
    cdef unsigned char boot_id[_IF_BOOT]
    # Each field checked in turn, as the twin does, before either buffer.
    cdef uint64_t v_seq = _u64_field("in-flight seq", seq, UINT64_MAX)
    cdef uint64_t v_start = _u64_field("in-flight start", start, UINT64_MAX)
    cdef uint64_t v_end = _u64_field("in-flight end", end, UINT64_MAX)
    keep = _read_view(boot, &boot_p, &boot_n)
    if boot_n != _IF_BOOT:
        raise ValueError(f"a boot id has {_IF_BOOT} bytes, not {boot_n}")
    memcpy(boot_id, boot_p, _IF_BOOT)
    del keep
    _get_writable(buf, &view, "pack_in_flight", "an in-flight record", _IF_SIZE)
    try:
        build_in_flight(<unsigned char *>view.buf, boot_id, v_seq, v_start, v_end)
    finally:
        PyBuffer_Release(&view)


cdef void build_in_flight(unsigned char *dst, const unsigned char *boot, uint64_t seq, uint64_t start,
                          uint64_t end) noexcept nogil:
    # Built whole, then stored with one memcpy (as build_visible): a store cut by a kill
    # leaves a mix that the CRC rejects, and recovery then cuts nothing.
    cdef unsigned char record[_IF_SIZE]
    memcpy(record, _IF_MAGIC, 4)
    memcpy(record + 8, boot, _IF_BOOT)
    _put64(record + 24, seq)
    _put64(record + 32, start)
    _put64(record + 40, end)
    _put32(record + 4, walogs_crc32(0, record + _CRC_FROM, _IF_SIZE - _CRC_FROM))
    memcpy(dst, record, _IF_SIZE)


cdef int _check_records() except -1:
    # The C layouts above must be walogs._format's, byte for byte: one record of each kind.
    cdef unsigned char visible[_VIS_SIZE]
    cdef unsigned char in_flight[_IF_SIZE]
    if (VISIBLE_SIZE, IN_FLIGHT_SIZE, BOOT_ID_SIZE, RECORD_CRC_FROM) != (_VIS_SIZE, _IF_SIZE, _IF_BOOT, _CRC_FROM):
        raise ImportError("walogs._frame was built for other VISIBLE record sizes than walogs._format's: rebuild it")
    if len(VISIBLE_MAGIC) != 4 or len(IN_FLIGHT_MAGIC) != 4:
        raise ImportError("walogs._frame was built for 4-byte VISIBLE magics: rebuild it")
    memcpy(_VIS_MAGIC, <const char *>VISIBLE_MAGIC, 4)
    memcpy(_IF_MAGIC, <const char *>IN_FLIGHT_MAGIC, 4)
    fields = (2, 0x01020304, 0x05060708090A0B0C, 0x0D0E0F1011121314)
    build_visible(visible, fields[0], fields[1], fields[2], fields[3])
    expected = VISIBLE_RECORD.pack(VISIBLE_MAGIC, zlib.crc32(VISIBLE_BODY.pack(*fields)), *fields)
    boot = bytes(range(1, _IF_BOOT + 1))
    build_in_flight(in_flight, boot, fields[1], fields[2], fields[3])
    expected_in_flight = IN_FLIGHT_RECORD.pack(
        IN_FLIGHT_MAGIC, zlib.crc32(IN_FLIGHT_BODY.pack(boot, *fields[1:])), boot, *fields[1:])
    if visible[:_VIS_SIZE] != expected or in_flight[:_IF_SIZE] != expected_in_flight:
        raise ImportError("walogs._frame builds VISIBLE records unlike walogs._format's layout: rebuild it")
    return 0


_check_records()


# ---------------------------------------------------------------------------
# C API for walogs._writer (declared in _frame.pxd)

cdef void build_frame(unsigned char *dst, const unsigned char *src, size_t size, uint64_t lsn) noexcept nogil:
    """The frame of ``src[:size]`` with ``lsn`` at ``dst`` (16 + size bytes)."""
    _build(dst, src, size, lsn)


cdef object entry_view(object data):
    """``data`` itself if bytes, else a flat byte view; the codec's TypeError otherwise."""
    return data if type(data) is bytes else _entry_view(data)
