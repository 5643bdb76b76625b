"""WalReader (docs/api.rst "Readers"): one process, threads and simple forks. Invariant ids in docstrings.

Everything is real: real files, real threads, real ``os.fork``. Loops are
bounded by a count and a deadline; forked children always end in ``os._exit``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from _damage import append_bytes, flip_bit, seg_name, segments_of, shrink
from _procs import ROOT, fork_with_pipe, kill_all, read_into, read_to_eof, reap, watched
from conftest import entry, snapshot

import walogs


def seg(log_dir, n: int = 1) -> str:
    return os.path.join(log_dir, seg_name(n))


def expected(first: int, last: int, size: int = 60) -> list[tuple[int, bytes]]:
    """Entries written by _fill for LSNs first..last: entry(lsn) is a function of the LSN."""
    return [(lsn, entry(lsn, size)) for lsn in range(first, last + 1)]


def _fill(wal: walogs.Wal, count: int, size: int = 60) -> None:
    """Append ``count`` entries (entry(lsn, size)), mixing append and append_batch."""
    while count > 0:
        lsn = wal.next_lsn
        if count >= 3 and lsn % 2:
            wal.append_batch([entry(lsn + k, size) for k in range(3)])
            count -= 3
        else:
            assert wal.append(entry(lsn, size)) == lsn
            count -= 1


def _write_closed_log(log_dir, count: int, max_segment_size=None, size: int = 60) -> None:
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=max_segment_size)) as wal:
        _fill(wal, count, size)


def _write_segments(log_dir, counts: list[int]) -> None:
    """A closed log whose segment k holds counts[k] entries (entry(lsn, 60): 76-byte frames)."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=None)) as wal:
        for k, count in enumerate(counts):
            if k:
                wal.rotate()
            _fill(wal, count)


def _collect(iterator, limit: int = 100_000):
    """Drain ``iterator`` (bounded) into (entries, exception or None)."""
    got = []
    try:
        for item in iterator:
            got.append(item)
            if len(got) >= limit:
                break
    except walogs.WalError as exc:
        return got, exc
    return got, None


# ---------------------------------------------------------------------------- construction


def test_missing_directory_raises_and_creates_nothing(tmp_path):
    """P3: a reader never creates the directory (or its parents)."""
    before = sorted(os.listdir(tmp_path))
    for missing in (tmp_path / "log", tmp_path / "a" / "b" / "log"):
        with pytest.raises(FileNotFoundError) as info:
            walogs.WalReader(missing)
        assert str(missing) in str(info.value)
        assert not os.path.lexists(missing)
    assert sorted(os.listdir(tmp_path)) == before


def test_file_instead_of_directory(tmp_path):
    """P3: a path naming a file is NotADirectoryError, and the file is not touched."""
    target = tmp_path / "file"
    target.write_bytes(b"not a log")
    before = snapshot(tmp_path)
    with pytest.raises(NotADirectoryError):
        walogs.WalReader(target)
    with pytest.raises(NotADirectoryError):
        walogs.WalReader(str(target))
    assert snapshot(tmp_path) == before


def test_close_and_context_manager(log_dir):
    """A closed reader refuses new calls; an iterator already running keeps its own descriptors."""
    _write_closed_log(log_dir, 5)
    with walogs.WalReader(log_dir) as reader:
        running = reader.iter()
        assert next(running) == (1, entry(1, 60))
        assert not reader.closed
    assert reader.closed
    for call in (reader.iter, reader.follow, lambda: reader.first_lsn, lambda: reader.durable_lsn):
        with pytest.raises(walogs.WalClosedError):
            call()
    assert list(running) == expected(2, 5)


# ---------------------------------------------------------------------------- live writer, "always"


