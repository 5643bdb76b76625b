"""Recovery at ``Wal.open`` (docs/format.md, "What a scan concludes") and reading the
log back with ``wal.iter()``. Real files only; invariant ids in docstrings.

Most damaged directories are copies of one small template log made once per
worker (four segments of short entries, laid out by docs/api.rst's rotation rule),
so the exhaustive loops over cut points and bit flips stay fast.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tracemalloc

import pytest

import walogs
from walogs import _io
from _damage import HEADER, append_bytes, flip_bit, flipped, frames, seg_name, segments_of, set_bytes, write_segments
from conftest import entry, make_frame, snapshot

MAX = 16 * 1024 * 1024
LIMIT = 120
CONFIG = walogs.WalConfig(max_segment_size=LIMIT)
# Entry sizes of the template: LSN i holds entry(i, SIZES[i - 1]). An empty
# entry sits just before the last one, so torn-tail cuts also hit a bare header.
SIZES = [12, 20, 9, 17, 30, 11, 25, 14, 19, 8, 22, 0, 13]
ENTRIES = [(lsn, entry(lsn, size)) for lsn, size in enumerate(SIZES, 1)]
ZLOG = [(lsn, entry(lsn, 24)) for lsn in range(1, 71)]  # one segment: 40-byte frames, 2800 bytes
FIELDS = {"len": (0, 4), "crc": (4, 8), "lsn": (8, 16), "data": (16, None)}


def _plan() -> list[list[tuple[int, int, bytes]]]:
    """Per segment, its frames as ``(offset, lsn, data)``: docs/api.rst's rule (rotate
    before an append that would take a non-empty segment past the limit)."""
    segments: list[list[tuple[int, int, bytes]]] = [[]]
    end = 0
    for lsn, data in ENTRIES:
        if end > 0 and end + HEADER + len(data) > LIMIT:
            segments.append([])
            end = 0
        segments[-1].append((end, lsn, data))
        end += HEADER + len(data)
    return segments


PLAN = _plan()
LAST = len(PLAN)  # number of the active segment
LAST_FRAMES = PLAN[-1]
assert len(PLAN) == 4 and len(LAST_FRAMES) == 4 and LAST_FRAMES[2][2] == b""


def frame_span(segment: int, index: int) -> tuple[int, int]:
    """(start, end) offsets of frame ``index`` of segment ``segment`` (1-based)."""
    offset, _, data = PLAN[segment - 1][index]
    return offset, offset + HEADER + len(data)


def before(lsn: int) -> list[tuple[int, bytes]]:
    """The template's entries with an LSN below ``lsn``."""
    return [e for e in ENTRIES if e[0] < lsn]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The template log, written by the real writer; its bytes are checked
    against frames built independently from docs/format.md (I1)."""
    path = tmp_path_factory.mktemp("template") / "log"
    with walogs.Wal.open(path, CONFIG) as wal:
        for lsn, data in ENTRIES:
            assert wal.append(data) == lsn
    for n, planned in enumerate(PLAN, 1):
        with open(path / seg_name(n), "rb") as f:
            assert f.read() == b"".join(make_frame(lsn, data) for _, lsn, data in planned)
    return path


@pytest.fixture
def copy_of(template, tmp_path):
    """Fresh copies of the template: ``copy_of(tag)`` returns the copy's path."""

    def make(tag: str = "log"):
        dst = tmp_path / tag
        shutil.copytree(template, dst)
        return dst

    return make


def without_lock(snap: dict) -> dict:
    """A snapshot minus LOCK, which docs/format.md lets any writer open create (empty)."""
    return {name: value for name, value in snap.items() if name != "LOCK"}


def assert_untouched(directory, snap_before: dict) -> None:
    after = snapshot(directory)
    if "LOCK" not in snap_before and "LOCK" in after:
        assert after["LOCK"][0] == b""  # created by the open attempt, nothing written into it
        after = without_lock(after)
    assert after == snap_before


def assert_names(exc: BaseException, directory, *names: str, offset: int | None = None) -> None:
    message = str(exc)
    assert str(directory) in message, message
    for name in names:
        assert name in message, message
    if offset is not None:
        assert re.search(rf"\boffset {offset}\b", message), message


def open_corrupt(directory, *names: str, offset: int | None = None):
    """Open must raise WalCorruptError naming directory, files and offset, changing no file."""
    snap = snapshot(directory)
    with pytest.raises(walogs.WalCorruptError) as info:
        walogs.Wal.open(directory, CONFIG)
    assert_names(info.value, directory, *names, offset=offset)
    assert info.value.reason == str(info.value)
    assert_untouched(directory, snap)
    return info.value


def open_zero_tail(directory, last_segment: str, end: int, kept: list, where: str = "") -> None:
    """Open must find ``last_segment`` ending cleanly at ``end`` with zeros after it (a zero tail:
    nothing cut, the zeros kept), read back ``kept``, write the next entry at ``end``, and
    close with the segment trimmed to its last frame."""
    path = os.path.join(directory, last_segment)
    size = os.path.getsize(path)
    nxt = kept[-1][0] + 1 if kept else 1
    with walogs.Wal.open(directory, CONFIG) as wal:
        assert wal.tail_state == walogs.TailState.CLEAN, where
        assert os.path.getsize(path) == size, where  # the zeros stay: the writer writes into them
        assert list(wal.iter()) == kept, where
        assert wal.append(b"after the zeros") == nxt, where
    frame = make_frame(nxt, b"after the zeros")
    with open(path, "rb") as f:
        # Written at the old end (or, when it did not fit, in a new segment after this one was
        # trimmed); no zeros left after the last frame either way.
        assert f.read()[end:] in (frame, b""), where
    with walogs.Wal.open(directory, CONFIG) as wal:
        assert list(wal.iter()) == kept + [(nxt, b"after the zeros")], where


