"""The compiled codec ``walogs._frame`` is an exact twin of ``walogs._frame_py`` (P8).

Both modules are imported directly, whatever WALOGS_PURE_PYTHON says
(``tests/_impls.py``). Differential tests (``same``) feed the same input to
both: outputs must be equal, and so must exception types and messages; the
others run once per codec through the ``codec`` fixture (ids ``py``, ``c``). Expected bytes come from outside walogs
(``tests/vectors.py``: literal hex, and struct + zlib.crc32), never from one
of the two codecs. All randomness is seeded with constants, and Hypothesis is
derandomized, so ``pytest -n auto`` workers collect and run the same tests.

Invariants: I1 (CRC over len ++ lsn ++ data), I5 (stop at the first bad
frame), I7 (entries above 16 MiB refused), I9 (LSN 0 reserved, 1..2**64-1),
I10 (a bad frame is never yielded), P8 (identical results), P10 (find_frame's
LSN window).
"""

from __future__ import annotations

import array
import ctypes
import importlib.machinery
import inspect
import mmap
import random
import struct
import zlib

import pytest
from _damage import flipped
from _impls import CODECS, cy, py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import VECTORS, frame  # tests/vectors.py: literal hex frames, struct + zlib

from walogs import errors as walogs_errors
from walogs._format import FRAME_HEADER_SIZE, MAX_ENTRY_SIZE
from walogs.errors import EntryTooLargeError

needs_cy = pytest.mark.skipif(cy is None, reason="walogs._frame is not built (WALOGS_PURE_PYTHON=1)")

MAX_LSN = 2**64 - 1
HDR = FRAME_HEADER_SIZE
STATUSES = ("SCAN_END", "SCAN_SHORT", "SCAN_BAD_LEN", "SCAN_BAD_CRC", "SCAN_BAD_LSN", "SCAN_RUNNING")
FINDS = ("FIND_NONE", "FIND_FRAME", "FIND_SHORT")
FUNCTIONS = ("encode", "encode_batch", "scan", "decode", "find_frame", "pack_visible", "pack_in_flight")


# ---------------------------------------------------------------------------
# Differential helpers


def outcome(fn):
    """What ``fn()`` did: ("ok", result) or ("raise", exception type, message)."""
    try:
        return ("ok", fn())
    except AssertionError:  # a failed check inside a helper is a test failure, not an outcome
        raise
    except Exception as exc:  # noqa: BLE001 - every other exception is part of the compared outcome
        return ("raise", type(exc), str(exc))


def same(fn, *args):
    """Run ``fn(module, *args)`` on both codecs and demand identical outcomes (P8).

    ``fn`` is a helper taking the module first, or the name of a module function.
    """
    call = (lambda m: getattr(m, fn)(*args)) if isinstance(fn, str) else (lambda m: fn(m, *args))
    results = [outcome(lambda m=m: call(m)) for m in CODECS.values()]
    for impl_id, result in zip(list(CODECS)[1:], results[1:]):
        assert result == results[0], f"{impl_id} differs from py: {result!r} != {results[0]!r}"
    return results[0]


def read_all(m, buf, *args):
    """Everything a FrameReader shows: state before, frames, state after, and after one more next()."""
    reader = m.FrameReader(buf, *args)
    assert iter(reader) is reader
    before = (reader.offset, reader.status, reader.last_lsn)
    frames = list(reader)
    after = (reader.offset, reader.status, reader.last_lsn)
    with pytest.raises(StopIteration):
        next(reader)
    assert (reader.offset, reader.status, reader.last_lsn) == after
    return before, frames, after


def flat(buf) -> bytes:
    return bytes(memoryview(buf).cast("B")) if not isinstance(buf, bytes) else buf


def assert_reencodes(raw: bytes, offset: int, frames, end: int) -> None:
    """I10 + round trip: every yielded frame is, byte for byte, the frame at its place in the buffer."""
    pos = offset
    for lsn, data in frames:
        encoded = frame(lsn, data)
        assert raw[pos : pos + len(encoded)] == encoded
        pos += len(encoded)
    assert pos == end


def check_all(buf, expects=(0,), offsets=(0,), skips=(), finds=(), recovery=True) -> None:
    """scan / decode / FrameReader / find_frame agree on ``buf`` in both codecs (P8)."""
    raw = flat(buf)
    for off in offsets:
        for exp in expects:
            s = same("scan", buf, off, exp)
            d = same("decode", buf, off, exp)
            r = same(read_all, buf, off, exp)
            if d[0] == "ok":
                frames, end, status = d[1]
                assert status != py.SCAN_RUNNING
                assert_reencodes(raw, off, frames, end)
                # The three views of one walk agree with each other too (I5).
                assert s[1] == (end, len(frames), frames[0][0] if frames else 0, frames[-1][0] if frames else 0, status)
                assert r[1][1] == frames and r[1][2][:2] == (end, status)
            for skip in skips:
                same(read_all, buf, off, exp, skip)
    for off, after, bad in finds:
        check_find(buf, off, after, bad)
    if recovery:
        # What recovery does after a bad frame: look for a continuing frame past it (P10).
        end, count, _first, last, status = py.scan(raw)
        if status not in (py.SCAN_END,):
            after = last if count else 0
            check_find(buf, min(end + 1, len(raw)), after, end)
            check_find(buf, end, after, end)


def check_find(buf, off, after, bad):
    res = same("find_frame", buf, off, after, bad)
    if res[0] == "ok":
        o, kind = res[1]
        raw = flat(buf)
        assert o >= off
        if kind == py.FIND_FRAME:
            # A FIND_FRAME is a whole frame with a valid CRC (I1) in the window (P10).
            length, _crc, lsn = struct.unpack_from("<IIQ", raw, o)
            assert raw[o : o + HDR + length] == frame(lsn, raw[o + HDR : o + HDR + length])
            assert after < lsn <= after + 1 + (o - bad) // HDR
        elif kind == py.FIND_SHORT:
            length = struct.unpack_from("<I", raw, o)[0]
            assert o + HDR + length > len(raw)
    return res


def frames_buf(first_lsn: int, sizes) -> bytes:
    return b"".join(
        frame(first_lsn + i, bytes((i * 7 + j) & 0xFF for j in range(size))) for i, size in enumerate(sizes)
    )


# A small multi-frame buffer: LSNs 10..14, empty, tiny, header-sized and larger entries.
SMALL_SIZES = (0, 1, 5, 16, 40)
SMALL = frames_buf(10, SMALL_SIZES)
SMALL_BOUNDARIES = [0]
for _size in SMALL_SIZES:
    SMALL_BOUNDARIES.append(SMALL_BOUNDARIES[-1] + HDR + _size)


# ---------------------------------------------------------------------------
# The module surface


def test_compiled_module_is_really_compiled():
    if cy is None:
        pytest.skip("WALOGS_PURE_PYTHON=1 and walogs._frame is not built")
    assert cy.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), cy.__file__
    assert cy._CRC_BACKEND in ("libdeflate", "zlib")