def test_live_always_writer_reader_sees_exactly_the_appended_entries(log_dir):
    """P4 with sync="always": the reader sees each acknowledged entry at once, in LSN order,
    across rotations; iter(start) ranges; first_lsn/durable_lsn are read fresh."""
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=400))  # 76-byte frames: 5 per segment
    try:
        reader = walogs.WalReader(log_dir)
        assert (reader.first_lsn, reader.durable_lsn, list(reader.iter())) == (None, 0, [])
        assert list(reader.iter(1)) == []
        with pytest.raises(walogs.LsnOutOfRangeError):
            list(reader.iter(2))  # beyond durable_lsn + 1
        for n in range(1, 4):
            assert wal.append(entry(n, 60)) == n
            assert reader.durable_lsn == n
            assert list(reader.iter()) == expected(1, n)
        _fill(wal, 27)
        assert wal.segment_count > 4
        assert (reader.first_lsn, reader.durable_lsn) == (1, 30)
        assert list(reader.iter()) == expected(1, 30)
        assert list(reader) == expected(1, 30)
        for start in range(1, 32):  # every start, across every segment boundary, and durable+1
            assert list(reader.iter(start)) == expected(start, 30), start
        for bad in (0, -1, 32, 33, 10**6):
            with pytest.raises(walogs.LsnOutOfRangeError) as info:
                list(reader.iter(bad))
            assert isinstance(info.value, LookupError)
        with pytest.raises(TypeError):
            list(reader.iter("1"))
        # follow(timeout=0) is iter() plus one look for more.
        assert list(reader.follow(timeout=0)) == expected(1, 30)
        assert list(reader.follow(29, timeout=0)) == expected(29, 30)
        with pytest.raises(ValueError):
            reader.follow(timeout=-1)
    finally:
        wal.close()


def test_start_older_than_first_lsn_after_checkpoint(log_dir):
    """P5/API: a start checkpointed away raises LsnOutOfRangeError; from first_lsn on it works."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=400)) as wal:
        _fill(wal, 30)
        reader = walogs.WalReader(log_dir)
        deleted = wal.checkpoint(12)
        assert deleted >= 2
        first = wal.first_lsn
        assert first > 1 and reader.first_lsn == first
        for start in (1, 2, first - 1):
            with pytest.raises(walogs.LsnOutOfRangeError):
                list(reader.iter(start))
            with pytest.raises(walogs.LsnOutOfRangeError):
                list(reader.follow(start, timeout=0))
        assert list(reader.iter()) == expected(first, 30)
        assert list(reader.iter(first)) == expected(first, 30)
        assert list(reader.iter(25)) == expected(25, 30)


def test_start_older_than_floor_when_every_entry_was_checkpointed(log_dir):
    """P5/P1: after a checkpoint removed every stored entry (first_lsn None, LSN floor 31),
    a start of 5 names entries that were checkpointed away: it must raise
    LsnOutOfRangeError, as Wal.iter(5) does, and a follower from 5 must never wait and
    then yield LSN 31 (a silent skip of 5..30)."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=400)) as wal:
        _fill(wal, 30)
        wal.rotate()
        wal.checkpoint(30)
        assert wal.first_lsn is None and wal.next_lsn == 31
        with pytest.raises(walogs.LsnOutOfRangeError):
            list(wal.iter(5))  # the writer's own view, for comparison
        reader = walogs.WalReader(log_dir)
        assert reader.first_lsn is None and reader.durable_lsn == 30
        assert list(reader.iter()) == [] and list(reader.iter(31)) == []
        with pytest.raises(walogs.LsnOutOfRangeError):
            list(reader.iter(32))
        timer = threading.Timer(0.2, wal.append, args=(entry(31, 60),))
        timer.start()
        try:
            got, error = _collect(reader.follow(5, timeout=1), limit=5)
        except walogs.LsnOutOfRangeError as exc:
            got, error = [], exc
        finally:
            timer.join(10)
        assert got == [] and isinstance(error, walogs.LsnOutOfRangeError), (
            f"follow(start=5) with entries 1..30 checkpointed away yielded LSNs "
            f"{[lsn for lsn, _ in got]} and raised {error!r}: entries 5..30 were skipped silently"
        )
        with pytest.raises(walogs.LsnOutOfRangeError):  # once LSN 31 is stored, it does raise
            list(reader.iter(5))


# ---------------------------------------------------------------------------- visible end (P4)