def open_torn(directory, last_segment: str, cut_at: int, kept: list, where: str = "") -> None:
    """Open must cut ``last_segment`` at ``cut_at`` on disk (I2), read back exactly
    ``kept``, continue the LSNs and take a new append that reads back."""
    path = os.path.join(directory, last_segment)
    nxt = kept[-1][0] + 1 if kept else 1
    with walogs.Wal.open(directory, CONFIG) as wal:
        assert wal.tail_state == walogs.TailState(cut_at), where
        assert not wal.tail_state.clean, where
        assert os.path.getsize(path) == cut_at, where
        assert list(wal.iter()) == kept, where
        assert wal.next_lsn == nxt, where
        assert wal.append(b"after recovery") == nxt, where
        assert list(wal.iter(nxt)) == [(nxt, b"after recovery")], where
    # The cut is final: the next open is clean and finds everything.
    with walogs.Wal.open(directory, CONFIG) as wal:
        assert wal.tail_state.clean, where
        assert list(wal.iter()) == kept + [(nxt, b"after recovery")], where
        assert wal.next_lsn == nxt + 1, where


# --------------------------------------------------------------- 1. torn tails


def test_template_reopens_clean(template, tmp_path):
    """I8: an undamaged log reopens clean with next_lsn derived from the segments."""
    d = tmp_path / "log"
    shutil.copytree(template, d)
    with walogs.Wal.open(d, CONFIG) as wal:
        assert wal.tail_state == walogs.TailState.CLEAN
        assert wal.tail_state.clean
        assert wal.segment_count == LAST
        assert (wal.first_lsn, wal.next_lsn) == (1, len(ENTRIES) + 1)
        assert list(wal.iter()) == ENTRIES
        assert list(wal) == ENTRIES
        assert list(wal.iter(7)) == ENTRIES[6:]


@pytest.mark.parametrize("index", range(len(LAST_FRAMES)), ids=lambda i: f"frame{i}")
def test_torn_tail_at_every_cut_point(copy_of, index):
    """I2, I5, I10: cutting the last segment anywhere inside frame ``index`` (the
    last frame, the last two, and the first, which leaves the segment empty) is a
    torn tail: truncated on disk at that frame's offset, every whole frame before it
    read back exactly, next_lsn continuing, new appends reading back."""
    start, end = frame_span(LAST, index)
    lsn = LAST_FRAMES[index][1]
    for cut in range(start + 1, end):
        d = copy_of(f"cut{cut}")
        os.truncate(d / seg_name(LAST), cut)
        with open(d / seg_name(LAST), "rb") as f:
            f.seek(start)
            torn = f.read()
        if any(torn):
            open_torn(d, seg_name(LAST), start, before(lsn), where=f"cut at {cut}")
        else:  # the frame's first bytes are zeros: a zero tail, a clean end kept to write into
            open_zero_tail(d, seg_name(LAST), start, before(lsn), where=f"cut at {cut}")


@pytest.mark.parametrize("index", range(len(LAST_FRAMES)), ids=lambda i: f"frame{i}")
def test_cut_at_a_frame_boundary_is_clean(copy_of, index):
    """I5: a segment cut exactly where a frame starts ends cleanly: nothing to cut,
    the frames before it read back, next_lsn continues (from the previous segment
    when the active one is left empty)."""
    start, _ = frame_span(LAST, index)
    lsn = LAST_FRAMES[index][1]
    d = copy_of()
    os.truncate(d / seg_name(LAST), start)
    with walogs.Wal.open(d, CONFIG) as wal:
        assert wal.tail_state == walogs.TailState.CLEAN
        assert os.path.getsize(d / seg_name(LAST)) == start
        assert list(wal.iter()) == before(lsn)
        assert wal.next_lsn == lsn
        assert wal.append(b"x") == lsn
    with walogs.Wal.open(d, CONFIG) as wal:
        assert list(wal.iter()) == before(lsn) + [(lsn, b"x")]


def test_torn_tail_in_only_segment_leaves_empty_log(tmp_path):
    """I2, I9: a lone segment holding only part of its first frame is cut to 0 bytes;
    the log is empty and its first entry gets LSN 1."""
    for cut in range(1, HEADER + 5):
        d = tmp_path / f"c{cut}"
        write_segments(d, {seg_name(1): make_frame(1, b"hello")[:cut]})
        with walogs.Wal.open(d) as wal:
            assert wal.tail_state == walogs.TailState(0), cut
            assert os.path.getsize(d / seg_name(1)) == 0
            assert (wal.first_lsn, wal.next_lsn) == (None, 1)
            assert list(wal.iter()) == []
            assert wal.append(b"hello") == 1
            assert list(wal.iter()) == [(1, b"hello")]