@pytest.mark.parametrize("name", STATUSES + FINDS)
def test_constants_identical(name):
    assert getattr(py, name) == getattr(cy or py, name)
    assert type(getattr(cy or py, name)) is int


def test_values_of_constants():
    assert (py.SCAN_END, py.SCAN_SHORT, py.SCAN_BAD_LEN, py.SCAN_BAD_CRC, py.SCAN_BAD_LSN, py.SCAN_RUNNING) == (
        0,
        1,
        2,
        3,
        4,
        -1,
    )
    assert (py.FIND_NONE, py.FIND_FRAME, py.FIND_SHORT) == (0, 1, 2)


@needs_cy
def test_one_error_hierarchy():
    # Both raise the very same class, from walogs.errors.
    assert cy.EntryTooLargeError is py.EntryTooLargeError is EntryTooLargeError
    assert cy.MAX_ENTRY_SIZE == py.MAX_ENTRY_SIZE == MAX_ENTRY_SIZE
    assert cy.FRAME_HEADER_SIZE == py.FRAME_HEADER_SIZE == HDR


@needs_cy
@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_signatures_and_docs_identical(name):
    # embedsignature + binding give the compiled functions real signatures (P8).
    assert inspect.signature(getattr(cy, name)) == inspect.signature(getattr(py, name))
    doc = getattr(cy, name).__doc__
    first, rest = doc.split("\n", 1)
    assert first.startswith(name + "(")  # the embedded signature line
    assert inspect.cleandoc(rest) == inspect.cleandoc(getattr(py, name).__doc__)


@needs_cy
def test_frame_reader_signature_and_doc_identical():
    # A cdef class gets its signature from a CPython text signature (no annotations).
    def shape(sig):
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]

    assert shape(inspect.signature(cy.FrameReader)) == shape(inspect.signature(py.FrameReader))
    assert inspect.cleandoc(cy.FrameReader.__doc__) == inspect.cleandoc(py.FrameReader.__doc__)
    for attr in ("offset", "status", "last_lsn"):
        assert hasattr(cy.FrameReader, attr)


@needs_cy
def test_chain_reader_signature_and_doc_identical():
    def shape(sig):
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]

    assert shape(inspect.signature(cy.ChainReader)) == shape(inspect.signature(py.ChainReader)) == [
        ("readers", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty)
    ]
    assert inspect.cleandoc(cy.ChainReader.__doc__) == inspect.cleandoc(py.ChainReader.__doc__)
    assert shape(inspect.signature(cy.ChainReader.close)) == shape(inspect.signature(py.ChainReader.close))
    assert cy.ChainReader.close.__doc__ == py.ChainReader.close.__doc__


# ---------------------------------------------------------------------------
# Encoding (I1, I7, I9)


@pytest.mark.parametrize("lsn,data,hexframe", VECTORS)
def test_literal_vectors(codec, lsn, data, hexframe):
    """I1: docs/format.md's vector and the other literal frames, in both codecs."""
    expected = bytes.fromhex(hexframe)
    assert codec.encode(lsn, data) == expected
    assert frame(lsn, data) == expected  # the vector file agrees with struct + zlib
    assert codec.decode(expected) == ([(lsn, data)], len(expected), codec.SCAN_END)
    assert codec.scan(expected) == (len(expected), 1, lsn, lsn, codec.SCAN_END)


def test_format_md_vector(codec):
    # docs/format.md, verbatim: crc = 0x10e5952f.
    expected = bytes.fromhex("050000002f95e510010000000000000068656c6c6f")
    assert zlib.crc32(bytes.fromhex("050000000100000000000000") + b"hello") == 0x10E5952F
    assert codec.encode(1, b"hello") == expected


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4095, 65536, 65537, 1 << 20, MAX_ENTRY_SIZE])
def test_frames_built_independently(size, codec):
    """I1, I7: both codecs produce struct + zlib.crc32 frames for every size up to the maximum."""
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    lsn = 0x1122334455667788 + size
    expected = frame(lsn, data)
    assert codec.encode(lsn, data) == expected
    assert codec.encode(lsn, bytearray(data)) == expected
    assert codec.scan(expected) == (len(expected), 1, lsn, lsn, codec.SCAN_END)
    assert codec.decode(expected, 0, lsn) == ([(lsn, data)], len(expected), codec.SCAN_END)
    assert list(codec.FrameReader(expected)) == [(lsn, data)]
    assert codec.find_frame(expected, 0, lsn - 1, 0) == (0, codec.FIND_FRAME)
    # One byte short: a torn tail, never a read past the end (I5).
    assert codec.scan(expected[:-1]) == (0, 0, 0, 0, codec.SCAN_SHORT)
    if size:
        assert codec.find_frame(expected[:-1], 0, lsn - 1, 0) == (0, codec.FIND_SHORT)
    else:
        assert codec.find_frame(expected[:-1], 0, lsn - 1, 0) == (0, codec.FIND_NONE)


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
def test_entry_too_large(make):
    """I7: MAX_ENTRY_SIZE + 1 is refused with .size and .max, before the LSN is even looked at."""
    big = make(bytes(MAX_ENTRY_SIZE + 1))
    for lsn in (1, 0):
        res = same("encode", lsn, big)
        assert res[:2] == ("raise", EntryTooLargeError)
    for m in CODECS.values():
        with pytest.raises(EntryTooLargeError) as info:
            m.encode(1, big)
        assert info.value.size == MAX_ENTRY_SIZE + 1
        assert info.value.max == MAX_ENTRY_SIZE
        assert isinstance(info.value, ValueError)
        with pytest.raises(EntryTooLargeError) as info:
            m.encode_batch(1, [b"ok", big])
        assert info.value.size == MAX_ENTRY_SIZE + 1


@pytest.mark.parametrize(
    "bad",
    ["text", 7, None, [1, 2], {"a": 1}, 1.5, object(), memoryview(b"abcdef")[::2]],
    ids=["str", "int", "None", "list", "dict", "float", "object", "noncontiguous"],
)
def test_entry_not_bytes_like(bad):
    """Non-bytes-like entries: TypeError with the same message in both codecs."""
    res = same("encode", 1, bad)
    assert res[:2] == ("raise", TypeError)
    res = same("encode_batch", 1, [b"fine", bad])
    assert res[:2] == ("raise", TypeError)


def _entry_variants():
    payload = bytes(range(40))
    anon = mmap.mmap(-1, len(payload))
    anon.write(payload)
    return [
        ("bytes", payload),
        ("bytearray", bytearray(payload)),
        ("memoryview", memoryview(payload)),
        ("memoryview-slice", memoryview(b"xx" + payload + b"yy")[2:-2]),
        ("memoryview-2d", memoryview(payload).cast("B", (4, 10))),
        ("memoryview-c", memoryview(payload).cast("c")),
        ("array-i", array.array("i", payload)),
        ("array-d", array.array("d", payload)),
        ("ctypes", (ctypes.c_int32 * 10).from_buffer_copy(payload)),
        ("mmap", anon),
        ("empty-bytearray", bytearray()),
        ("empty-memoryview", memoryview(b"")),
    ]