def test_interval_mode_hides_unsynced_entries(log_dir):
    """P4 with sync="interval" (3600 s, so only sync() and rotate() sync): with a live writer
    entries appended but not yet synced are not visible; after sync() they are."""
    cfg = walogs.WalConfig(sync="interval", sync_interval=3600, max_segment_size=None)
    with walogs.Wal.open(log_dir, cfg) as wal:
        reader = walogs.WalReader(log_dir)
        _fill(wal, 6)
        assert wal.durable_lsn == 0
        assert (reader.durable_lsn, list(reader.iter()), reader.first_lsn) == (0, [], 1)
        assert list(reader.follow(timeout=0.05)) == []
        wal.sync()
        assert reader.durable_lsn == 6 and list(reader.iter()) == expected(1, 6)
        _fill(wal, 7)  # 7..13 written, not synced
        assert wal.durable_lsn == 6 and wal.next_lsn == 14
        assert reader.durable_lsn == 6
        assert list(reader.iter()) == expected(1, 6)
        assert list(reader.iter(4)) == expected(4, 6)
        assert list(reader.iter(7)) == []
        with pytest.raises(walogs.LsnOutOfRangeError):
            list(reader.iter(8))  # beyond durable_lsn + 1, although it is written
        assert list(reader.follow(timeout=0.05)) == expected(1, 6)
        # A follower waiting at the visible end gets the entries once sync() runs in another thread.
        following = reader.follow(7, timeout=5)
        timer = threading.Timer(0.1, wal.sync)
        timer.start()
        try:
            got = [next(following) for _ in range(7)]
        finally:
            timer.join(10)
            following.close()
        assert got == expected(7, 13)
        # rotate() syncs the finished segment, so its entries become visible.
        _fill(wal, 2)
        assert reader.durable_lsn == 13
        wal.rotate()
        assert reader.durable_lsn == 15 and list(reader.iter(14)) == expected(14, 15)


def test_none_mode_publishes_written_entries(log_dir):
    """P4 under sync="none" (docs/api.rst): the visible end is the last written entry, no sync needed."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(sync="none", max_segment_size=400)) as wal:
        reader = walogs.WalReader(log_dir)
        for n in range(1, 4):
            wal.append(entry(n, 60))
            assert reader.durable_lsn == n and list(reader.iter()) == expected(1, n)
        _fill(wal, 17)
        assert wal.durable_lsn < 20 and reader.durable_lsn == 20
        assert list(reader.iter()) == expected(1, 20)


def test_writer_appearing_mid_iteration_does_not_expose_unsynced_entries(log_dir):
    """P4: an iterator that started while no writer was live must not go on reading past the
    visible end of a writer that opened meanwhile. Deterministic: segment 1 holds 1..3,
    segment 2 is empty; the iterator yields LSN 1 (no writer: visible end = last valid frame);
    then a writer opens with sync="interval" (3600 s) and appends LSN 4, written but not
    synced (its visible end stays 3). Continuing, the iterator must stop at 3."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=None)) as wal:
        _fill(wal, 3)
        wal.rotate()
    reader = walogs.WalReader(log_dir)
    running = reader.iter()
    assert next(running) == (1, entry(1, 60))
    cfg = walogs.WalConfig(sync="interval", sync_interval=3600, max_segment_size=None)
    with walogs.Wal.open(log_dir, cfg) as wal:
        assert wal.append(entry(4, 60)) == 4
        assert wal.durable_lsn == 3 and reader.durable_lsn == 3
        rest, error = _collect(running)
        assert error is None
        assert [lsn for lsn, _ in rest] == [2, 3], (
            f"the reader yielded LSNs {[lsn for lsn, _ in rest]} after LSN 1 while the live "
            "writer's visible end is 3: LSN 4 is not durable (P4)"
        )


def test_start_just_past_visible_end_when_that_lsn_opens_an_unpublished_segment(log_dir):
    """P4/API: start == durable_lsn + 1 is always a valid start (iter yields nothing, follow
    waits for it), also when that LSN is already written, not yet synced, as the first frame
    of a new segment (sync="interval"; with "always" the same holds for the instant between
    the write and its fdatasync). Only durable_lsn + 2 and beyond raise."""
    cfg = walogs.WalConfig(sync="interval", sync_interval=3600, max_segment_size=None)
    with walogs.Wal.open(log_dir, cfg) as wal:
        _fill(wal, 5)
        wal.sync()
        wal.rotate()
        assert wal.append(entry(6, 60)) == 6  # segment 2, written, not synced
        reader = walogs.WalReader(log_dir)
        assert reader.durable_lsn == 5
        assert list(reader.iter(5)) == expected(5, 5)
        with pytest.raises(walogs.LsnOutOfRangeError):
            list(reader.iter(7))
        try:
            got = list(reader.iter(6))
        except walogs.LsnOutOfRangeError as exc:
            pytest.fail(f"iter(6) with durable_lsn 5 raised {exc}")
        assert got == []
        following = reader.follow(6, timeout=5)
        timer = threading.Timer(0.1, wal.sync)
        timer.start()
        try:
            assert next(following) == (6, entry(6, 60))
        finally:
            timer.join(10)
            following.close()