# --------------------------------------------------------------- 2. bit flips


def field_range(segment: int, index: int, field: str) -> range:
    start, end = frame_span(segment, index)
    lo, hi = FIELDS[field]
    return range(start + lo, end if hi is None else start + hi)


@pytest.mark.parametrize("field", FIELDS)
def test_bit_flip_in_last_frame_is_torn_tail(copy_of, field):
    """I2, I5, P10: any single bit flipped in the last frame of the last segment
    (len, crc, lsn or data; including flips that push len past 16 MiB, shrink the
    frame, or give it a different LSN) makes it not a frame, and nothing valid
    follows: a torn tail cut at that frame's offset."""
    index = len(LAST_FRAMES) - 1
    start, _ = frame_span(LAST, index)
    lsn = LAST_FRAMES[index][1]
    for offset in field_range(LAST, index, field):
        for bit in range(8):
            d = copy_of(f"b{offset}-{bit}")
            flip_bit(d / seg_name(LAST), offset, bit)
            open_torn(d, seg_name(LAST), start, before(lsn), where=f"{field}: byte {offset} bit {bit}")


EARLIER = [(LAST, i) for i in range(len(LAST_FRAMES) - 1)]
COMPLETED = [(1, 0), (1, 1), (LAST - 1, len(PLAN[LAST - 2]) - 1)]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("where", EARLIER + COMPLETED, ids=lambda w: f"seg{w[0]}frame{w[1]}")
def test_bit_flip_in_earlier_frame_or_completed_segment_is_corruption(copy_of, where, field):
    """P10, I5, I10: a flipped bit in a frame of the last segment that valid frames
    follow is mid-log damage; one anywhere in a completed segment, its last frame
    included, is damage too (completed segments are never cut). Both: WalCorruptError
    naming the directory, the segment file and the bad frame's offset, and the
    directory is byte-for-byte untouched."""
    segment, index = where
    start, _ = frame_span(segment, index)
    d = copy_of()
    path = d / seg_name(segment)
    for offset in field_range(segment, index, field):
        for bit in range(8):
            flip_bit(path, offset, bit)
            try:
                open_corrupt(d, seg_name(segment), offset=start)
            except BaseException as exc:
                raise AssertionError(f"{field}: byte {offset} bit {bit}") from exc
            flip_bit(path, offset, bit)


def test_bit_flip_deep_in_last_segment_is_corruption(tmp_path):
    """P10, docs/format.md ("a valid continuing frame" has an LSN greater than the last
    good frame's and at most that plus the headers that fit): in a one-segment log
    of 40 entries, a flipped data bit in frame 30 with valid frames 31..40 after it
    is mid-log damage. WalCorruptError at offset 1160, nothing truncated; the
    continuing frames must be judged against LSN 29, the last good one."""
    d = tmp_path / "log"
    write_segments(d, {seg_name(1): b"".join(make_frame(lsn, data) for lsn, data in ZLOG[:40])})
    flip_bit(d / seg_name(1), 29 * 40 + HEADER + 5, 3)
    open_corrupt(d, seg_name(1), offset=29 * 40)


def test_bit_flip_in_first_frame_after_full_checkpoint_is_corruption(log_dir):
    """P10, P1: after a checkpoint removed every completed segment, the active
    segment starts at LSN 10 and LSN_FLOOR says LSNs continue at 10. A flipped data
    bit in its first frame, with valid frames 11..13 following, is mid-log damage:
    WalCorruptError and nothing truncated. (Recovery must judge the continuing
    frames against the floor, not against "no LSN known".)"""
    first = LAST_FRAMES[0][1]
    with walogs.Wal.open(log_dir, CONFIG) as wal:
        for _, data in ENTRIES:
            wal.append(data)
        assert wal.checkpoint(first - 1) == LAST - 1
        assert wal.first_lsn == first == 10
    assert segments_of(log_dir) == [seg_name(LAST)]
    assert (log_dir / "LSN_FLOOR").exists()
    flip_bit(log_dir / seg_name(LAST), HEADER + 1, 0)
    open_corrupt(log_dir, seg_name(LAST), offset=0)


def test_bit_flip_in_first_frame_of_rust_checkpointed_log_is_corruption(tmp_path):
    """P10: a log left by a Rust checkpoint (wal-000007.log starting at LSN 50, no
    side files) whose first frame has one flipped bit, with valid frames 51..55
    following, must not be cut: those are good, continuing frames. WalCorruptError,
    nothing truncated. (The Rust 0.1.0 crate would cut them; P10 forbids it.)"""
    d = tmp_path / "log"
    write_segments(d, {seg_name(7): flipped(frames(50, [entry(i, 20) for i in range(6)]), HEADER + 3)})
    open_corrupt(d, seg_name(7), offset=0)


# --------------------------------------------------------------- 3. etcd's zero-block rule




@pytest.fixture
def zlog(tmp_path):
    d = tmp_path / "zlog"
    with walogs.Wal.open(d, walogs.WalConfig(max_segment_size=None)) as wal:
        wal.append_batch(data for _, data in ZLOG)
    return d


def zero(path, start: int, end: int) -> None:
    set_bytes(path, start, bytes(end - start))