@pytest.mark.parametrize("name,data", _entry_variants(), ids=[n for n, _ in _entry_variants()])
def test_bytes_like_entries(name, data):
    """Any C-contiguous bytes-like entry encodes exactly as its bytes would."""
    expected = frame(3, memoryview(data).tobytes())
    res = same("encode", 3, data)
    assert res == ("ok", expected)
    res = same("encode_batch", 3, [data, data])
    assert res[0] == "ok" and res[1] == expected + frame(4, expected[HDR:])


@pytest.mark.parametrize("lsn", [0, -1, 2**64, 2**64 + 1, 2**100, -(2**100), 1, 2, 2**63, MAX_LSN, True])
def test_lsn_range(lsn):
    """I9: LSNs run from 1 to 2**64-1; anything else is the same ValueError in both (never OverflowError)."""
    res = same("encode", lsn, b"x")
    if 1 <= lsn <= MAX_LSN:
        assert res == ("ok", frame(lsn, b"x"))
    else:
        assert res[:2] == ("raise", ValueError)
        assert res[2] == f"LSN {lsn} is out of range: LSNs run from 1 to 2**64-1"


def test_encode_batch_matches_encode(codec):
    items = [b"", b"a", bytearray(b"bc"), memoryview(b"def"), bytes(100), array.array("H", [1, 2, 3])]
    expected = b"".join(frame(50 + i, memoryview(x).tobytes()) for i, x in enumerate(items))
    assert codec.encode_batch(50, items) == expected
    assert codec.encode_batch(50, iter(items)) == expected  # any iterable, consumed once
    assert codec.encode_batch(50, (x for x in items)) == expected
    top = MAX_LSN - len(items) + 1  # the last entry gets LSN 2**64-1 exactly
    assert codec.encode_batch(top, items) == b"".join(
        frame(top + i, memoryview(x).tobytes()) for i, x in enumerate(items)
    )


@pytest.mark.parametrize(
    "first,items",
    [
        (1, [b"ok", b"ok", "bad"]),  # bad item last: nothing encoded
        (1, ["bad", bytes(MAX_ENTRY_SIZE + 1)]),  # types are checked before sizes
        (1, [bytes(MAX_ENTRY_SIZE + 1), "bad"]),
        (1, [b"x", bytes(MAX_ENTRY_SIZE + 1)]),
        (0, [b"x", bytes(MAX_ENTRY_SIZE + 1)]),  # sizes are checked before the LSN
        (0, [b"x"]),
        (MAX_LSN - 1, [b"a", b"b", b"c"]),  # the last LSN would be 2**64
        (MAX_LSN, [b"a"]),
        (2**70, [b"a"]),
        (-1, [b"a"]),
        (0, []),  # nothing to encode: no LSN check
        (2**80, ()),
        (1, []),
    ],
)
def test_encode_batch_validates_everything_first(first, items):
    """I7, I9: a bad item or LSN anywhere raises before any frame is built, identically in both."""
    res = same("encode_batch", first, list(items))
    if res[0] == "ok":
        assert res[1] == b"".join(frame(first + i, bytes(x)) for i, x in enumerate(items))


def test_encode_batch_large_and_mixed():
    """A batch past the GIL-release threshold, every entry type mixed, equals its frames one by one."""
    rnd = random.Random(0xB47C)
    items = []
    for i in range(1200):
        data = rnd.randbytes(rnd.choice([0, 1, 17, 100, 300]))
        items.append([bytes, bytearray, memoryview][i % 3](data))
    items.append(bytes(70000))
    res = same("encode_batch", 1000, items)
    assert res[1] == b"".join(frame(1000 + i, bytes(x)) for i, x in enumerate(items))


# ---------------------------------------------------------------------------
# Reading: clean logs, damage, edges (I5, I9, I10, P8)


def test_clean_logs():
    for first in (1, 10, 2**32 - 2, MAX_LSN - 4):
        buf = frames_buf(first, SMALL_SIZES)
        check_all(buf, expects=(0, first, first + 1, first - 1), offsets=(0, HDR), skips=(0, first + 2, MAX_LSN))


def test_empty_buffer():
    for m in CODECS.values():
        assert m.scan(b"") == (0, 0, 0, 0, m.SCAN_END)
        assert m.decode(b"") == ([], 0, m.SCAN_END)
        assert m.find_frame(b"", 0, 0, 0) == (0, m.FIND_NONE)
    check_all(b"", expects=(0, 5), skips=(3,), finds=[(0, 0, 0), (0, -5, -100)])
    check_all(bytearray(), finds=[(0, 0, 0)])


def test_every_truncation_point():
    """I5, P8: each prefix of a multi-frame buffer stops at the same place in both codecs."""
    for cut in range(len(SMALL) + 1):
        buf = SMALL[:cut]
        offsets = [b for b in SMALL_BOUNDARIES if b <= cut] + [min(cut, 3)]
        check_all(
            buf, expects=(0, 10, 11), offsets=offsets, skips=(12,), finds=[(0, 9, 0), (1, 9, 0), (min(17, cut), 10, 16)]
        )


def test_every_single_bit_flip():
    """I1, I5, I10, P8, P10: flip each bit of a small log (exhaustively) and compare everything."""
    for byte in range(len(SMALL)):
        for bit in range(8):
            damaged = flipped(SMALL, byte, bit)
            check_all(damaged, expects=(0, 10, 11), offsets=(0, 16, 33), skips=(12,), finds=[(1, 9, 0)])


def test_random_garbage():
    """P8, P10: seeded random bytes, and random bytes with real frames spliced in."""
    rnd = random.Random(0x5EED)
    for _ in range(250):
        n = rnd.randrange(0, 400)
        buf = bytearray(rnd.randbytes(n))
        for _ in range(rnd.randrange(0, 4)):
            lsn = rnd.choice([1, 2, 5, 6, 7, 1000, MAX_LSN, 0])
            f = frame(lsn, rnd.randbytes(rnd.randrange(0, 40)))
            at = rnd.randrange(0, len(buf) + 1)
            buf[at:at] = f
        buf = bytes(buf)
        finds = [
            (
                rnd.randrange(0, len(buf) + 1),
                rnd.choice([0, 4, 5, 6, 999, MAX_LSN - 1, -1]),
                rnd.randrange(-40, len(buf) + 1),
            )
            for _ in range(3)
        ]
        check_all(buf, expects=(0, 1, 6), offsets=(0, rnd.randrange(0, len(buf) + 1)), skips=(5,), finds=finds)


@pytest.mark.parametrize("zeros", [0, 1, 8, 15, 16, 17, 31, 32, 100, 4096])
def test_zero_filled_tail(zeros):
    """A tail of zeros (unwritten pages) is SHORT or BAD_CRC, never a frame, in both (I5, P10)."""
    buf = SMALL + bytes(zeros)
    check_all(buf, expects=(0, 10), finds=[(len(SMALL), 14, len(SMALL))])
    res = same("scan", buf)
    assert res[1][:4] == (len(SMALL), 5, 10, 14)