# ---------------------------------------------------------------------------- no live writer, damage (P3)


def test_no_live_writer_reads_every_valid_frame_and_changes_nothing(log_dir):
    """P3: with the writer closed the reader reads every valid frame and changes no byte,
    size or mtime of any file, and creates none."""
    _write_closed_log(log_dir, 40, max_segment_size=500)
    before = snapshot(log_dir)
    reader = walogs.WalReader(log_dir)
    assert (reader.first_lsn, reader.durable_lsn) == (1, 40)
    assert list(reader.iter()) == expected(1, 40)
    assert list(reader.iter(17)) == expected(17, 40)
    assert list(reader.follow(timeout=0.05)) == expected(1, 40)
    with pytest.raises(walogs.LsnOutOfRangeError):
        list(reader.iter(42))
    assert snapshot(log_dir) == before
    assert not walogs._lock.writer_is_live(str(log_dir))[0]


TORN_VARIANTS = {  # damage to the last segment's tail, and the last LSN still whole after it
    "garbage": (lambda path: append_bytes(path, b"\x07\x00\x00"), 40),  # less than a header
    "header_only": (lambda path: append_bytes(path, bytes.fromhex("64000000deadbeef") + (41).to_bytes(8, "little")),
                    40),  # claims 100 bytes
    "cut_last_frame": (lambda path: shrink(path, 30), 39),  # the last frame loses its end
    "bad_crc_last_frame": (lambda path: flip_bit(path, os.path.getsize(path) - 5), 39),  # a bit of its data
}


@pytest.mark.parametrize("variant", sorted(TORN_VARIANTS))
def test_torn_tail_without_writer_yields_whole_frames_and_changes_nothing(log_dir, variant):
    """P3/P4/I10: with a torn tail on disk and no writer the reader yields the whole frames and
    stops; it never truncates (the writer's recovery does, I2), changes no file, creates none."""
    damage, last = TORN_VARIANTS[variant]
    _write_closed_log(log_dir, 40, max_segment_size=1000)
    damage(os.path.join(log_dir, segments_of(log_dir)[-1]))
    before = snapshot(log_dir)
    reader = walogs.WalReader(log_dir)
    assert list(reader.iter()) == expected(1, last)
    assert reader.durable_lsn == last and reader.first_lsn == 1
    assert list(reader.iter(last - 3)) == expected(last - 3, last)
    started = time.monotonic()
    assert list(reader.follow(timeout=0.1)) == expected(1, last)
    assert time.monotonic() - started < 5
    assert snapshot(log_dir) == before


def test_mid_log_damage_in_last_segment_raises_and_changes_nothing(log_dir):
    """P10/I10/P3: a flipped bit in an earlier frame of the last segment, with valid frames
    after it, is corruption, not a torn tail: WalCorruptError; the bad entry is never yielded;
    no file changes."""
    _write_segments(log_dir, [13, 13, 19])  # segment 3: LSNs 27..45
    flip_bit(seg(log_dir, 3), 76 * 2 + 20, 0)  # inside LSN 29's data
    before = snapshot(log_dir)
    reader = walogs.WalReader(log_dir)
    got, error = _collect(reader.iter())
    assert isinstance(error, walogs.WalCorruptError), error
    assert "wal-000003.log" in str(error)
    assert got == expected(1, len(got)) and len(got) <= 28  # never LSN 29 or past it
    got, error = _collect(reader.iter(27))
    assert isinstance(error, walogs.WalCorruptError) and got == expected(27, 26 + len(got)) and len(got) <= 2
    got, error = _collect(reader.follow(timeout=0.1))
    assert isinstance(error, walogs.WalCorruptError) and got == expected(1, len(got)) and len(got) <= 28
    assert snapshot(log_dir) == before