@pytest.mark.parametrize("start,end", [(1024, 1536), (512, 1536), (1024, 1600), (1000, 1536), (1000, 1500)])
def test_zeroed_aligned_block_with_frames_after_is_torn_tail(zlog, start, end):
    """P10 (etcd's rule): a 512-byte-aligned block of zeros inside the damaged
    region is storage a power failure left unwritten, even though valid frames
    follow it: a torn tail cut at the first bad frame (the frame holding ``start``).
    So are zeros from a frame boundary to the next sector boundary (1000..1024 in
    (1000, 1500)): the lost sector that held the end of the last synced frame."""
    zero(zlog / seg_name(1), start, end)
    cut = start // 40 * 40
    open_torn(zlog, seg_name(1), cut, ZLOG[: cut // 40])


def test_zeros_to_end_of_file_is_torn_tail(zlog):
    """P10, I2: pages never written before a power failure (zeros from an aligned
    offset to the end of the file) are a torn tail."""
    path = zlog / seg_name(1)
    zero(path, 2048, os.path.getsize(path))
    open_torn(zlog, seg_name(1), 2040, ZLOG[:51])


@pytest.mark.parametrize("start,end", [(1001, 1500), (1030, 1542), (1024, 1528), (1025, 1536), (1041, 1300)])
def test_zeros_without_aligned_block_and_frames_after_is_corruption(zlog, start, end):
    """P10: zeroed bytes that hold no whole 512-byte-aligned zero block, with valid
    frames continuing after them, are mid-log damage: WalCorruptError at the first
    bad frame, nothing truncated. (Byte 1528 is LSN 39's low byte, so (1024, 1528)
    leaves the block [1024, 1536) one non-zero byte short.)"""
    zero(zlog / seg_name(1), start, end)
    open_corrupt(zlog, seg_name(1), offset=start // 40 * 40)


# --------------------------------------------------------------- 4. junk after the last frame


@pytest.mark.parametrize("run", [4096, 7, 16, 1, 15, 17, 65536 + 3])
def test_zeros_after_last_frame_are_a_clean_end(copy_of, run):
    """A zero tail (a segment prepared with zeros, written into; docs/format.md): zeros
    after the last frame, of any length, are a clean end: nothing cut, the zeros kept and
    written into. (Before preallocation they were a torn tail, cut.)"""
    d = copy_of()
    size = os.path.getsize(d / seg_name(LAST))
    append_bytes(d / seg_name(LAST), bytes(run))
    open_zero_tail(d, seg_name(LAST), size, ENTRIES)


@pytest.mark.parametrize("run", [1, 16, 4096])
def test_a_torn_frame_before_zeros_is_a_torn_tail(copy_of, run):
    """A frame cut short, then zeros (a killed write into a prepared segment): a torn
    tail, cut at the torn frame's start; the zeros after it do not make it clean."""
    d = copy_of()
    size = os.path.getsize(d / seg_name(LAST))
    append_bytes(d / seg_name(LAST), make_frame(len(ENTRIES) + 1, b"torn" * 20)[:30] + bytes(run))
    open_torn(d, seg_name(LAST), size, ENTRIES)


@pytest.mark.parametrize("run", [1, 600])
def test_zeros_then_junk_after_last_frame_is_a_torn_tail(copy_of, run):
    """Zeros that do not run to the end of the file (junk after them) are no zero tail: cut."""
    d = copy_of()
    size = os.path.getsize(d / seg_name(LAST))
    append_bytes(d / seg_name(LAST), bytes(run) + b"\x07junk")
    open_torn(d, seg_name(LAST), size, ENTRIES)


@pytest.mark.parametrize(
    "junk",
    [random.Random(seed).randbytes(n) for seed, n in [(1, 1), (2, 15), (3, 16), (4, 17), (5, 100), (6, 5000)]],
    ids=["rand1", "rand15", "rand16", "rand17", "rand100", "rand5000"],
)
def test_junk_after_last_frame_is_torn_tail(copy_of, junk):
    """I2, I5, I10: random garbage after the last frame is a torn tail cut at the end
    of the last good frame. (Zeros are a clean end: the test above.)"""
    d = copy_of()
    size = os.path.getsize(d / seg_name(LAST))
    append_bytes(d / seg_name(LAST), junk)
    open_torn(d, seg_name(LAST), size, ENTRIES)


def test_junk_in_empty_active_segment_is_torn_tail(copy_of):
    """I2, P1: garbage in an active segment that holds no frame is cut to 0 bytes and
    next_lsn continues from the completed segments."""
    d = copy_of()
    with walogs.Wal.open(d, CONFIG) as wal:
        wal.rotate()
        assert wal.segment_count == LAST + 1
    append_bytes(d / seg_name(LAST + 1), random.Random(7).randbytes(300))
    open_torn(d, seg_name(LAST + 1), 0, ENTRIES)


# --------------------------------------------------------------- 5. huge length fields


def _huge_headers() -> dict[str, bytes]:
    """Last headers with the next LSN and an arbitrary CRC, and a few bytes after."""
    rest = make_frame(len(ENTRIES) + 1, b"x")[4:HEADER]  # crc + lsn fields
    return {
        "len-ffffffff": b"\xff\xff\xff\xff" + rest + b"tail",
        "len-16MiB+1": (MAX + 1).to_bytes(4, "little") + rest + b"tail" * 100,
        "len-16MiB-short": MAX.to_bytes(4, "little") + rest + b"z" * 1000,
    }


@pytest.mark.parametrize("name", ["len-ffffffff", "len-16MiB+1", "len-16MiB-short"])
def test_huge_length_field_is_torn_tail_without_huge_allocation(copy_of, name):
    """P9, I2, I5: a last header whose len is 0xFFFFFFFF or 16 MiB + 1 (over the
    maximum), or that claims 16 MiB of data the file does not hold, is a torn tail;
    judging it allocates nothing near its claimed size (tracemalloc peak < 8 MiB)."""
    d = copy_of()
    size = os.path.getsize(d / seg_name(LAST))
    append_bytes(d / seg_name(LAST), _huge_headers()[name])
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        wal = walogs.Wal.open(d, CONFIG)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    try:
        assert peak < 8 * 1024 * 1024, peak
        assert wal.tail_state == walogs.TailState(size)
        assert os.path.getsize(d / seg_name(LAST)) == size
        assert list(wal.iter()) == ENTRIES
    finally:
        wal.close()


# --------------------------------------------------------------- 6. segment names


def test_missing_middle_segment_is_corruption(copy_of):
    """I11: a gap in the segment numbers is WalCorruptError naming the files on both
    sides of it; no file changes."""
    d = copy_of()
    os.unlink(d / seg_name(2))
    open_corrupt(d, seg_name(1), seg_name(3))


def test_missing_oldest_segments_is_a_checkpointed_log(copy_of):
    """I11, I14: a contiguous suffix (oldest segments gone, as a checkpoint leaves
    it) is not a gap: it opens and reads from its first stored LSN."""
    d = copy_of()
    os.unlink(d / seg_name(1))
    os.unlink(d / seg_name(2))
    first = PLAN[2][0][1]
    with walogs.Wal.open(d, CONFIG) as wal:
        assert wal.tail_state.clean
        assert (wal.first_lsn, wal.next_lsn, wal.segment_count) == (first, len(ENTRIES) + 1, 2)
        assert list(wal.iter()) == ENTRIES[first - 1 :]
        with pytest.raises(walogs.LsnOutOfRangeError):
            wal.iter(first - 1)


def test_two_names_for_one_segment_number_is_corruption(copy_of):
    """docs/format.md: wal-1.log beside wal-000001.log (two names for one number) is
    WalCorruptError naming both; no file changes."""
    d = copy_of()
    shutil.copy2(d / seg_name(1), d / "wal-1.log")
    open_corrupt(d, "wal-1.log", seg_name(1))


def test_segment_numbers_above_999999(tmp_path):
    """docs/format.md, I11: wal-999999.log followed by wal-1000000.log (7 digits) opens
    and reads; the next rotation creates wal-1000001.log."""
    d = tmp_path / "log"
    with walogs.Wal.open(d, walogs.WalConfig(max_segment_size=None)) as wal:
        wal.append_batch([b"a", b"b"])
        wal.rotate()
        wal.append_batch([b"c", b"d"])
    os.rename(d / seg_name(1), d / "wal-999999.log")
    os.rename(d / seg_name(2), d / "wal-1000000.log")
    with walogs.Wal.open(d, walogs.WalConfig(max_segment_size=None)) as wal:
        assert wal.tail_state.clean
        assert (wal.first_lsn, wal.next_lsn, wal.segment_count) == (1, 5, 2)
        assert list(wal.iter()) == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]
        wal.rotate()
        assert wal.append(b"e") == 5
    assert (d / "wal-1000001.log").read_bytes() == make_frame(5, b"e")
    with walogs.Wal.open(d) as wal:
        assert [lsn for lsn, _ in wal.iter()] == [1, 2, 3, 4, 5]
        assert wal.segment_count == 3


def test_side_files_with_odd_names_are_ignored(copy_of):
    """docs/format.md: only names that are exactly wal- + digits + .log are segments;
    everything else, even holding frames, is ignored and left as it is."""
    d = copy_of()
    odd = {
        "wal-1.log.bak": (d / seg_name(1)).read_bytes() + b"garbage",
        "wal-abc.log": b"junk",
        "notes.txt": b"hello",
        "wal-.log": b"",
        "wal-000009.log.tmp": make_frame(99, b"x"),
        "WAL-000009.log": make_frame(99, b"x"),
        "wal-0000x1.log": b"junk",
        "xwal-000009.log": make_frame(99, b"x"),
    }
    for name, data in odd.items():
        (d / name).write_bytes(data)
    with walogs.Wal.open(d, CONFIG) as wal:
        assert wal.tail_state.clean
        assert wal.segment_count == LAST
        assert list(wal.iter()) == ENTRIES
        assert wal.next_lsn == len(ENTRIES) + 1
    for name, data in odd.items():
        assert (d / name).read_bytes() == data


# --------------------------------------------------------------- 7. LSN jumps


def test_lsn_jump_at_segment_boundary_is_corruption(tmp_path):
    """I12: a completed segment ending at LSN 3 followed by a segment starting at
    LSN 5 (valid CRCs) is WalCorruptError naming the segment and offset 0."""
    d = tmp_path / "log"
    write_segments(d, {seg_name(1): frames(1, [b"a", b"b", b"c"]), seg_name(2): frames(5, [b"e", b"f"])})
    err = open_corrupt(d, seg_name(2), offset=0)
    assert "5" in str(err)


def test_lsn_going_back_at_segment_boundary_is_corruption(tmp_path):
    """I12: a segment restarting at an LSN already used is WalCorruptError."""
    d = tmp_path / "log"
    write_segments(d, {seg_name(1): frames(1, [b"a", b"b", b"c"]), seg_name(2): frames(3, [b"c", b"d"])})
    open_corrupt(d, seg_name(2), offset=0)


@pytest.mark.parametrize(
    "lsns",
    [[2, 3, 4, 6, 7], [2, 3, 4, 6], [2, 3, 4, 4, 5], [2, 3, 3], [2, 3, 4, 5, 5], [2, 3, 1, 2]],
    ids=["skip-mid", "skip-last", "repeat-mid", "repeat-last", "repeat-end", "back-to-1"],
)
def test_lsn_jump_inside_last_segment_is_corruption(tmp_path, lsns):
    """I12, P10: a whole frame with a valid CRC but the wrong LSN in the last segment
    cannot be a torn write: WalCorruptError at its offset, nothing truncated.
    (Segment 1 holds LSN 1, so segment 2 must count on from 2.)"""
    d = tmp_path / "log"
    body = b"".join(make_frame(lsn, entry(i, 10)) for i, lsn in enumerate(lsns))
    write_segments(d, {seg_name(1): frames(1, [b"x"]), seg_name(2): body})
    bad = next(i for i in range(1, len(lsns)) if lsns[i] != lsns[i - 1] + 1)
    open_corrupt(d, seg_name(2), offset=bad * (HEADER + 10))


def test_lsn_zero_frame_is_corruption(tmp_path):
    """I9: LSN 0 is never written; a valid-CRC frame carrying it is WalCorruptError."""
    d = tmp_path / "log"
    write_segments(d, {seg_name(1): make_frame(0, b"zero") + make_frame(1, b"one")})
    open_corrupt(d, seg_name(1), offset=0)


# --------------------------------------------------------------- 8. v1 migration


def test_v1_log_is_migrated_to_segment_one(tmp_path):
    """docs/format.md (legacy v1), I3: a lone wal.log is renamed to wal-000001.log on the
    first writer open; its entries read back and appends continue at N + 1."""
    d = tmp_path / "log"
    payloads = [entry(i, 30) for i in range(1, 8)]
    write_segments(d, {"wal.log": frames(1, payloads)})
    original = (d / "wal.log").read_bytes()
    with walogs.Wal.open(d) as wal:
        assert not (d / "wal.log").exists()
        assert (d / seg_name(1)).read_bytes() == original
        assert wal.tail_state.clean
        assert list(wal.iter()) == list(enumerate(payloads, 1))
        assert wal.next_lsn == 8
        assert wal.append(b"eight") == 8
    with walogs.Wal.open(d) as wal:
        assert list(wal.iter(7)) == [(7, payloads[-1]), (8, b"eight")]
        assert not (d / "wal.log").exists()


def test_v1_log_with_torn_tail_is_migrated_and_cut(tmp_path):
    """docs/format.md (legacy v1), I2: a torn tail in wal.log is cut after the rename."""
    d = tmp_path / "log"
    whole = frames(1, [b"one", b"two"])
    write_segments(d, {"wal.log": whole + make_frame(3, b"three")[:10]})
    with walogs.Wal.open(d) as wal:
        assert wal.tail_state == walogs.TailState(len(whole))
        assert os.path.getsize(d / seg_name(1)) == len(whole)
        assert list(wal.iter()) == [(1, b"one"), (2, b"two")]
        assert wal.append(b"three") == 3
    assert sorted(n for n in os.listdir(d) if n.startswith("wal")) == [seg_name(1)]


def test_v1_log_beside_segments_is_corruption(copy_of):
    """docs/format.md: wal.log together with segment files is WalCorruptError naming
    wal.log; nothing is renamed or changed."""
    d = copy_of()
    (d / "wal.log").write_bytes(frames(1, [b"a", b"b"]))
    open_corrupt(d, "wal.log")


# --------------------------------------------------------------- 9. Rust-written directories


def test_directory_written_as_rust_crate_writes_it(tmp_path):
    """docs/format.md compatibility, I8: three segments written by hand (no LOCK, no side
    files) open clean and read every entry; LSNs continue from the segments."""
    d = tmp_path / "log"
    payloads = [entry(i, 5 + i) for i in range(1, 31)]
    write_segments(
        d,
        {
            seg_name(1): frames(1, payloads[:10]),
            seg_name(2): frames(11, payloads[10:25]),
            seg_name(3): frames(26, payloads[25:]),
        },
    )
    with walogs.Wal.open(d) as wal:
        assert wal.tail_state == walogs.TailState.CLEAN
        assert (wal.first_lsn, wal.next_lsn, wal.segment_count) == (1, 31, 3)
        assert list(wal.iter()) == list(enumerate(payloads, 1))
        assert list(wal.iter(17)) == list(enumerate(payloads, 1))[16:]
        assert wal.append(b"31") == 31
    assert (d / seg_name(3)).read_bytes() == frames(26, payloads[25:]) + make_frame(31, b"31")


def test_rust_checkpointed_log_starts_at_its_first_stored_lsn(tmp_path):
    """docs/format.md, I8: wal-000007.log holding LSNs 50..54 (what a Rust checkpoint
    leaves) opens with first_lsn 50 and next_lsn 55; older LSNs are out of range."""
    d = tmp_path / "log"
    payloads = [entry(i, 12) for i in range(5)]
    write_segments(d, {seg_name(7): frames(50, payloads)})
    with walogs.Wal.open(d) as wal:
        assert wal.tail_state.clean
        assert (wal.first_lsn, wal.next_lsn, wal.segment_count) == (50, 55, 1)
        assert list(wal.iter()) == list(enumerate(payloads, 50))
        with pytest.raises(walogs.LsnOutOfRangeError):
            wal.iter(49)
        assert wal.append(b"x") == 55
    with walogs.Wal.open(d) as wal:
        assert list(wal.iter(54)) == [(54, payloads[-1]), (55, b"x")]


def test_rust_log_with_empty_active_segment(tmp_path):
    """I8, P1: completed segment 7 (LSNs 50..52) and an empty active segment 8 (a
    rotation then a crash): next_lsn is 53, appends go to segment 8."""
    d = tmp_path / "log"
    write_segments(d, {seg_name(7): frames(50, [b"a", b"b", b"c"]), seg_name(8): b""})
    with walogs.Wal.open(d) as wal:
        assert (wal.first_lsn, wal.next_lsn, wal.segment_count) == (50, 53, 2)
        assert wal.append(b"d") == 53
    assert (d / seg_name(8)).read_bytes() == make_frame(53, b"d")


# --------------------------------------------------------------- 10. P1 across checkpoints


def test_next_lsn_survives_checkpoint_of_every_entry(log_dir):
    """P1: fill 3 segments, rotate, checkpoint everything: after reopen next_lsn is
    unchanged (no restart at 1) and first_lsn is None. Then, with the LSN_FLOOR side
    file deleted, the segments alone cannot say where LSNs continue, so the log
    falls back to the Rust 0.1.0 behaviour: next_lsn is 1 again (docs/format.md: side
    files are optional; this documents the fallback, it is not a goal)."""
    with walogs.Wal.open(log_dir, CONFIG) as wal:
        for _, data in ENTRIES[:9]:
            wal.append(data)
        assert wal.segment_count == 3
        wal.rotate()
        assert wal.checkpoint(9) == 3
        assert (wal.first_lsn, wal.next_lsn) == (None, 10)
    with walogs.Wal.open(log_dir, CONFIG) as wal:
        assert wal.tail_state.clean
        assert (wal.first_lsn, wal.next_lsn, wal.segment_count) == (None, 10, 1)
        assert list(wal.iter()) == []
    assert os.path.exists(log_dir / "LSN_FLOOR")
    os.unlink(log_dir / "LSN_FLOOR")
    with walogs.Wal.open(log_dir, CONFIG) as wal:
        assert (wal.first_lsn, wal.next_lsn) == (None, 1)


def test_next_lsn_survives_checkpoint_then_append(log_dir):
    """P1, I8: after everything was checkpointed and the log reopened, the first new
    append gets the old next LSN; once entries are stored they, not the floor,
    decide next_lsn (a stale floor is harmless)."""
    with walogs.Wal.open(log_dir, CONFIG) as wal:
        for _, data in ENTRIES[:9]:
            wal.append(data)
        wal.rotate()
        wal.checkpoint(9)
    with walogs.Wal.open(log_dir, CONFIG) as wal:
        assert wal.append(b"ten") == 10
        assert wal.append(b"eleven") == 11
    with walogs.Wal.open(log_dir, CONFIG) as wal:
        assert (wal.first_lsn, wal.next_lsn) == (10, 12)
        assert list(wal.iter()) == [(10, b"ten"), (11, b"eleven")]


def test_next_lsn_survives_rotate_leaving_active_segment_empty(copy_of):
    """P1, I8: a rotate that leaves the active segment empty does not lose the next
    LSN across reopen."""
    d = copy_of()
    with walogs.Wal.open(d, CONFIG) as wal:
        wal.rotate()
    with walogs.Wal.open(d, CONFIG) as wal:
        assert wal.segment_count == LAST + 1
        assert os.path.getsize(d / seg_name(LAST + 1)) == 0
        assert wal.next_lsn == len(ENTRIES) + 1
        assert wal.append(b"x") == len(ENTRIES) + 1


def test_torn_active_segment_after_full_checkpoint_keeps_floor(log_dir):
    """P1, I2: after a full checkpoint, a torn first frame in the active segment is
    cut to 0 bytes and next_lsn still comes from the floor, not 1."""
    with walogs.Wal.open(log_dir, CONFIG) as wal:
        for _, data in ENTRIES[:9]:
            wal.append(data)
        wal.rotate()
        wal.checkpoint(9)
    append_bytes(log_dir / seg_name(4), make_frame(10, b"never acknowledged")[:20])
    with walogs.Wal.open(log_dir, CONFIG) as wal:
        assert wal.tail_state == walogs.TailState(0)
        assert os.path.getsize(log_dir / seg_name(4)) == 0
        assert (wal.first_lsn, wal.next_lsn) == (None, 10)


# --------------------------------------------------------------- 11. P11 syncs at open


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def io_log(monkeypatch):
    """Record fdatasync / fsync / ftruncate (with the file they act on), sync_dir and
    rename calls, then make the real call."""
    events: list[tuple[str, object]] = []

    def wrap(name, describe):
        real = getattr(_io, name)

        def wrapper(*args):
            events.append((name, describe(*args)))
            return real(*args)

        monkeypatch.setattr(_io, name, wrapper)

    wrap("fdatasync", lambda fd: _fd_path(fd))
    wrap("fsync", lambda fd: _fd_path(fd))
    wrap("ftruncate", lambda fd, length: (_fd_path(fd), length))
    wrap("sync_dir", lambda path: os.path.realpath(path))
    wrap("rename", lambda src, dst: (os.path.realpath(src), os.path.realpath(dst)))
    wrap("mkdir", lambda path: os.path.realpath(path))
    return events


def _file_synced(events, path) -> list[int]:
    path = os.path.realpath(path)
    return [i for i, (name, arg) in enumerate(events) if name in ("fdatasync", "fsync") and arg == path]


def _dir_synced(events, path) -> list[int]:
    path = os.path.realpath(path)
    return [i for i, (name, arg) in enumerate(events) if name == "sync_dir" and arg == path]


def test_open_syncs_last_segment_and_directory(copy_of, io_log):
    """P11: writer open fdatasyncs the last segment and syncs the directory before
    it returns, even for a clean log (a crashed writer's page cache)."""
    d = copy_of()
    wal = walogs.Wal.open(d, CONFIG)
    at_return = list(io_log)
    try:
        assert _file_synced(at_return, d / seg_name(LAST)), at_return
        assert _dir_synced(at_return, d), at_return
    finally:
        wal.close()


def test_torn_tail_truncate_is_followed_by_sync(copy_of, io_log):
    """I2, P11: the torn-tail truncate is a real ftruncate of the last segment to the
    cut offset, and an fdatasync of that file and a directory sync follow it before
    open returns."""
    d = copy_of()
    size = os.path.getsize(d / seg_name(LAST))
    append_bytes(d / seg_name(LAST), b"torn" * 5)
    wal = walogs.Wal.open(d, CONFIG)
    at_return = list(io_log)
    try:
        last = os.path.realpath(d / seg_name(LAST))
        truncates = [i for i, (name, arg) in enumerate(at_return) if name == "ftruncate" and arg == (last, size)]
        assert len(truncates) == 1, at_return
        assert [i for i in _file_synced(at_return, last) if i > truncates[0]], at_return
        assert [i for i in _dir_synced(at_return, d) if i > truncates[0]], at_return
    finally:
        wal.close()


def test_v1_rename_is_followed_by_directory_sync(tmp_path, io_log):
    """I3, P11: the v1 migration's rename is made durable with a directory sync
    before open returns, and the renamed segment is synced."""
    d = tmp_path / "log"
    write_segments(d, {"wal.log": frames(1, [b"a"])})
    wal = walogs.Wal.open(d)
    at_return = list(io_log)
    try:
        renames = [i for i, (name, arg) in enumerate(at_return)
                   if name == "rename" and arg == (os.path.realpath(d / "wal.log"), os.path.realpath(d / seg_name(1)))]
        assert len(renames) == 1, at_return
        assert [i for i in _dir_synced(at_return, d) if i > renames[0]], at_return
        assert _file_synced(at_return, d / seg_name(1)), at_return
    finally:
        wal.close()


# --------------------------------------------------------------- 12. the path itself


def test_path_that_is_a_regular_file(tmp_path):
    """I3: a path naming a regular file raises NotADirectoryError (an OSError)
    naming the path; the file and its directory are left exactly as they were."""
    path = tmp_path / "plain"
    path.write_bytes(b"not a log")
    snap = snapshot(tmp_path)
    with pytest.raises(NotADirectoryError) as info:
        walogs.Wal.open(path)
    assert isinstance(info.value, OSError)
    assert str(path) in str(info.value)
    assert snapshot(tmp_path) == snap


def test_path_below_a_regular_file(tmp_path):
    """I3: a log path whose parent is a regular file raises NotADirectoryError and
    creates nothing."""
    path = tmp_path / "plain"
    path.write_bytes(b"not a log")
    snap = snapshot(tmp_path)
    with pytest.raises(NotADirectoryError) as info:
        walogs.Wal.open(path / "log")
    assert str(path) in str(info.value)
    assert snapshot(tmp_path) == snap


def test_missing_nested_directory_is_created(tmp_path, io_log):
    """I3, I9, I15: a missing a/b/c is created; each new directory's parent is synced
    and the first segment exists durably (directory synced) before open returns."""
    path = tmp_path / "a" / "b" / "c"
    with walogs.Wal.open(path) as wal:
        at_return = list(io_log)
        assert path.is_dir()
        assert (path / seg_name(1)).exists()
        assert (wal.next_lsn, wal.first_lsn) == (1, None)
        assert wal.append(b"first") == 1
        assert list(wal.iter()) == [(1, b"first")]
    for parent in (tmp_path, tmp_path / "a", tmp_path / "a" / "b"):
        assert _dir_synced(at_return, parent), (parent, at_return)
    assert _dir_synced(at_return, path), at_return