@pytest.mark.parametrize(
    "header",
    [
        struct.pack("<IIQ", 0xFFFFFFFF, 0, 15),
        struct.pack("<IIQ", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF),
        struct.pack("<IIQ", MAX_ENTRY_SIZE + 1, 0, 15),
        struct.pack("<IIQ", MAX_ENTRY_SIZE, 0, 15),  # plausible len, data missing: SHORT, no allocation
        struct.pack("<IIQ", 0x7FFFFFFF, 0, 15),
        b"\xff" * 16,
        b"\xff" * 15,
    ],
    ids=["ffff-len", "all-ff", "max+1", "max-short", "2g", "ff16", "ff15"],
)
def test_huge_len_headers(header):
    """A len past the maximum is BAD_LEN, a plausible one past the end is SHORT; nothing is allocated."""
    for buf in (header, SMALL + header, SMALL + header + frame(15, b"after")):
        check_all(buf, expects=(0, 10), finds=[(0, 9, 0), (len(SMALL), 14, len(SMALL))])


def test_lsn_jumps():
    """I9, I12: a valid frame with the wrong LSN (a jump, a repeat, LSN 0, past 2**64-1) is BAD_LSN."""
    cases = [
        frame(1, b"a") + frame(2, b"b") + frame(4, b"c"),
        frame(1, b"a") + frame(2, b"b") + frame(2, b"c"),
        frame(5, b"a") + frame(4, b"b"),
        frame(0, b"zero"),
        frame(1, b"a") + frame(0, b"zero"),
        frame(MAX_LSN, b"last") + frame(0, b"wrapped"),
        frame(MAX_LSN, b"last") + frame(1, b"wrapped"),
        frame(MAX_LSN - 1, b"a") + frame(MAX_LSN, b"b"),
    ]
    for buf in cases:
        check_all(buf, expects=(0, 1, 5, MAX_LSN, MAX_LSN - 1), skips=(2,), finds=[(1, 1, 0), (1, 0, 0), (0, -1, 0)])
    for m in CODECS.values():
        assert m.scan(cases[0])[1:] == (2, 1, 2, m.SCAN_BAD_LSN)
        assert m.scan(cases[3]) == (0, 0, 0, 0, m.SCAN_BAD_LSN)
        assert m.scan(cases[5])[1:] == (1, MAX_LSN, MAX_LSN, m.SCAN_BAD_LSN)


EXPECTS = [0, 1, 9, 10, 11, 14, 15, -1, -(2**70), MAX_LSN, 2**64, 2**70]
SKIPS = [0, 1, -5, 10, 11, 12, 14, 15, MAX_LSN, 2**64, 2**80, -(2**80)]


def test_expect_lsn_and_skip_before_variants():
    """expect_lsn and skip_before, including values no u64 can hold, behave identically."""
    for buf in (SMALL, SMALL[:-3], b"", frames_buf(1, SMALL_SIZES), frame(MAX_LSN, b"x"), frame(MAX_LSN - 1, b"") * 2):
        check_all(buf, expects=EXPECTS, skips=SKIPS)
    for m in CODECS.values():
        # last_lsn before any frame is expect_lsn - 1 (0 for 0), in Python arithmetic.
        for exp in EXPECTS:
            reader = m.FrameReader(b"", 0, exp)
            assert reader.last_lsn == (exp - 1 if exp else 0)
            assert reader.status == m.SCAN_RUNNING and reader.offset == 0


def test_offsets():
    """Every offset inside the buffer, and out-of-range ones (same ValueError, never OverflowError)."""
    check_all(SMALL, expects=(0, 11), offsets=range(len(SMALL) + 1), recovery=False)
    for off in (-1, len(SMALL) + 1, 2**63, 2**64, 2**70, -(2**70)):
        for call in (
            ("scan", SMALL, off),
            ("decode", SMALL, off),
            ("FrameReader", SMALL, off),
            ("find_frame", SMALL, off, 0, 0),
        ):
            res = same(*call)
            assert res == ("raise", ValueError, f"offset {off} is outside the buffer of {len(SMALL)} bytes")
    for off in range(len(SMALL) + 1):
        check_find(SMALL, off, 9, 0)
        check_find(SMALL, off, 12, off)


def test_buffer_types():
    """bytes, bytearray, memoryview (and slices), mmap, array, ctypes: the same results (P8)."""
    anon = mmap.mmap(-1, len(SMALL))
    anon.write(SMALL)
    padded = b"\x01" * 7 + SMALL + b"\x02" * 9
    variants = [
        SMALL,
        bytearray(SMALL),
        memoryview(SMALL),
        memoryview(padded)[7:-9],
        anon,
        array.array("B", SMALL),
        memoryview(SMALL[:140]).cast("i"),
        array.array("I", SMALL[:140]),
        (ctypes.c_uint8 * len(SMALL)).from_buffer_copy(SMALL),
    ]
    for buf in variants:
        check_all(buf, expects=(0, 10), skips=(12,), finds=[(1, 9, 0)])
    anon.close()


@pytest.mark.parametrize(
    "buf",
    [None, "text", 12, 1.5, [1, 2], memoryview(SMALL)[::2], memoryview(SMALL[:20])[::2]],
    ids=["None", "str", "int", "float", "list", "noncontiguous", "noncontiguous-short"],
)
def test_bad_buffers(buf):
    """Not a buffer: the same exception type (and message) from every reading function."""
    for call in (("scan", buf), ("decode", buf), (read_all, buf), ("find_frame", buf, 0, 0, 0)):
        res = same(*call)
        assert res[:2] == ("raise", BufferError if isinstance(buf, memoryview) else TypeError)


def test_reader_pins_a_bytearray(codec):
    """While a reader holds a bytearray it cannot be resized under it (both hold a buffer export)."""
    ba = bytearray(SMALL)
    reader = codec.FrameReader(ba)
    assert next(reader) == (10, b"")
    with pytest.raises(BufferError):
        ba.extend(b"more")
    assert [lsn for lsn, _ in reader] == [11, 12, 13, 14]
    del reader
    ba.extend(b"more")


@pytest.mark.parametrize("damage", ["none", "crc", "short"])
def test_a_stopped_reader_lets_go_of_its_buffer(damage):
    """P9: a reader that has stopped (end, bad frame or cut frame) holds no buffer export any more,
    so an exhausted reader kept around (a ChainReader keeps its last one) pins no read buffer.
    Its results stay readable and identical in both codecs (P8)."""
    results = []
    for m in CODECS.values():
        ba = bytearray(SMALL)
        if damage == "crc":
            ba[-1] ^= 0x10
        elif damage == "short":
            del ba[-1]
        reader = m.FrameReader(ba, 0, 10)
        got = list(reader)
        ba.extend(b"more")  # BufferError while the reader still holds ba
        ba.clear()
        results.append((got, reader.status, reader.offset, reader.last_lsn, next(reader, None)))
    assert results[0][1] == {"none": py.SCAN_END, "crc": py.SCAN_BAD_CRC, "short": py.SCAN_SHORT}[damage]
    assert all(r == results[0] for r in results)