def test_damage_in_completed_segment_raises(log_dir):
    """I10/P3: a bad frame in a completed segment is WalCorruptError, even with no writer
    (here the last frame of segment 2, which in the last segment would be a torn tail)."""
    _write_segments(log_dir, [13, 13, 5])
    flip_bit(seg(log_dir, 2), 76 * 12 + 30, 0)  # LSN 26
    before = snapshot(log_dir)
    got, error = _collect(walogs.WalReader(log_dir).iter())
    assert isinstance(error, walogs.WalCorruptError) and "wal-000002.log" in str(error)
    assert got == expected(1, len(got)) and len(got) <= 25
    got, error = _collect(walogs.WalReader(log_dir).iter(20))
    assert isinstance(error, walogs.WalCorruptError) and got == expected(20, 19 + len(got)) and len(got) <= 6
    assert snapshot(log_dir) == before


def test_damage_before_live_writers_visible_end_raises(log_dir):
    """P4: the live writer published an end after syncing it, so a bad frame before that end
    in the active segment is WalCorruptError, never a quiet stop."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=None)) as wal:
        _fill(wal, 10)
        flip_bit(seg(log_dir), 76 * 9 + 20, 0)  # LSN 10, the last frame: a torn tail without a writer
        got, error = _collect(walogs.WalReader(log_dir).iter())
        assert isinstance(error, walogs.WalCorruptError), (got, error)
        assert got == expected(1, len(got)) and len(got) <= 9
        flip_bit(seg(log_dir), 76 * 9 + 20, 0)  # restore before the writer closes


# ---------------------------------------------------------------------------- rotation, checkpoint (P5)


def test_follow_across_rotations_and_checkpoints_from_a_writer_thread(log_dir):
    """P4/P5: follow() while a writer thread appends (8 entries per segment) and checkpoints up
    to what the reader has consumed: every entry exactly once, in order, byte-identical."""
    total = 400
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=640))
    progress = [0]
    failure = []
    stop = threading.Event()

    def write() -> None:
        try:
            deadline = time.monotonic() + 20
            while wal.next_lsn <= total and time.monotonic() < deadline and not stop.is_set():
                lsn = wal.next_lsn
                if lsn % 5 == 0 and lsn + 3 <= total:
                    wal.append_batch([entry(lsn + k, 60) for k in range(4)])
                else:
                    wal.append(entry(lsn, 60))
                if lsn % 40 == 0:
                    wal.checkpoint(progress[0])  # never past what the reader has consumed
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)

    writer = threading.Thread(target=write)
    reader = walogs.WalReader(log_dir)
    got = []
    writer.start()
    try:
        deadline = time.monotonic() + 30
        for lsn, data in reader.follow(start=1, timeout=5):
            got.append((lsn, data))
            progress[0] = lsn
            if lsn >= total or time.monotonic() > deadline or len(got) > total:
                break
    finally:
        stop.set()
        writer.join(30)
    assert not failure, failure
    assert not writer.is_alive()
    assert got == expected(1, total)
    assert wal.segment_count < 10 and wal.first_lsn > 1  # checkpoints did delete segments
    wal.close()


def _three_segments(log_dir) -> walogs.Wal:
    """Segments 1 (LSNs 1-3) and 2 (4-6) completed, 3 active with LSN 7."""
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=None))
    _fill(wal, 3)
    wal.rotate()
    _fill(wal, 3)
    return wal


@pytest.mark.parametrize("kind", ["iter", "follow"])
@pytest.mark.parametrize("consumed", [0, 1, 3])
def test_checkpoint_removing_segments_an_iterator_needs_raises(log_dir, kind, consumed):
    """P5, deterministic: an iterator positioned in segment 1 (created but not started, after
    one entry, or after all of segment 1) that has not opened segment 2; then rotate +
    checkpoint delete segments 1 and 2 and LSNs 7, 8 go to segment 3. Continuing, the
    iterator may finish the segment it holds open, then raises LsnOutOfRangeError; it never
    yields anything from segment 3 (a skip of 4..6)."""
    wal = _three_segments(log_dir)
    try:
        reader = walogs.WalReader(log_dir)
        running = reader.iter() if kind == "iter" else reader.follow(timeout=1)
        assert [next(running) for _ in range(consumed)] == expected(1, consumed)
        wal.rotate()
        assert wal.checkpoint(6) == 2
        assert not os.path.exists(seg(log_dir, 1)) and not os.path.exists(seg(log_dir, 2))
        _fill(wal, 2)  # LSNs 7, 8 in segment 3
        started = time.monotonic()
        rest, error = _collect(running, limit=20)
        assert time.monotonic() - started < 5
        assert isinstance(error, walogs.LsnOutOfRangeError), (rest, error)
        assert rest == expected(consumed + 1, consumed + len(rest)) and consumed + len(rest) <= 3, rest
        assert list(reader.iter()) == expected(7, 8)  # a fresh iterator starts at first_lsn
    finally:
        wal.close()


def _follow_in_child(reader: walogs.WalReader, out: int) -> None:
    """In a forked child: follow from the start, writing "3\\n" once it has 3 entries, then a JSON
    report: the LSNs it got, the WalError it ended with, LSNs whose bytes were wrong."""
    got, error, bad = [], None, []
    try:
        for lsn, data in reader.follow(timeout=10):
            got.append(lsn)
            if data != entry(lsn, 60):
                bad.append(lsn)
            if len(got) == 3:
                os.write(out, b"3\n")
            if len(got) > 20:
                break
    except walogs.WalError as exc:
        error = type(exc).__name__
    os.write(out, json.dumps({"got": got, "error": error, "bad": bad}).encode())


def test_stopped_follower_raises_when_the_segments_it_needs_vanish(log_dir):
    """P5, deterministic with SIGSTOP: a forked follower has read LSNs 1..3 and is polling at
    the end of segment 1 (the active one). It is stopped; the writer completes segment 1,
    writes 4..6 to segment 2, completes it, writes 7..8 to segment 3 and checkpoints 1 and 2
    away. Resumed, the follower must raise LsnOutOfRangeError, never jump to LSN 7."""
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=None))
    reaped = False
    pid = -1
    try:
        _fill(wal, 3)
        reader = walogs.WalReader(log_dir)
        pid, read_end = fork_with_pipe(lambda out: _follow_in_child(reader, out))  # the child only reads
        buf = bytearray()
        try:
            read_into(read_end, buf, time.monotonic() + 20, lambda b: b"\n" in b)
            assert bytes(buf).startswith(b"3\n"), bytes(buf)
            time.sleep(0.05)  # the follower now polls for more
            os.kill(pid, signal.SIGSTOP)
            _, status = os.waitpid(pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):  # it exited: already reaped
                reaped = True
                pytest.fail(f"the follower exited before it could be stopped: {status}, {bytes(buf)!r}")
            wal.rotate()
            _fill(wal, 3)  # 4..6 in segment 2
            wal.rotate()
            _fill(wal, 2)  # 7..8 in segment 3
            assert wal.checkpoint(6) == 2
            os.kill(pid, signal.SIGCONT)
            read_to_eof(read_end, buf, time.monotonic() + 20)
        finally:
            os.close(read_end)
            if not reaped:
                status = reap(pid)
                reaped = True
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        report = json.loads(bytes(buf)[2:])
        assert report["bad"] == []
        assert report["got"] == [1, 2, 3] and report["error"] == "LsnOutOfRangeError", report
    finally:
        if pid > 0 and not reaped:
            kill_all([pid])
        wal.close()


def test_follow_timeout_and_wakeup(log_dir):
    """follow(timeout=0.2) ends about 0.2 s after the last new entry (generous bounds); an
    entry appended from another thread while it waits is yielded promptly, and restarts the
    idle clock."""
    with walogs.Wal.open(log_dir) as wal:
        wal.append(entry(1, 60))
        reader = walogs.WalReader(log_dir)
        started = time.monotonic()
        assert list(reader.follow(timeout=0.2)) == expected(1, 1)
        elapsed = time.monotonic() - started
        assert 0.18 <= elapsed < 3, elapsed
        started = time.monotonic()
        assert list(reader.follow(2, timeout=0.2)) == []
        assert 0.18 <= time.monotonic() - started < 3
        timer = threading.Timer(0.3, wal.append, args=(entry(2, 60),))
        following = reader.follow(2, timeout=1.5)
        started = time.monotonic()
        timer.start()
        try:
            got = next(following)
            arrived = time.monotonic() - started
            assert got == (2, entry(2, 60))
            assert 0.25 <= arrived < 1.5, arrived  # before the timeout would have ended it
            assert list(following) == []
            ended = time.monotonic() - started
            assert ended - arrived >= 1.45 and ended < arrived + 5, (arrived, ended)
        finally:
            timer.join(10)
            following.close()


# ---------------------------------------------------------------------------- fork (P6)


def _read_on_in_child(plain, following, out: int) -> None:
    """In a forked child: read ``plain`` to its end and ``following`` up to LSN 60; write a JSON
    report of the LSNs each gave, LSNs whose bytes were wrong, and any error."""
    report = {"plain": [], "follow": [], "bad": [], "error": None}
    try:
        for lsn, data in plain:
            report["plain"].append(lsn)
            if data != entry(lsn, 60):
                report["bad"].append(lsn)
            if len(report["plain"]) > 100:
                break
        for lsn, data in following:  # the parent appends 41..60 meanwhile
            report["follow"].append(lsn)
            if data != entry(lsn, 60):
                report["bad"].append(lsn)
            if lsn >= 60 or len(report["follow"]) > 100:
                break
    except Exception as exc:
        report["error"] = repr(exc)
    os.write(out, json.dumps(report).encode())


def test_iterator_created_before_fork_works_in_child_and_parent(log_dir):
    """P6: an iterator (and a follower) created before os.fork keeps working in the child and
    in the parent at the same time: positional reads, no shared file offset."""
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=500))  # 6 frames per segment
    pid = -1
    try:
        _fill(wal, 40)
        reader = walogs.WalReader(log_dir)
        plain = reader.iter()
        following = reader.follow(timeout=5)
        assert next(plain) == (1, entry(1, 60))
        assert [next(following) for _ in range(10)] == expected(1, 10)
        pid, read_end = fork_with_pipe(lambda out: _read_on_in_child(plain, following, out))  # the child only reads
        buf = bytearray()
        try:
            got_plain = [next(plain) for _ in range(20)]  # the parent reads while the child does
            _fill(wal, 20)  # 41..60, for both followers
            got_plain += list(plain)
            got_follow = []
            deadline = time.monotonic() + 20
            for item in following:
                got_follow.append(item)
                if item[0] >= 60 or time.monotonic() > deadline or len(got_follow) > 100:
                    break
            read_to_eof(read_end, buf, time.monotonic() + 20)
        finally:
            os.close(read_end)
            status = reap(pid)
            pid = -1
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        report = json.loads(bytes(buf))
        assert report["error"] is None and report["bad"] == [], report
        # iter() stops at what is visible when it gets there: 40 or more, if 41.. were appended by then.
        assert report["plain"] == list(range(2, 2 + len(report["plain"]))) and 40 <= len(report["plain"]) + 1 <= 60
        assert report["follow"] == list(range(11, 61))
        assert got_plain == expected(2, 1 + len(got_plain)) and 40 <= len(got_plain) + 1 <= 60
        assert got_follow == expected(11, 60)
    finally:
        if pid > 0:
            kill_all([pid])
        wal.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
def test_dropped_iterators_close_their_descriptors(log_dir):
    """P9/P3 hygiene: an iterator or follower that is dropped, whether never started, started
    or exhausted, gives its descriptors back; otherwise a long-lived reader runs out of
    descriptors and keeps checkpointed segments' disk space pinned."""
    import gc

    _write_closed_log(log_dir, 10, max_segment_size=300)
    reader = walogs.WalReader(log_dir)
    cases = {
        "exhausted": lambda: list(reader.iter()),
        "started": lambda: next(reader.follow(timeout=1)),
        "never started iter": lambda: reader.iter(),
        "never started follow": lambda: reader.follow(5, timeout=1),
    }
    leaks = {}
    for name, make in cases.items():
        gc.collect()
        before = _open_fds()
        for _ in range(50):
            make()  # the result is dropped at once
        gc.collect()
        leaks[name] = _open_fds() - before
    assert all(n < 5 for n in leaks.values()), f"descriptors left open per 50 dropped iterators: {leaks}"


