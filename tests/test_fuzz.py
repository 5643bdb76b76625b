"""Fuzzing: arbitrary bytes through both codecs and through recovery's judgement (P8, P10, I1, I5, I10).

Hypothesis (derandomized, no database) feeds arbitrary bytes and damaged logs to

* both codecs, ``walogs._frame_py`` and the compiled ``walogs._frame``:
  scan, decode, find_frame and FrameReader, with arguments in and out of
  their documented ranges;
* ``walogs._recovery.examine`` on a directory holding the fuzzed bytes as the
  only segment, and as the segment after a valid one, run once with each
  codec (the module-level ``codec`` that _segments and _recovery use is
  swapped for the duration of one call).

Every run must: finish (inputs are bounded, so no hang), raise nothing but
the documented exceptions (WalCorruptError from examine; ValueError/TypeError
from the codecs, and only for bad arguments), give identical results in both
codecs (P8), and decode only frames that re-encode (``_frame_py.encode``) to
exactly the bytes they came from (I1, I10). examine's verdict is also checked
against a small reference written here from docs/format.md and P10 (struct + zlib,
no walogs): the same valid prefix (I5), and a torn tail only where no valid
continuing frame follows, or where the bytes after the cut look like storage a
power failure left unwritten (P10's zero rules).

The atheris harness for long runs is tests/fuzz_atheris.py (not collected).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
import zlib
from contextlib import contextmanager

import pytest
from _damage import write_segments
from _impls import CODECS, py
from conftest import make_frame, scale
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import walogs
from walogs import _damage, _recovery, _segments
from walogs._format import FRAME_HEADER_SIZE as HDR
from walogs._format import MAX_ENTRY_SIZE

MAX_LSN = 2**64 - 1
SECTOR = 512

FUZZ = settings(
    max_examples=scale(600, 10000),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------------
# Inputs


LSNS = st.one_of(st.integers(0, 40), st.sampled_from([2**32, 2**63, MAX_LSN - 1, MAX_LSN]), st.integers(0, MAX_LSN))
ARG_INTS = st.one_of(st.integers(-3, 200), LSNS, st.integers(-(2**70), 2**70))


@st.composite
def damaged_log(draw, first_lsn=None):
    """Frames (mostly continuing LSNs), then damage: flips, cuts, zeros, junk, huge lens, splices."""
    lsn = draw(st.one_of(st.integers(1, 50), LSNS)) if first_lsn is None else first_lsn
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 7)) == 0:
            lsn = draw(LSNS)  # an LSN jump (or LSN 0)
        parts.append(make_frame(lsn, draw(st.binary(max_size=48))))
        lsn = (lsn + 1) & MAX_LSN
    buf = bytearray(b"".join(parts))
    if parts and draw(st.integers(0, 3)) == 0:
        # Unwritten storage between frames (P10's zero rules): zeros from a frame boundary to
        # the end of its sector, or a whole aligned 512-byte block, or a run of any length.
        at = sum(len(p) for p in parts[: draw(st.integers(0, len(parts) - 1))])
        to_boundary = -at % SECTOR
        run = draw(st.sampled_from([to_boundary, to_boundary + SECTOR, to_boundary + 2 * SECTOR]))
        run = draw(st.one_of(st.just(run if run >= HDR else run + SECTOR), st.integers(1, 700)))
        buf[at:at] = bytes(run)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["flip", "cut", "zeros", "sector", "junk", "huge", "frame", "dup"]))
        at = draw(st.integers(0, len(buf)))
        if action == "flip" and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del buf[at:]
        elif action == "zeros":
            buf[at:at] = bytes(draw(st.integers(1, 64)))
        elif action == "sector":  # an aligned 512-byte zero block, or zeros up to a sector boundary
            start = at // SECTOR * SECTOR
            buf[start : start + SECTOR] = bytes(SECTOR)
        elif action == "junk":
            buf[at:at] = draw(st.binary(min_size=1, max_size=40))
        elif action == "huge":
            length = draw(st.sampled_from([0xFFFFFFFF, MAX_ENTRY_SIZE, MAX_ENTRY_SIZE + 1, 2**31]))
            buf[at:at] = struct.pack("<IIQ", length, draw(st.integers(0, 2**32 - 1)), lsn)
        elif action == "frame":  # a valid frame somewhere, with a plausible LSN
            near = draw(st.integers(max(lsn - 3, 0), min(lsn + 3, MAX_LSN)))  # a frame's LSN is a u64
            buf[at:at] = make_frame(near, draw(st.binary(max_size=20)))
        elif action == "dup" and parts:
            buf[at:at] = draw(st.sampled_from(parts))
    return bytes(buf)


BUFFERS = st.one_of(st.binary(max_size=400), damaged_log())


# ---------------------------------------------------------------------------
# The codecs


def outcome(fn):
    try:
        return ("ok", fn())
    except (ValueError, TypeError) as exc:  # the documented argument errors; anything else fails the test
        return ("raise", type(exc), str(exc))


def both(fn):
    """``fn(module)`` on both codecs: identical outcomes (P8)."""
    results = [outcome(lambda m=m: fn(m)) for m in CODECS.values()]
    for other in results[1:]:
        assert other == results[0], f"compiled codec differs: {other!r} != {results[0]!r}"
    return results[0]


def read_all(m, buf, offset, expect, skip):
    reader = m.FrameReader(buf, offset, expect, skip)
    frames = list(reader)
    return frames, reader.offset, reader.status, reader.last_lsn


def assert_reencodes(buf: bytes, offset: int, frames, end: int, skip: int = 0) -> None:
    """I1, I10: the frames walked from ``offset`` are exactly the bytes up to ``end``."""
    pos = offset
    for lsn, data in frames:
        frame = py.encode(lsn, data)
        assert buf[pos : pos + len(frame)] == frame, f"frame at {pos} does not re-encode"
        pos += len(frame)
    if not skip:
        assert pos == end


def in_range(offset, buf, *lsns) -> bool:
    return 0 <= offset <= len(buf) and all(0 <= x <= MAX_LSN for x in lsns)


@FUZZ
@given(BUFFERS, st.data())
def test_codecs_on_arbitrary_bytes(buf, data):
    """P8, I1, I5, I10: scan/decode/FrameReader/find_frame on any bytes, with any arguments:
    identical results in both codecs, ValueError/TypeError only for arguments outside their
    documented ranges, and every decoded frame re-encodes to exactly its bytes."""
    offset = data.draw(st.one_of(st.integers(0, len(buf)), ARG_INTS), label="offset")
    expect = data.draw(st.one_of(st.just(0), ARG_INTS), label="expect_lsn")
    skip = data.draw(st.one_of(st.just(0), ARG_INTS), label="skip_before")
    after = data.draw(ARG_INTS, label="after_lsn")
    bad = data.draw(st.one_of(st.integers(-40, len(buf) + 40), ARG_INTS), label="bad_offset")

    started = time.monotonic()
    s = both(lambda m: m.scan(buf, offset, expect))
    d = both(lambda m: m.decode(buf, offset, expect))
    r = both(lambda m: read_all(m, buf, offset, expect, skip))
    f = both(lambda m: m.find_frame(buf, offset, after, bad))
    assert time.monotonic() - started < 10, "a codec call took too long on a bounded input"

    if in_range(offset, buf, expect):
        assert s[0] == d[0] == "ok", (s, d)
        end, count, first, last, status = s[1]
        frames, dend, dstatus = d[1]
        assert status in (py.SCAN_END, py.SCAN_SHORT, py.SCAN_BAD_LEN, py.SCAN_BAD_CRC, py.SCAN_BAD_LSN)
        assert (dend, dstatus, len(frames)) == (end, status, count)
        assert (frames[0][0] if frames else 0, frames[-1][0] if frames else 0) == (first, last)
        assert_reencodes(buf, offset, frames, end)
        assert status == py.SCAN_END or end < len(buf)  # I5: it stops at a bad frame, inside the buffer
    elif not 0 <= offset <= len(buf):
        assert s[:2] == d[:2] == ("raise", ValueError), "an offset outside the buffer was accepted"
    if in_range(offset, buf, expect, max(skip, 0)) and r[0] == "ok":
        frames, roff, rstatus, _ = r[1]
        assert [f_ for f_ in (d[1][0] if d[0] == "ok" else []) if f_[0] >= skip] == frames
        assert (roff, rstatus) == (d[1][1], d[1][2])
    if 0 <= offset <= len(buf) and 0 <= after <= MAX_LSN:
        assert f[0] == "ok", f
    if f[0] == "ok":
        o, kind = f[1]
        assert o >= offset
        if kind == py.FIND_FRAME:
            length, _crc, lsn = struct.unpack_from("<IIQ", buf, o)
            assert py.encode(lsn, buf[o + HDR : o + HDR + length]) == buf[o : o + HDR + length]
            assert after < lsn <= after + 1 + (o - bad) // HDR  # P10's window


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=6), st.integers(1, MAX_LSN))
def test_encode_decode_roundtrip(codec, entries, first):
    """I1, P8: encode_batch in each codec equals the frames built from docs/format.md, and decodes back."""
    if first + len(entries) - 1 > MAX_LSN:
        first = MAX_LSN - len(entries) + 1
    expected = b"".join(make_frame(first + i, e) for i, e in enumerate(entries))
    assert outcome(lambda: codec.encode_batch(first, entries)) == ("ok", expected)
    assert outcome(lambda: codec.decode(expected, 0, first)) == (
        "ok", (list(zip(range(first, first + len(entries)), entries)), len(expected), py.SCAN_END))


# ---------------------------------------------------------------------------
# examine on fuzzed segments, with each codec, against a reference judgement


@contextmanager
def using_codec(m):
    saved = (_segments.codec, _damage.codec)
    _segments.codec = _damage.codec = m
    try:
        yield
    finally:
        _segments.codec, _damage.codec = saved


def examine_outcome(directory: str, m):
    with using_codec(m):
        try:
            layout = _recovery.examine(directory)
        except walogs.WalCorruptError as exc:  # the one documented exception
            return ("corrupt", exc.segment, exc.offset, exc.in_last_segment, exc.reason)
    return ("ok", layout.torn_at, tuple((s.seq, s.first_lsn, s.last_lsn, s.end) for s in layout.segments),
            layout.next_lsn)


def _crc(length: int, lsn: int, data: bytes) -> int:
    return zlib.crc32(struct.pack("<IQ", length, lsn) + data)


def ref_scan(buf: bytes, expect: int):
    """docs/format.md's walk: (end, frames, reason) with reason None (clean), 'torn' or 'lsn'."""
    pos, frames = 0, []
    while pos < len(buf):
        if len(buf) - pos < HDR:
            return pos, frames, "torn"
        length, crc, lsn = struct.unpack_from("<IIQ", buf, pos)
        if length > MAX_ENTRY_SIZE or pos + HDR + length > len(buf):
            return pos, frames, "torn"
        data = buf[pos + HDR : pos + HDR + length]
        if _crc(length, lsn, data) != crc:
            return pos, frames, "torn"
        if lsn == 0 or (expect and lsn != expect):
            return pos, frames, "lsn"  # a whole valid frame with the wrong LSN (I9, I12)
        frames.append((lsn, data))
        expect = lsn + 1
        pos += HDR + length
    return pos, frames, None