def test_large_buffers_release_the_gil_correctly():
    """Past 64 KiB the C loops run without the GIL: same results, including damage near the end."""
    rnd = random.Random(0x64)
    entries = [rnd.randbytes(rnd.randrange(0, 200)) for _ in range(1500)]
    clean = b"".join(frame(1 + i, e) for i, e in enumerate(entries))
    assert len(clean) > 128 * 1024
    damaged = flipped(clean, len(clean) - 500)
    big = frame(7, rnd.randbytes(300_000))
    garbage_then_frame = rnd.randbytes(100_000) + frame(42, b"found")
    for buf in (clean, damaged, bytearray(damaged), big, big[:-1], big + big[:1000], garbage_then_frame):
        check_all(buf, expects=(0, 1, 7), finds=[(0, 41, 0), (0, 6, -1000)])
    for m in CODECS.values():
        assert m.find_frame(garbage_then_frame, 0, 41, 0) == (100_000, m.FIND_FRAME)


# ---------------------------------------------------------------------------
# ChainReader: FrameReaders one after another, each made after the last one stopped (P8)


def run_chain(m, steps, close_after=None):
    """Everything a ChainReader over a scripted ``readers`` generator shows, as comparable data.

    Steps: ("reader", *FrameReader args) yields a FrameReader and, once resumed,
    logs what the exhausted reader says (offset, status, last_lsn); ("raise",
    type, message) raises; ("yield", obj) yields obj; ("next",) and ("close",)
    re-enter the chain from inside ``readers``. The generator's ``finally`` is
    logged too, so the log shows when ``readers`` was closed.
    """
    log = []
    chain = None

    def readers():
        try:
            for step in steps:
                kind = step[0]
                if kind == "reader":
                    reader = m.FrameReader(*step[1:])
                    yield reader
                    log.append(("stopped", reader.offset, reader.status, reader.last_lsn))
                elif kind == "raise":
                    raise step[1](step[2])
                elif kind == "yield":
                    yield step[1]
                elif kind == "next":
                    log.append(("inner next", outcome(lambda: next(chain))))
                else:
                    log.append(("inner close", outcome(chain.close)))
        finally:
            log.append("finally")

    chain = m.ChainReader(readers())
    assert iter(chain) is chain
    got = []
    while True:
        res = outcome(lambda: next(chain))
        got.append(res)
        if res[0] == "raise":
            break
        if close_after is not None and len(got) == close_after:
            log.append(("close", outcome(chain.close)))
    got.append(outcome(lambda: next(chain)))  # an ended chain stays ended
    log.append(("close again", outcome(chain.close)))
    return got, log


BIG = frame(7, bytes(range(256)) * 400)  # 100 KiB: the readers release the GIL for it
CHAIN_STEPS = [
    ("reader", SMALL),
    ("reader", b""),
    ("reader", frames_buf(15, (3, 0, 7)), 0, 15),
    ("reader", frames_buf(18, (1, 2)), 0, 17),  # wrong expect_lsn: BAD_LSN at once, nothing yielded
    ("reader", SMALL, 16, 11, 13),  # offset, expect_lsn, skip_before
    ("reader", SMALL[:40] + b"\xff" + SMALL[41:], 0, 10),  # damage: stops before it (I10)
    ("reader", SMALL[:-3]),  # torn: SHORT
    ("reader", bytearray(SMALL), 0, 0, MAX_LSN),  # every frame skipped
    ("reader", memoryview(BIG + BIG[:20])),
    ("reader", BIG, 0, 0, 8),
]


def test_chain_reader_reads_each_reader_to_its_end_in_turn():
    """P8, I10: the frames of every reader in order, each reader's stop seen before the next is made."""
    got, log = same(run_chain, CHAIN_STEPS)[1]
    expected_frames, expected_log = [], []
    for step in CHAIN_STEPS:
        reader = py.FrameReader(*step[1:])
        expected_frames += [("ok", f) for f in reader]
        expected_log.append(("stopped", reader.offset, reader.status, reader.last_lsn))
    assert got == expected_frames + [("raise", StopIteration, "")] * 2
    assert log == expected_log + ["finally", ("close again", ("ok", None))]
    assert expected_log[3][2] == py.SCAN_BAD_LSN and expected_log[6][2] == py.SCAN_SHORT


def test_chain_reader_over_nothing():
    for m in CODECS.values():
        assert list(m.ChainReader([])) == []
        assert list(m.ChainReader(iter([m.FrameReader(b""), m.FrameReader(SMALL, len(SMALL))]))) == []
        assert list(m.ChainReader(m.FrameReader(SMALL, b) for b in SMALL_BOUNDARIES[-2:])) == [(14, SMALL[-40:])]
    res = same(lambda m: m.ChainReader(None))
    assert res[:2] == ("raise", TypeError)
    res = same(lambda m: m.ChainReader(5))
    assert res[:2] == ("raise", TypeError)


@pytest.mark.parametrize("where", range(4))
@pytest.mark.parametrize(
    "exc", [OSError, KeyError, walogs_errors.WalCorruptError, walogs_errors.LsnOutOfRangeError, StopIteration]
)
def test_chain_reader_propagates_what_readers_raises(where, exc):
    """Frames before the exception, then the exception itself, then nothing: the chain has ended
    and ``readers`` has finished (its finally ran), in both codecs alike."""
    steps = [("reader", SMALL), ("reader", frames_buf(15, (1, 2)), 0, 15), ("reader", SMALL)]
    steps.insert(where, ("raise", exc, f"boom at {where}"))
    got, log = same(run_chain, steps)[1]
    if exc is StopIteration:  # inside a generator it becomes RuntimeError (PEP 479)
        assert got[-2] == ("raise", RuntimeError, "generator raised StopIteration")
    else:
        assert got[-2][:2] == ("raise", exc)
    assert got[-1] == ("raise", StopIteration, "")
    assert len(got) - 2 == [0, 5, 7, 12][where]
    assert log[-2:] == ["finally", ("close again", ("ok", None))]


def one_reader_then(codec, log: list, exc=None):
    """A ``readers`` generator: one FrameReader over SMALL, then ``exc`` raised if given; its
    ``finally`` is logged, so the log shows when the chain closed it."""
    try:
        yield codec.FrameReader(SMALL)
        if exc is not None:
            raise exc
    finally:
        log.append("finally")


def test_chain_reader_exceptions_carry_no_stop_iteration_context(codec):
    """An error from readers, raised when a reader ran out, is not "during handling of StopIteration"."""
    with pytest.raises(walogs_errors.WalCorruptError) as info:
        list(codec.ChainReader(one_reader_then(codec, [], walogs_errors.WalCorruptError("damaged"))))
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_chain_reader_ends_on_base_exceptions_too(codec):
    log = []
    chain = codec.ChainReader(one_reader_then(codec, log, KeyboardInterrupt))
    assert len([next(chain) for _ in range(5)]) == 5
    with pytest.raises(KeyboardInterrupt):
        next(chain)
    assert log == ["finally"]
    with pytest.raises(StopIteration):
        next(chain)