def test_reader_takes_no_lock(log_dir):
    """P3/I6: a reader holding open iterators never holds the writer lock: a writer opens with
    lock_timeout=0 while they run, and no reader call makes writer_is_live true."""
    _write_closed_log(log_dir, 10, max_segment_size=300)
    reader = walogs.WalReader(log_dir)
    plain, following = reader.iter(), reader.follow(timeout=0.05)
    assert next(plain) == (1, entry(1, 60)) and next(following) == (1, entry(1, 60))
    assert reader.first_lsn == 1 and reader.durable_lsn == 10
    assert walogs._lock.writer_is_live(str(log_dir)) == (False, None)
    with walogs.Wal.open(log_dir, lock_timeout=0) as wal:
        wal.append(entry(11, 60))
    assert list(plain) in (expected(2, 10), expected(2, 11))  # 11 is visible when it reaches it
    assert list(following) == expected(2, 11)


# ---------------------------------------------------------------------------- audit (P3)

_AUDIT_CHILD = r"""
import json, os, sys
import walogs

log = os.path.realpath(sys.argv[1])
expect_total = int(sys.argv[2])
report_path = sys.argv[3]
events = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
import fcntl
SETLK = {getattr(fcntl, n) for n in ("F_SETLK", "F_SETLKW", "F_OFD_SETLK", "F_OFD_SETLKW") if hasattr(fcntl, n)}
SETLK |= {37, 38}  # F_OFD_SETLK, F_OFD_SETLKW on Linux

def in_log(path):
    if isinstance(path, int):
        return False
    try:
        return os.path.realpath(os.fsdecode(path)).startswith(log)
    except Exception:
        return True

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if not in_log(path):
            return
        writes = (mode is not None and any(c in str(mode) for c in "wax+")) or bool(flags & WRITE_FLAGS)
        events.append(["open", os.fsdecode(path), mode, flags, writes])
    elif event in ("os.remove", "os.rename", "os.replace", "os.mkdir", "os.rmdir", "os.truncate",
                   "os.chmod", "os.chown", "os.utime", "os.link", "os.symlink", "shutil.rmtree"):
        events.append([event, repr(args), None, None, True])
    elif event == "fcntl.fcntl" and args[1] in SETLK:
        events.append([event, repr(args), None, None, True])
    elif event in ("fcntl.flock", "fcntl.lockf"):
        events.append([event, repr(args), None, None, True])
    elif event == "mmap.__new__":
        events.append([event, repr(args), None, None, True])

sys.addaudithook(hook)
reader = walogs.WalReader(log)
seen = [lsn for lsn, data in reader.iter()]
first, durable = reader.first_lsn, reader.durable_lsn
print("following", flush=True)
followed = []
for lsn, data in reader.follow(timeout=10):  # from the start again, then on to the new entries
    followed.append(lsn)
    if lsn >= expect_total or len(followed) > 10 * expect_total:
        break
with open(report_path, "w") as f:  # outside the log directory
    json.dump({"seen": seen, "followed": followed, "first": first, "durable": durable, "events": events}, f)
"""