def ref_continuing(buf: bytes, bad: int, after: int):
    """docs/format.md: the first whole valid frame after ``bad`` whose LSN could continue the log."""
    anchor = bad if after else -(1 << 60)  # no LSN known: every LSN >= 1 fits
    for o in range(bad + 1, len(buf) - HDR + 1):
        length, crc, lsn = struct.unpack_from("<IIQ", buf, o)
        if length > MAX_ENTRY_SIZE or not after < lsn <= after + 1 + (o - anchor) // HDR:
            continue
        if o + HDR + length <= len(buf) and _crc(length, lsn, buf[o + HDR : o + HDR + length]) == crc:
            return o
    return None


def ref_unwritten(buf: bytes, bad: int, continuing: int) -> bool:
    """P10: zeros that look like storage a power failure left unwritten, between the cut and
    the continuing frame: a 512-byte-aligned zero block, or zeros from the cut to the end of
    its sector (at least a whole header: the lost sector holding the last synced frame)."""
    stop = max(bad + HDR, (bad // SECTOR + 1) * SECTOR)
    if stop <= continuing and not any(buf[bad:stop]):
        return True
    block = -(-bad // SECTOR) * SECTOR
    while block + SECTOR <= continuing:
        if not any(buf[block : block + SECTOR]):
            return True
        block += SECTOR
    return False


def check_examine(directory: str, name: str, buf: bytes, expect: int) -> str:
    """examine with both codecs: identical (P8), and as the reference judges (I5, P10)."""
    started = time.monotonic()
    results = [examine_outcome(directory, m) for m in CODECS.values()]
    assert time.monotonic() - started < 10, "examine took too long on a bounded input"
    for other in results[1:]:
        assert other == results[0], f"examine with the compiled codec differs: {other!r} != {results[0]!r}"
    got = results[0]
    end, frames, reason = ref_scan(buf, expect)
    seq = int(name[4:10])
    seg = (seq, frames[0][0] if frames else 0, frames[-1][0] if frames else 0, end)
    if reason is None:
        assert got[0] == "ok" and got[1] is None and got[2][-1] == seg, got
        assert_reencodes(buf, 0, frames, end)
        return "clean"
    if reason == "lsn":
        assert got[:4] == ("corrupt", name, end, True), got
        return "lsn jump"
    if not any(buf[end:]):  # a zero tail (a segment prepared with zeros): a clean end, nothing cut
        assert got[0] == "ok" and got[1] is None and got[2][-1] == seg, got
        assert_reencodes(buf, 0, frames, end)
        return "zero tail"
    after = frames[-1][0] if frames else max(expect - 1, 0)
    continuing = ref_continuing(buf, end, after)
    if got[0] == "ok":
        assert got[1] == end and got[2][-1] == seg, (got, end, seg)  # cut exactly at the first bad frame
        assert_reencodes(buf, 0, frames, end)
        # P10: a torn tail only when no good frame would be thrown away, or the zero rules apply.
        assert continuing is None or ref_unwritten(buf, end, continuing), (
            f"torn tail cut at {end} drops a valid continuing frame at {continuing}")
        return "torn" if continuing is None else "torn (zero rule)"
    assert got[:4] == ("corrupt", name, end, True), got
    assert continuing is not None, f"mid-log damage reported at {end}, but no valid frame continues the log"
    assert not ref_unwritten(buf, end, continuing), got
    return "mid-log"


@pytest.fixture(scope="module")
def scratch():
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="walogs-fuzz-", dir=base)
    yield path
    shutil.rmtree(path, ignore_errors=True)


VALID_FIRST = b"".join(make_frame(lsn, b"entry %d" % lsn) for lsn in (1, 2, 3))


def _fresh_dir(scratch: str, files: dict[str, bytes]) -> str:
    d = os.path.join(scratch, "log")
    shutil.rmtree(d, ignore_errors=True)
    write_segments(d, files)
    return d


@FUZZ
@given(st.one_of(st.binary(max_size=1200), damaged_log()))
def test_examine_fuzzed_only_segment(scratch, buf):
    """P10, I5, P8: the fuzzed bytes as the only segment (named wal-000003.log: the log of a
    checkpointed directory, so no LSN is known and any first LSN is acceptable)."""
    d = _fresh_dir(scratch, {"wal-000003.log": buf})
    event(f"only segment: {check_examine(d, 'wal-000003.log', buf, 0)}")


@FUZZ
@given(st.one_of(st.binary(max_size=1200), damaged_log(first_lsn=4), damaged_log()))
def test_examine_fuzzed_segment_after_a_valid_one(scratch, buf):
    """P10, I5, I12, P8: a valid wal-000001.log holding LSNs 1..3, then the fuzzed bytes as
    wal-000002.log (the active segment, whose first frame must be LSN 4)."""
    d = _fresh_dir(scratch, {"wal-000001.log": VALID_FIRST, "wal-000002.log": buf})
    event(f"after a valid segment: {check_examine(d, 'wal-000002.log', buf, 4)}")


@FUZZ
@given(damaged_log(first_lsn=1))
def test_examine_fuzzed_completed_segment(scratch, buf):
    """I11, I12, docs/format.md: the fuzzed bytes as a completed segment, before a valid one:
    anything but whole valid frames continuing into the next segment is WalCorruptError."""
    _, frames, reason = ref_scan(buf, 0)  # the first segment present may start at any LSN
    nxt = (frames[-1][0] + 1) if frames else 1
    tail = make_frame(nxt, b"next") if nxt <= MAX_LSN else b""
    d = _fresh_dir(scratch, {"wal-000001.log": buf, "wal-000002.log": tail})
    results = [examine_outcome(d, m) for m in CODECS.values()]
    assert all(r == results[0] for r in results), results
    got = results[0]
    if reason is None and frames and tail:
        assert got[0] == "ok" and got[1] is None, got
        event("completed: clean")
    elif reason is not None:
        assert got[0] == "corrupt" and got[1] == "wal-000001.log", got
        event("completed: corrupt")
    # reason None with no frames: an empty completed segment (see test_corruption_matrix's pinned bug).