@pytest.mark.parametrize(
    "bad",
    [None, b"", 5, [(1, b"x")], iter([(1, b"x")]), "FrameReader"],
    ids=["None", "bytes", "int", "list", "iterator", "str"],
)
def test_chain_reader_refuses_anything_but_frame_readers(bad):
    steps = [("reader", SMALL), ("yield", bad), ("reader", SMALL)]
    got, log = same(run_chain, steps)[1]
    assert got[5:] == [
        ("raise", TypeError, f"ChainReader: readers must yield FrameReader objects, not {type(bad).__name__}"),
        ("raise", StopIteration, ""),
    ]
    assert log == [("stopped", len(SMALL), py.SCAN_END, 14), "finally", ("close again", ("ok", None))]


@needs_cy
def test_chain_reader_refuses_the_other_codecs_frame_readers():
    for m, other in ((py, cy), (cy, py)):
        chain = m.ChainReader([other.FrameReader(SMALL)])
        with pytest.raises(TypeError, match="must yield FrameReader objects, not FrameReader"):
            next(chain)


@pytest.mark.parametrize("close_after", [1, 4, 5, 6, 9, 10])
def test_chain_reader_close(close_after):
    """close() ends the chain at once and runs the generator's finally; later calls do nothing."""
    steps = [("reader", SMALL), ("reader", frames_buf(15, (1, 2, 3, 4, 5)), 0, 15)]
    got, log = same(run_chain, steps, close_after)[1]
    assert got == [("ok", f) for f in (py.decode(SMALL)[0] + py.decode(frames_buf(15, (1, 2, 3, 4, 5)))[0])][
        :close_after
    ] + [("raise", StopIteration, "")] * 2
    assert log[-3:] == ["finally", ("close", ("ok", None)), ("close again", ("ok", None))]


def test_chain_reader_close_before_start_and_when_readers_cannot_close(codec):
    log = []
    chain = codec.ChainReader(one_reader_then(codec, log))
    chain.close()  # never started: the generator closes without running its body
    assert log == []
    with pytest.raises(StopIteration):
        next(chain)
    chain = codec.ChainReader([codec.FrameReader(SMALL)])  # a list iterator has no close()
    assert next(chain) == (10, b"")
    chain.close()
    assert list(chain) == []


def test_chain_reader_cannot_be_reentered():
    """Like a generator: next() or close() from inside readers is a ValueError; the outer next goes on."""
    steps = [("reader", SMALL), ("next",), ("close",), ("reader", frames_buf(15, (1,)), 0, 15)]
    got, log = same(run_chain, steps)[1]
    busy = ("raise", ValueError, "ChainReader already executing")
    assert [lsn for _, (lsn, _) in got[:-2]] == [10, 11, 12, 13, 14, 15]
    assert log[1:3] == [("inner next", busy), ("inner close", busy)]


def test_chain_reader_honours_frame_reader_subclasses():
    """A subclass's own __next__ is what the chain uses (the compiled chain reads only exact
    FrameReaders in C); an exception from a reader ends the chain and closes readers."""

    def run(m):
        class Upper(m.FrameReader):
            def __next__(self):
                lsn, data = super().__next__()
                return lsn, data.upper()

        class Plain(m.FrameReader):
            pass

        class Failing(m.FrameReader):
            def __next__(self):
                if self.last_lsn >= 11:
                    raise OSError("reader failed")
                return super().__next__()

        text = frames_buf(1, ()) + b"".join(frame(1 + i, w) for i, w in enumerate([b"ab", b"cd"]))
        log = []

        def readers():
            try:
                for cls, args in ((Upper, (text,)), (Plain, (SMALL,)), (Failing, (SMALL,)), (Plain, (SMALL,))):
                    reader = cls(*args)
                    yield reader
                    log.append((cls.__name__, reader.offset, reader.status))
            finally:
                log.append("finally")

        chain = m.ChainReader(readers())
        got = []
        try:
            for item in chain:
                got.append(item)  # noqa: PERF402 - keeps the frames before the exception
        except OSError as exc:
            got.append(str(exc))
        return got, log, list(chain)

    got, log, rest = same(run)[1]
    assert got == [(1, b"AB"), (2, b"CD")] + py.decode(SMALL)[0] + py.decode(SMALL)[0][:2] + ["reader failed"]
    assert log == [("Upper", len(frame(1, b"ab")) * 2, py.SCAN_END), ("Plain", len(SMALL), py.SCAN_END), "finally"]
    assert rest == []


def test_dropping_a_chain_closes_its_readers(codec):
    """A chain dropped mid-way lets its generator go, which runs its finally (a descriptor closes)."""
    import gc

    log = []
    chain = codec.ChainReader(one_reader_then(codec, log))
    next(chain)
    del chain
    gc.collect()
    assert log == ["finally"]


def cursor_readers(m, buf, chunk, log):
    """SegmentCursor.readers' walk over an in-memory file read ``chunk`` bytes at a time: each reader
    starts where the last one stopped; a frame larger than a chunk is read whole."""
    pos, expect = 0, 0
    while pos < len(buf):
        start = pos
        piece = buf[start : start + chunk]
        reader = m.FrameReader(piece, 0, expect)
        yield reader
        pos, expect = start + reader.offset, reader.last_lsn + 1 if reader.last_lsn else expect
        log.append((pos, reader.status))
        if reader.status == m.SCAN_END:
            continue
        if reader.status != m.SCAN_SHORT or start + len(piece) >= len(buf):
            return
        if reader.offset or len(piece) - reader.offset < HDR:
            continue
        length = struct.unpack_from("<I", piece, 0)[0]
        reader = m.FrameReader(buf[start : start + HDR + length], 0, expect)
        yield reader
        pos, expect = start + reader.offset, reader.last_lsn + 1 if reader.last_lsn else expect
        log.append((pos, reader.status))
        if not reader.offset:
            return


def chain_over_chunks(m, buf, chunk):
    log = []
    return list(m.ChainReader(cursor_readers(m, buf, chunk, log))), log


@pytest.mark.parametrize("chunk", [16, 17, 33, 50, 1000])
def test_chain_reader_walks_a_log_in_chunks(chunk):
    """What a segment cursor does with it: any chunk size gives decode's frames and stop (I5, I10)."""
    rnd = random.Random(0xC4A1)
    for buf in (SMALL, SMALL[:-1], SMALL + bytes(20), SMALL[:60] + b"\x00" + SMALL[61:], BIG + SMALL, b""):
        frames, log = same(chain_over_chunks, buf, chunk)[1]
        assert frames == py.decode(buf)[0]
        assert not log or log[-1][0] == py.decode(buf)[1]
    entries = [rnd.randbytes(rnd.randrange(0, 90)) for _ in range(300)]
    buf = b"".join(frame(100 + i, e) for i, e in enumerate(entries))
    frames, _ = same(chain_over_chunks, buf, chunk)[1]
    assert frames == list(zip(range(100, 400), entries))