def test_audit_hook_sees_no_write_open_lock_or_mmap(log_dir, tmp_path):
    """P3 with sys.addaudithook in a child process (hooks cannot be removed): iter, follow,
    first_lsn and durable_lsn over a live log open nothing in the log directory for writing,
    remove/rename/truncate nothing, take no lock (no F_*SETLK, flock, lockf), map nothing."""
    total = 80
    report_path, err_path = tmp_path / "report.json", tmp_path / "stderr.txt"
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=600)) as wal:
        _fill(wal, 50)
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONDONTWRITEBYTECODE="1")
        with open(err_path, "w") as err:
            child = subprocess.Popen(
                [sys.executable, "-c", _AUDIT_CHILD, str(log_dir), str(total), str(report_path)],
                stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, env=env)
        with watched(child):  # the watchdog bounds the blocking readline
            line = child.stdout.readline()
            assert line.strip() == "following", (line, child.poll(), err_path.read_text())
            for _ in range(3):
                _fill(wal, 10)
                time.sleep(0.02)
            child.wait(timeout=60)
    assert child.returncode == 0, err_path.read_text()
    report = json.loads(report_path.read_text())
    assert report["seen"] == list(range(1, 51)) and report["followed"] == list(range(1, total + 1))
    assert (report["first"], report["durable"]) == (1, 50)
    opened = [e for e in report["events"] if e[0] == "open"]
    assert opened, "the audit hook saw no open in the log directory: the check would prove nothing"
    assert [e for e in report["events"] if e[-1]] == []