# ---------------------------------------------------------------------------
# find_frame's LSN window (P10)


def test_find_frame_window_edges():
    """after_lsn < lsn <= after_lsn + 1 + (o - bad_offset) // 16, exactly, for any Python ints."""
    for lsn in (0, 1, 2, 100, 2**63, MAX_LSN - 1, MAX_LSN):
        for pad in (0, 5, 16, 33, 200):
            buf = bytes(pad) + frame(lsn, b"payload")
            for bad in list(range(pad - 50, pad + 20, 3)) + [-(2**70), 2**70, -(2**66), 2**66]:
                steps = (pad - bad) // HDR
                for after in {lsn - 1 - steps + d for d in range(-2, 3)} | {
                    lsn - 1,
                    lsn,
                    -1,
                    -(2**70),
                    2**70,
                    MAX_LSN,
                    2**64,
                }:
                    check_find(buf, 0, after, bad)
            check_find(buf, pad, lsn - 1, pad)
            check_find(buf[:-1], 0, lsn - 1, pad)


def test_find_frame_returns_first_offset_past_the_last_header():
    for n in range(40):
        buf = bytes(n)
        for off in range(n + 1):
            res = same("find_frame", buf, off, 0, 0)
            assert res == ("ok", (max(n - 15, off), py.FIND_NONE))


# ---------------------------------------------------------------------------
# Hypothesis: arbitrary bytes, identical behaviour, faithful round trips (P8, I10)

HYP = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

INTERESTING_LSNS = st.sampled_from([0, 1, 2, 3, 5, 100, 2**32, 2**63, MAX_LSN - 1, MAX_LSN])
BIG_INTS = st.one_of(
    st.integers(-3, 300),
    st.integers(MAX_LSN - 3, MAX_LSN + 3),
    st.integers(-(2**80), 2**80),
    st.sampled_from([-(2**62) * 16, -(2**62) * 16 - 1, 2**64, -(2**64)]),
)


@st.composite
def logs(draw):
    """Frames with plausible LSNs, then damage: truncation, bit flips, splices, garbage."""
    parts = []
    lsn = draw(INTERESTING_LSNS)
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            lsn = draw(INTERESTING_LSNS)
        parts.append(frame(lsn, draw(st.binary(max_size=40))))
        lsn = (lsn + 1) & MAX_LSN
    buf = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["flip", "cut", "splice", "garbage", "zeros"]))
        at = draw(st.integers(0, len(buf)))
        if action == "flip" and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del buf[at:]
        elif action == "splice":
            buf[at:at] = frame(draw(INTERESTING_LSNS), draw(st.binary(max_size=20)))
        elif action == "garbage":
            buf[at:at] = draw(st.binary(max_size=30))
        else:
            buf[at:at] = bytes(draw(st.integers(1, 40)))
    return bytes(buf)


@HYP
@given(st.one_of(st.binary(max_size=300), logs()), st.data())
def test_hypothesis_differential(buf, data):
    """Arbitrary bytes: only documented exceptions, identical results, and every decoded frame
    re-encodes to exactly the bytes it came from (P8, I10)."""
    offset = data.draw(st.one_of(st.integers(0, len(buf)), st.integers(-2, len(buf) + 2)), label="offset")
    expect = data.draw(st.one_of(INTERESTING_LSNS, BIG_INTS), label="expect_lsn")
    skip = data.draw(st.one_of(INTERESTING_LSNS, BIG_INTS), label="skip_before")
    after = data.draw(st.one_of(INTERESTING_LSNS, BIG_INTS), label="after_lsn")
    bad = data.draw(st.one_of(st.integers(-40, len(buf) + 40), BIG_INTS), label="bad_offset")
    in_range = 0 <= offset <= len(buf)

    for call in (
        ("scan", buf, offset, expect),
        ("decode", buf, offset, expect),
        (read_all, buf, offset, expect, skip),
        ("find_frame", buf, offset, after, bad),
    ):
        res = same(*call)
        if in_range:
            assert res[0] == "ok", res  # no exception on any bytes at a valid offset
        else:
            assert res[:2] == ("raise", ValueError)

    if in_range:
        frames, end, status = py.decode(buf, offset, expect)
        assert status in (py.SCAN_END, py.SCAN_SHORT, py.SCAN_BAD_LEN, py.SCAN_BAD_CRC, py.SCAN_BAD_LSN)
        assert_reencodes(buf, offset, frames, end)
        for m in CODECS.values():
            # Re-encoding what was decoded gives back exactly that stretch of the buffer.
            if frames:
                assert m.encode_batch(frames[0][0], [d for _, d in frames]) == buf[offset:end]
        check_find(buf, offset, after, bad)


@HYP
@given(st.lists(st.binary(max_size=64), max_size=8), st.one_of(INTERESTING_LSNS, BIG_INTS))
def test_hypothesis_encode_roundtrip(entries, first):
    """encode_batch == the encodes one by one == struct + zlib; decode gives the entries back (I1, I9)."""
    res = same("encode_batch", first, entries)
    if res[0] == "raise":
        assert res[1] is ValueError and entries and not (1 <= first and first + len(entries) - 1 <= MAX_LSN)
        return
    buf = res[1]
    assert buf == b"".join(frame(first + i, e) for i, e in enumerate(entries))
    if entries:
        for m in CODECS.values():
            assert m.decode(buf, 0, first) == (
                list(zip(range(first, first + len(entries)), entries)),
                len(buf),
                m.SCAN_END,
            )


@HYP
@given(st.binary(min_size=HDR, max_size=200), st.integers(0, 199), INTERESTING_LSNS, BIG_INTS, BIG_INTS)
def test_hypothesis_find_frame_near_a_real_frame(prefix, cut, lsn, after_delta, bad):
    """P10: a real frame behind random bytes, searched with windows around its LSN."""
    buf = prefix[: cut % (len(prefix) + 1)] + frame(lsn, prefix[:7])
    after = lsn - 1 - (after_delta % 5) if -3 <= after_delta <= 300 else after_delta
    check_find(buf, 0, after, bad)
    check_find(buf, 0, lsn - 1, bad)


@HYP
@given(st.one_of(st.binary(max_size=300), logs()), st.integers(HDR, 120))
def test_hypothesis_chain_reader_in_chunks(buf, chunk):
    """P8, I10: a ChainReader walking damaged bytes in chunks gives decode's frames, in both codecs."""
    res = same(chain_over_chunks, buf, chunk)
    assert res[0] == "ok", res
    frames, _log = res[1]
    assert frames == py.decode(buf)[0]


# ---------------------------------------------------------------------------- VISIBLE record


def visible_record(state: int, seq: int, lsn: int, offset: int) -> bytes:
    """The record as walogs/_visible.py lays it out, built with struct + zlib (not a codec)."""
    body = struct.pack("<IIQQ", state, seq, lsn, offset)
    return b"WLVE" + struct.pack("<I", zlib.crc32(body)) + body


@pytest.mark.parametrize("fields", [(0, 0, 0, 0), (2, 1, 5, 100), (1, 2**32 - 1, MAX_LSN, 2**64 - 1),
                                    (2, 7, 2**40 + 3, 2**33)])
def test_pack_visible_layout(codec, fields):
    """P8: both codecs write the very bytes of the documented layout, and only the first 32."""
    buf = bytearray(b"\xaa" * 40)
    codec.pack_visible(buf, *fields)
    assert bytes(buf[:32]) == visible_record(*fields)
    assert buf[32:] == b"\xaa" * 8
    assert codec.VISIBLE_SIZE == 32


def test_pack_visible_into_a_shared_mapping(codec):
    """The writer's use: an mmap (anonymous here; the writer maps VISIBLE shared)."""
    mapping = mmap.mmap(-1, 32)
    codec.pack_visible(mapping, 2, 3, 9, 4096)
    assert mapping[:32] == visible_record(2, 3, 9, 4096)
    mapping.close()


def test_pack_visible_random_fields_identical():
    rng = random.Random(7)
    for _ in range(500):
        fields = (rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(64), rng.getrandbits(64))
        outs = []
        for m in CODECS.values():
            buf = bytearray(32)
            m.pack_visible(buf, *fields)
            outs.append(bytes(buf))
        assert outs == [visible_record(*fields)] * len(CODECS)


class _Index:
    """An int-like value (``__index__``) with a repr of its own: messages must show the int."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"_Index({self.value})"


BAD_VISIBLE_INPUT = [
    ((bytes(32), 2, 1, 1, 1), TypeError),              # read-only buffer
    ((None, 2, 1, 1, 1), TypeError),
    ((5, 2, 1, 1, 1), TypeError),                      # not a buffer
    (("x" * 40, 2, 1, 1, 1), TypeError),               # str is not a buffer
    ((bytearray(31), 2, 1, 1, 1), ValueError),         # too short
    ((bytearray(32), -1, 1, 1, 1), ValueError),
    ((bytearray(32), 2**32, 1, 1, 1), ValueError),     # state fits a u32
    ((bytearray(32), 2, 2**32, 1, 1), ValueError),     # seq fits a u32
    ((bytearray(32), 2, 1, 2**64, 1), ValueError),     # lsn fits a u64
    ((bytearray(32), 2, 1, 1, -1), ValueError),        # offset fits a u64
    ((bytearray(32), _Index(2**40), 1, 1, 1), ValueError),
    ((bytearray(32), 2, 1, 1.0, 1), TypeError),        # not an int
    ((bytearray(32), None, 1, 1, 1), TypeError),
    ((memoryview(bytearray(64))[::2], 2, 1, 1, 1), BufferError),  # not contiguous
]


def test_pack_visible_accepts_int_likes_and_typed_buffers(codec):
    """Fields may be any int-like (``__index__``); the buffer any writable one, e.g. array('I')."""
    buf = array.array("I", [0] * 8)
    codec.pack_visible(buf, _Index(2), True, _Index(9), 4096)
    assert buf.tobytes() == visible_record(2, 1, 9, 4096)


def test_pack_visible_leaves_no_export_behind(codec):
    """After a refused call the buffer is released: an mmap can still be closed."""
    mapping = mmap.mmap(-1, 16)
    with pytest.raises(ValueError):
        codec.pack_visible(mapping, 2, 1, 1, 1)  # too short
    mapping.close()
    assert mapping.closed


# ---------------------------------------------------------------------------- in-flight record

BOOT = bytes(range(0xA0, 0xB0))


def in_flight_record(boot: bytes, seq: int, start: int, end: int) -> bytes:
    """The record as walogs/_visible.py lays it out, built with struct + zlib (not a codec)."""
    body = boot + struct.pack("<QQQ", seq, start, end)
    return b"WLIF" + struct.pack("<I", zlib.crc32(body)) + body


@pytest.mark.parametrize("fields", [(0, 0, 0), (1, 0, 1160000), (2**64 - 1, 2**64 - 1, 2**64 - 1), (7, 2**33, 2**40)])
def test_pack_in_flight_layout(codec, fields):
    """P8: both codecs write the very bytes of the documented layout, and only the first 48;
    the pure writer's own packing (_visible.Publisher.mark_in_flight) writes the same."""
    buf = bytearray(b"\xaa" * 56)
    codec.pack_in_flight(buf, BOOT, *fields)
    assert bytes(buf[:48]) == in_flight_record(BOOT, *fields)
    assert buf[48:] == b"\xaa" * 8
    assert codec.IN_FLIGHT_SIZE == 48 and codec.BOOT_ID_SIZE == 16


def test_pack_in_flight_random_fields_identical(tmp_path):
    from walogs import _visible

    rng = random.Random(8)
    publisher = _visible.Publisher(str(tmp_path))
    try:
        for _ in range(300):
            fields = (rng.getrandbits(64), rng.getrandbits(64), rng.getrandbits(64))
            outs = []
            for m in CODECS.values():
                buf = bytearray(48)
                m.pack_in_flight(buf, _visible.BOOT_ID, *fields)
                outs.append(bytes(buf))
            publisher.mark_in_flight(*fields)
            outs.append(publisher.buffer()[_visible.IN_FLIGHT_OFFSET:_visible.FILE_SIZE])
            assert outs == [in_flight_record(_visible.BOOT_ID, *fields)] * (len(CODECS) + 1)
    finally:
        publisher.close(mark_closed=True)


BAD_IN_FLIGHT_INPUT = [
    ((bytes(48), BOOT, 1, 1, 1), TypeError),              # read-only buffer
    ((None, BOOT, 1, 1, 1), TypeError),
    ((bytearray(48), None, 1, 1, 1), TypeError),
    ((bytearray(48), "x" * 16, 1, 1, 1), TypeError),      # a str is not a boot id
    ((bytearray(48), BOOT[:15], 1, 1, 1), ValueError),    # 16 bytes
    ((bytearray(47), BOOT, 1, 1, 1), ValueError),         # too short
    ((bytearray(48), BOOT, -1, 1, 1), ValueError),
    ((bytearray(48), BOOT, 1, 2**64, 1), ValueError),
    ((bytearray(48), BOOT, 1, 1, 1.0), TypeError),        # not an int
    ((bytearray(48), BOOT[:3], 2**64, 1, 1), ValueError),  # fields are checked first
    ((memoryview(bytearray(96))[::2], BOOT, 1, 1, 1), BufferError),  # not contiguous
]


@pytest.mark.parametrize("function, args, exc", [("pack_visible", *case) for case in BAD_VISIBLE_INPUT]
                         + [("pack_in_flight", *case) for case in BAD_IN_FLIGHT_INPUT])
def test_record_packers_refuse_bad_input_alike(function, args, exc):
    """P8: both codecs refuse the same input to pack_visible and pack_in_flight with the same
    exception type and message, writing nothing."""
    buf = args[0]
    before = bytes(buf) if isinstance(buf, (bytes, bytearray)) else None
    result = same(function, *args)
    assert result[:2] == ("raise", exc), result
    if before is not None:
        assert bytes(buf) == before
