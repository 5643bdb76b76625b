"""The writer's public API (docs/api.rst), one process. Invariant ids in docstrings."""

from __future__ import annotations

import array
import dataclasses
import inspect
import math
import os
import tempfile
import threading
import time

import pytest

import walogs
from walogs import _io, _segments
from _damage import seg_name
from _procs import run_python
from conftest import HeldSync, entry, make_frame, queue_appends, run_threads, settled, snapshot


def seg(log_dir, n: int = 1) -> str:
    return os.path.join(log_dir, seg_name(n))


def record_calls(monkeypatch, *names):
    """Wrap _io functions with recorders that still make the real call."""
    calls = []
    for name in names:
        real = getattr(_io, name)

        def wrapper(*args, _name=name, _real=real):
            calls.append((_name, args))
            return _real(*args)

        monkeypatch.setattr(_io, name, wrapper)
    return calls


def test_module_constants():
    assert walogs.MAX_ENTRY_SIZE == 16 * 1024 * 1024
    assert walogs.FRAME_HEADER_SIZE == 16
    assert walogs.DEFAULT_MAX_SEGMENT_SIZE == 64 * 1024 * 1024
    assert walogs.IMPLEMENTATION in ("cython", "python")
    assert isinstance(walogs.__version__, str)


def test_new_log_layout_and_first_lsn_is_one(log_dir):
    """I9: a new log starts at LSN 1; the directory holds LOCK, VISIBLE and wal-000001.log (and,
    where the filesystem gains from preallocation, the next segment being prepared in the background)."""
    from walogs._format import PREPARED_NAME

    with walogs.Wal.open(log_dir) as wal:
        assert sorted(set(os.listdir(log_dir)) - {PREPARED_NAME}) == ["LOCK", "VISIBLE", "wal-000001.log"]
        assert (wal.next_lsn, wal.first_lsn, wal.durable_lsn, wal.segment_count) == (1, None, 0, 1)
        assert wal.tail_state == walogs.TailState.CLEAN and wal.tail_state.clean
        assert wal.path == log_dir and wal.config == walogs.WalConfig() and not wal.closed
        assert wal.append(b"a") == 1
        assert wal.append(b"b") == 2


def test_frames_on_disk_match_format(log_dir):
    """I1: the bytes on disk are exactly docs/format.md frames (built here with struct + zlib)."""
    payloads = [b"hello", b"", bytes(range(256)) * 3]
    with walogs.Wal.open(log_dir) as wal:
        for p in payloads:
            wal.append(p)
    with open(seg(log_dir), "rb") as f:
        assert f.read() == b"".join(make_frame(i + 1, p) for i, p in enumerate(payloads))
    assert make_frame(1, b"hello").hex() == "050000002f95e510010000000000000068656c6c6f"


def test_bytes_like_inputs(log_dir):
    with walogs.Wal.open(log_dir) as wal:
        wal.append(bytearray(b"ba"))
        wal.append(memoryview(b"xmvx")[1:3])
        wal.append(array.array("i", [1, 2]))
        assert [d for _, d in wal.iter()] == [b"ba", b"mv", array.array("i", [1, 2]).tobytes()]


@pytest.mark.parametrize("bad", ["text", 5, None, [b"a"], 1.5])
def test_non_bytes_raise_typeerror_and_write_nothing(log_dir, bad):
    with walogs.Wal.open(log_dir) as wal:
        wal.append(b"keep")
        with pytest.raises(TypeError):
            wal.append(bad)
        with pytest.raises(TypeError):
            wal.append_batch([b"ok", bad])
        assert wal.next_lsn == 2
        assert os.path.getsize(seg(log_dir)) == 16 + 4


def test_entry_too_large_refused_before_writing(log_dir):
    """I7: an entry over 16 MiB is refused before anything is written; exactly 16 MiB fits."""
    with walogs.Wal.open(log_dir) as wal:
        wal.append(b"x")
        size_before = os.path.getsize(seg(log_dir))
        with pytest.raises(walogs.EntryTooLargeError) as info:
            wal.append(bytes(walogs.MAX_ENTRY_SIZE + 1))
        assert info.value.size == walogs.MAX_ENTRY_SIZE + 1 and info.value.max == walogs.MAX_ENTRY_SIZE
        assert isinstance(info.value, ValueError) and isinstance(info.value, walogs.WalError)
        with pytest.raises(walogs.EntryTooLargeError):
            wal.append_batch([b"a", bytes(walogs.MAX_ENTRY_SIZE + 1), b"c"])
        assert os.path.getsize(seg(log_dir)) == size_before and wal.next_lsn == 2
        big = os.urandom(1024) * (walogs.MAX_ENTRY_SIZE // 1024)
        assert wal.append(big) == 2
        assert list(wal.iter(2)) == [(2, big)]


def test_append_batch(log_dir):
    with walogs.Wal.open(log_dir) as wal:
        assert wal.append(b"0") == 1
        lsns = wal.append_batch(entry(i) for i in range(5))
        assert lsns == range(2, 7)
        assert wal.append_batch([]) == range(7, 7)
        assert [d for _, d in wal.iter(2)] == [entry(i) for i in range(5)]
        assert wal.durable_lsn == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sync": "sometimes"},
        {"sync": "ALWAYS"},
        {"max_segment_size": 0},
        {"max_segment_size": -1},
        {"max_segment_size": 1.5},
        {"max_segment_size": True},
        {"sync_interval": 0},
        {"sync_interval": -0.1},
        {"sync_interval": math.nan},
        {"sync_interval": math.inf},
        {"sync_interval": "1"},
    ],
)
def test_invalid_config_raises_valueerror(kwargs):
    with pytest.raises(ValueError):
        walogs.WalConfig(**kwargs)


def test_config_is_frozen_and_checked_at_open(log_dir):
    cfg = walogs.WalConfig(max_segment_size=None, sync="none", sync_interval=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sync = "always"  # type: ignore[misc]
    with pytest.raises(TypeError):
        walogs.Wal.open(log_dir, {"sync": "none"})  # type: ignore[arg-type]
    assert not log_dir.exists()


def test_tailstate_values():
    assert walogs.TailState.CLEAN == walogs.TailState() == walogs.TailState(None)
    assert walogs.TailState.CLEAN.clean and not walogs.TailState(10).clean
    assert walogs.TailState(10).truncated_at == 10


def test_iter_ranges(log_dir):
    """I10/P5: iter covers first_lsn..next_lsn-1; other starts raise LsnOutOfRangeError."""
    with walogs.Wal.open(log_dir) as wal:
        assert list(wal.iter()) == [] and list(iter(wal)) == []
        assert list(wal.iter(1)) == []
        with pytest.raises(walogs.LsnOutOfRangeError):
            wal.iter(2)
        for i in range(10):
            wal.append(entry(i))
        assert [lsn for lsn, _ in wal] == list(range(1, 11))
        assert [lsn for lsn, _ in wal.iter(7)] == [7, 8, 9, 10]
        assert list(wal.iter(11)) == []
        for bad in (0, 12, -1):
            with pytest.raises(walogs.LsnOutOfRangeError) as info:
                wal.iter(bad)
            assert isinstance(info.value, LookupError)
        with pytest.raises(TypeError):
            wal.iter("3")  # type: ignore[arg-type]


def test_closed_wal_raises_on_every_call(log_dir):
    wal = walogs.Wal.open(log_dir)
    wal.append(b"x")
    wal.close()
    wal.close()  # idempotent
    assert wal.closed
    calls = [
        lambda: wal.append(b"y"), lambda: wal.append_batch([b"y"]), wal.sync, wal.rotate,
        lambda: wal.checkpoint(1), wal.iter, lambda: wal.next_lsn, lambda: wal.first_lsn,
        lambda: wal.durable_lsn, lambda: wal.segment_count, lambda: wal.tail_state,
    ]
    for call in calls:
        with pytest.raises(walogs.WalClosedError):
            call()
    assert wal.path == log_dir  # plain attributes stay readable


def test_context_manager_closes_and_releases_lock(log_dir):
    """I6: a second writer in the same process is refused until the first closes."""
    with walogs.Wal.open(log_dir) as wal:
        with pytest.raises(walogs.WalLockedError) as info:
            walogs.Wal.open(log_dir)
        assert info.value.path == str(log_dir) and str(log_dir) in str(info.value)
    assert wal.closed
    with walogs.Wal.open(log_dir) as again:
        assert again.next_lsn == 1


def test_lock_timeout_waits_then_raises(log_dir):

    with walogs.Wal.open(log_dir):
        started = time.monotonic()
        with pytest.raises(walogs.WalLockedError):
            walogs.Wal.open(log_dir, lock_timeout=0.2)
        assert time.monotonic() - started >= 0.2
        with pytest.raises(ValueError):
            walogs.Wal.open(log_dir, lock_timeout=-1)


def test_lock_timeout_succeeds_when_released(log_dir):
    first = walogs.Wal.open(log_dir)
    timer = threading.Timer(0.1, first.close)
    timer.start()
    with walogs.Wal.open(log_dir, lock_timeout=5) as second:
        assert first.closed and not second.closed
    timer.join()


def frames_end(path) -> int:
    """Where the segment's valid frames end (the file may be longer: zeros it is written into)."""
    return _segments.scan_segment(0, str(path)).end


def test_always_syncs_before_append_returns(log_dir, monkeypatch):
    """I4: with sync="always", append returns only after an fdatasync covering the frame."""
    wal = settled(walogs.Wal.open(log_dir))  # its next segment prepared: appends alone make calls
    calls = record_calls(monkeypatch, "pwrite_all", "fdatasync")
    wal.append(b"x")
    assert [name for name, _ in calls] == ["pwrite_all", "fdatasync"]
    assert wal.durable_lsn == 1
    calls.clear()
    wal.append_batch([b"a", b"b", b"c"])
    assert [name for name, _ in calls] == ["pwrite_all", "fdatasync"]  # P7: one write, one sync
    wal.close()


@pytest.mark.parametrize("mode", ["none", "interval"])
def test_lazy_modes_write_at_once_and_sync_on_demand(log_dir, monkeypatch, mode):
    """P7: every mode hands the frame to the kernel before append returns; sync() makes it durable."""
    wal = settled(walogs.Wal.open(log_dir, walogs.WalConfig(sync=mode, sync_interval=30)))
    calls = record_calls(monkeypatch, "pwrite_all", "fdatasync")
    wal.append(b"x")
    assert [name for name, _ in calls] == ["pwrite_all"]
    assert os.path.getsize(seg(log_dir)) == 17 and wal.durable_lsn == 0
    wal.sync()
    assert wal.durable_lsn == 1 and calls[-1][0] == "fdatasync"
    wal.append(b"y")
    calls.clear()
    wal.close()
    assert [name for name, _ in calls] == ["fdatasync"]  # close syncs what was written


def test_interval_mode_syncs_in_background(log_dir):

    with walogs.Wal.open(log_dir, walogs.WalConfig(sync="interval", sync_interval=0.01)) as wal:
        wal.append(b"x")
        deadline = time.monotonic() + 5
        while wal.durable_lsn < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert wal.durable_lsn == 1


@pytest.mark.parametrize("preallocate", [False, True])
def test_rotate(log_dir, monkeypatch, preallocate):
    """I15: a new segment exists durably (directory synced) before its first frame: created
    empty, or (preallocate) the prepared segment renamed into place."""
    with settled(walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=4096, preallocate=preallocate))) as wal:
        wal.rotate()
        assert wal.segment_count == 1  # no-op on an empty active segment
        wal.append(b"a")
        calls = record_calls(monkeypatch, "create_new", "rename", "sync_dir", "pwrite_all", "fdatasync")
        wal.rotate()
        wal.append(b"b")
        names = [name for name, _ in calls]
        made = "rename" if preallocate else "create_new"
        assert names.index(made) < names.index("sync_dir") < names.index("pwrite_all")
        assert os.path.getsize(seg(log_dir, 1)) == 17  # a completed segment ends at its last frame
        assert wal.segment_count == 2 and os.path.getsize(seg(log_dir, 2)) == (4096 if preallocate else 17)
        assert frames_end(seg(log_dir, 2)) == 17
        assert list(wal) == [(1, b"a"), (2, b"b")]
    assert os.path.getsize(seg(log_dir, 2)) == 17  # a clean close trims the active segment


def test_rotation_by_size(log_dir):
    """A frame that would take a non-empty segment past the limit goes to a new segment;
    an entry larger than the limit gets a segment of its own; a batch never spans two."""
    cfg = walogs.WalConfig(max_segment_size=300)
    with walogs.Wal.open(log_dir, cfg) as wal:
        for i in range(5):
            wal.append(entry(i, 84))  # 100-byte frames: 3 per segment
        assert [frames_end(seg(log_dir, n)) for n in (1, 2)] == [300, 200]
        wal.append(bytes(1000))
        assert frames_end(seg(log_dir, 3)) == 1016 and wal.segment_count == 3
        wal.append_batch([entry(i, 84) for i in range(4)])  # 400 bytes: own segment, whole
        assert frames_end(seg(log_dir, 4)) == 400
        # Completed segments end at their last frame (a prepared one holds zeros until then).
        assert [os.path.getsize(seg(log_dir, n)) for n in (1, 2, 3)] == [300, 200, 1016]
        wal.append(b"z")
        assert wal.segment_count == 5
        assert [lsn for lsn, _ in wal] == list(range(1, 12))
    with walogs.Wal.open(log_dir, cfg) as wal:
        assert wal.segment_count == 5 and wal.next_lsn == 12


def test_checkpoint(log_dir, monkeypatch):
    """I13: the active segment is never deleted. I14: oldest first, directory synced after each."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=300)) as wal:
        for i in range(9):
            wal.append(entry(i, 84))  # segments 1..3 hold LSNs 1-3, 4-6, 7-9
        assert wal.segment_count == 3
        assert wal.checkpoint(2) == 0
        calls = record_calls(monkeypatch, "unlink", "sync_dir")
        assert wal.checkpoint(6) == 2
        names = [(n, os.path.basename(a[0])) for n, a in calls if n == "unlink"]
        assert names == [("unlink", "wal-000001.log"), ("unlink", "wal-000002.log")]
        kinds = [n for n, _ in calls]
        assert kinds[-4:] == ["unlink", "sync_dir", "unlink", "sync_dir"]
        assert wal.first_lsn == 7 and wal.segment_count == 1
        assert wal.checkpoint(10**6) == 0  # the active segment stays (I13)
        assert os.path.exists(seg(log_dir, 3))
        with pytest.raises(walogs.LsnOutOfRangeError):
            wal.iter(6)
        assert [lsn for lsn, _ in wal] == [7, 8, 9]
        with pytest.raises(TypeError):
            wal.checkpoint("6")  # type: ignore[arg-type]


def test_public_methods_take_their_documented_keywords(log_dir):
    """Every public method keeps the signature the API reference gives, keywords included
    (a wrapper that completes a deferred close once dropped them: checkpoint(applied_up_to=...)
    raised TypeError)."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=300)) as wal:
        for i in range(9):
            wal.append(data=entry(i, 84))
        wal.append_batch(items=[b"x"])
        assert wal.checkpoint(applied_up_to=6) == 2
        assert [lsn for lsn, _ in wal.iter(start=7)] == [7, 8, 9, 10]
        for name in ("append", "append_batch", "checkpoint", "iter", "sync", "rotate", "close"):
            method = getattr(walogs.Wal, name)
            assert inspect.signature(method) == inspect.signature(inspect.unwrap(method)), name


def test_checkpoint_everything_then_reopen_keeps_lsns(log_dir):
    """P1: LSNs never restart at 1 after a checkpoint removed every stored entry (Rust 0.1.0 did)."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=300)) as wal:
        for i in range(7):
            wal.append(entry(i, 84))
        wal.rotate()
        assert wal.checkpoint(7) == 3
        assert wal.first_lsn is None and wal.next_lsn == 8
    with walogs.Wal.open(log_dir) as wal:
        assert wal.first_lsn is None and wal.next_lsn == 8
        assert list(wal) == []
        assert wal.append(b"after") == 8
    with walogs.Wal.open(log_dir) as wal:
        assert list(wal) == [(8, b"after")]


def test_threads_append_concurrently(log_dir):
    """Methods are thread-safe: 8 threads, every LSN unique and contiguous, data intact."""
    results: dict[int, bytes] = {}
    errors = []

    def work(t: int) -> None:
        try:
            for i in range(40):
                data = b"t%d-%d" % (t, i)
                results[wal.append(data)] = data
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=2000)) as wal:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sorted(results) == list(range(1, 321))
        assert dict(wal.iter()) == results
        assert wal.durable_lsn == 320


def test_reopen_continues_and_reads_everything(log_dir):
    """I8: next_lsn comes from the log on disk."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=1000)) as wal:
        wal.append_batch(entry(i) for i in range(30))
    with walogs.Wal.open(log_dir) as wal:
        assert wal.next_lsn == 31 and wal.first_lsn == 1 and wal.durable_lsn == 30
        assert [d for _, d in wal] == [entry(i) for i in range(30)]


def test_failed_open_leaves_files_untouched_and_lock_free(log_dir):
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=300)) as wal:
        for i in range(6):
            wal.append(entry(i, 84))
    os.rename(seg(log_dir, 2), seg(log_dir, 3))  # a gap (I11)
    before = snapshot(log_dir)
    with pytest.raises(walogs.WalCorruptError) as info:
        walogs.Wal.open(log_dir)
    assert "wal-000001.log" in str(info.value) and "wal-000003.log" in str(info.value)
    assert snapshot(log_dir) == before
    from walogs import _lock

    assert _lock.writer_is_live(str(log_dir)) == (False, None)


def test_path_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"data")
    with pytest.raises(NotADirectoryError) as info:
        walogs.Wal.open(target)
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"data"


def test_unreadable_directory_raises_permission_error(tmp_path):
    """Runs in a child that drops root, since root reads any directory."""
    os.chmod(tmp_path, 0o755)
    for parent in tmp_path.parents:  # pytest's base temp dir is 0700: let the child reach ours
        if str(parent).startswith(tempfile.gettempdir() + os.sep):
            os.chmod(parent, os.stat(parent).st_mode | 0o755)
    log = tmp_path / "log"
    with walogs.Wal.open(log) as wal:
        wal.append(b"x")
    os.chmod(log, 0o000)
    code = (
        "import os, sys, walogs\n"
        "if os.getuid() == 0: os.setgid(65534); os.setuid(65534)\n"
        "try:\n walogs.Wal.open(sys.argv[1])\n"
        "except PermissionError as e:\n print('PermissionError', e.filename)\n"
    )
    try:
        out = run_python(code, log)
    finally:
        os.chmod(log, 0o755)
    assert out.stdout.startswith("PermissionError"), out.stderr
    assert str(log) in out.stdout


def _durable_appends_from_threads(wal: walogs.Wal, nthreads: int = 8, each: int = 25) -> list[int]:
    """``nthreads`` threads append ``each`` entries; every append must be durable when it returns (I4)."""
    acked: list[int] = []
    not_durable: list[int] = []

    def work() -> None:
        for _ in range(each):
            lsn = wal.append(b"g")
            if wal.durable_lsn < lsn:
                not_durable.append(lsn)
            acked.append(lsn)

    run_threads([threading.Thread(target=work, daemon=True) for _ in range(nthreads)], 60)
    assert not_durable == []
    return acked


def test_writer_twins_have_one_surface():
    """The compiled writer and its Python twin offer the same members with the same
    documentation, and nothing else public: the twin reads as the compiled one's
    specification (#12: no return codes, no pause/cursor/switch steps for Wal to drive)."""
    from walogs import _writer_py

    compiled = pytest.importorskip("walogs._writer")

    def surface(cls: type) -> list[str]:
        return sorted(name for name in dir(cls) if not name.startswith("_"))

    assert surface(compiled.SegmentWriter) == surface(_writer_py.SegmentWriter) == [
        "append", "append_batch", "close", "drop_in_child", "durable_lsn", "next_lsn", "poison", "poison_with",
        "rotate", "snapshot", "sync", "sync_latencies", "sync_seconds", "syncs"]
    assert not hasattr(compiled, "FULL") and not hasattr(_writer_py, "BLOCKED")

    def doc(name: str, member: object) -> str:
        text = inspect.getdoc(member) or ""
        first, _, rest = text.partition("\n")
        embedded = first.startswith((f"{name}(", f"SegmentWriter.{name}"))  # the compiled signature line
        return rest.strip() if embedded else text

    for name in surface(compiled.SegmentWriter):
        twins = (getattr(compiled.SegmentWriter, name), getattr(_writer_py.SegmentWriter, name))
        assert doc(name, twins[0]) == doc(name, twins[1]), name


def test_group_commit_shares_fdatasync(log_dir, monkeypatch):
    """I4 + group commit: 8 threads appending with sync="always" each get an acknowledged,
    durable LSN, with fewer fdatasync calls than appends (followers ride a leader's sync)."""
    real = _io.fdatasync
    syncs = {"n": 0}

    def slow_fdatasync(fd: int) -> None:
        syncs["n"] += 1
        time.sleep(0.002)  # a slow disk, so appends pile up behind a sync (still a real fdatasync)
        real(fd)

    wal = walogs.Wal.open(log_dir)
    monkeypatch.setattr(_io, "fdatasync", slow_fdatasync)
    acked = _durable_appends_from_threads(wal)
    assert sorted(acked) == list(range(1, 201))
    assert syncs["n"] < 200
    monkeypatch.undo()
    wal.close()


def test_group_commit_with_the_real_system_calls(log_dir):
    """I4 + group commit with nothing wrapped: the compiled writer then makes its system
    calls from C without the GIL (the wrapped-_io tests above take its seam instead).
    Every append from 8 threads and batches from a ninth is durable on return, each LSN
    is handed out once, a reopen finds exactly the acknowledged entries in LSN order,
    and the writer counts no more fdatasync calls than durable writes."""
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=2048))  # ~9 KiB: rotations too
    batches: list[range] = []

    def batch_work() -> None:
        for i in range(20):
            batches.append(wal.append_batch([b"b%d" % i] * 5))

    batcher = threading.Thread(target=batch_work, daemon=True)
    batcher.start()
    acked = _durable_appends_from_threads(wal, 8, 50)
    batcher.join(60)
    assert not batcher.is_alive()
    written = acked + [lsn for r in batches for lsn in r]
    assert sorted(written) == list(range(1, 8 * 50 + 20 * 5 + 1))
    assert wal.durable_lsn == len(written)
    assert 0 < wal._writer.syncs <= 8 * 50 + 20
    wal.close()
    with walogs.Wal.open(log_dir) as again:
        assert [lsn for lsn, _ in again.iter()] == list(range(1, len(written) + 1))
        assert again.segment_count > 1  # rotations ran between group commits


def test_close_wakes_every_group_commit_waiter(log_dir, monkeypatch):
    """Group commit + close: appends waiting behind a slow sync when close() runs all return
    acknowledged, because close() syncs them (I4): none is refused with WalClosedError
    although its entry became durable, none is left asleep, and all are there after reopen."""
    wal = walogs.Wal.open(log_dir)
    held = HeldSync(monkeypatch)
    threads, results = queue_appends(wal, 6, held)
    closer = threading.Thread(target=wal.close, daemon=True)
    closer.start()
    time.sleep(0.05)  # let close() take the writer's mutex before the held sync ends
    held.release()
    closer.join(10)
    for t in threads:
        t.join(10)
    assert not closer.is_alive() and not any(t.is_alive() for t in threads)
    assert sorted(results.values()) == [1, 2, 3, 4, 5, 6]
    monkeypatch.undo()
    with walogs.Wal.open(log_dir) as again:
        assert [lsn for lsn, _ in again.iter()] == [1, 2, 3, 4, 5, 6]


def test_group_commit_followers_each_woken_once(log_dir, monkeypatch):
    """Group commit wakes no thundering herd: a sync wakes the followers it covered, and a
    leader gathers before it syncs, so wake-ups <= appends + syncs (a design that wakes
    every waiter for every sync, covered or not, wakes about twice that). Every append is
    durable on return (I4). The wake-ups are counted on the pure-Python writer's two
    condition variables (the compiled writer runs the same algorithm on pthread condition
    variables, without the GIL, where nothing can count them), so it runs on that writer in
    both suites."""
    from walogs import _impl, _writer_py

    wakes = {"n": 0}
    syncs = {"n": 0}
    real_fdatasync = _io.fdatasync

    def counting_fdatasync(fd: int) -> None:
        syncs["n"] += 1
        time.sleep(0.002)  # a slow disk, so appends pile up behind a sync (still a real fdatasync)
        real_fdatasync(fd)

    class CountingCondition:
        def __init__(self, condition: threading.Condition) -> None:
            self._condition = condition

        def wait(self, timeout: float | None = None) -> bool:
            try:
                return self._condition.wait(timeout)
            finally:
                wakes["n"] += 1

        def notify(self, n: int = 1) -> None:
            self._condition.notify(n)

        def notify_all(self) -> None:
            self._condition.notify_all()

    # Counting only: the conditions are the real ones, so the threads still block and wake for real.
    monkeypatch.setattr(_impl, "SegmentWriter", _writer_py.SegmentWriter)
    with walogs.Wal.open(log_dir) as wal:
        writer = wal._writer
        writer._changed, writer._gathered = CountingCondition(writer._changed), CountingCondition(writer._gathered)
        monkeypatch.setattr(_io, "fdatasync", counting_fdatasync)  # after open: recovery's sync not counted
        acked = _durable_appends_from_threads(wal)
    assert sorted(acked) == list(range(1, 201))
    assert 0 < syncs["n"] < 200
    assert wakes["n"] <= 200 + syncs["n"], (wakes, syncs)


@pytest.mark.parametrize("sync", ["always", "none"])
def test_an_entry_larger_than_a_segment_is_not_starved(log_dir, monkeypatch, sync):
    """An entry larger than max_segment_size only fits an empty segment. With 6 threads
    appending small entries, the append that rotates for it writes it into the fresh
    segment before any other append can (found in review: it used to rotate, lose the new
    segment to a small append, and rotate again, up to 243 times for one append). Each
    big append therefore creates at most one segment itself (counted per thread through
    _io.create_new; wrapping it does not change how appends are written), and every
    entry is durable (I4) or written ("none") and read back in LSN order."""
    created: dict[str, int] = {}
    real_create = _io.create_new

    def counting_create(path: str) -> int:
        name = threading.current_thread().name
        created[name] = created.get(name, 0) + 1
        return real_create(path)

    monkeypatch.setattr(_io, "create_new", counting_create)
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(sync=sync, max_segment_size=4096))
    stop = threading.Event()

    def small() -> None:
        while not stop.is_set():
            wal.append(b"s" * 100)

    threads = [threading.Thread(target=small, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    big_lsns = []
    try:
        for _ in range(20):
            created["big"] = 0
            threading.current_thread().name, saved = "big", threading.current_thread().name
            try:
                lsn = wal.append(b"B" * 8000)
            finally:
                threading.current_thread().name = saved
            assert created["big"] <= 1
            if sync == "always":
                assert wal.durable_lsn >= lsn
            big_lsns.append(lsn)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    wal.close()
    with walogs.Wal.open(log_dir) as again:
        entries = list(again)
    assert [lsn for lsn, _ in entries] == list(range(1, len(entries) + 1))
    assert all(dict(entries)[lsn] == b"B" * 8000 for lsn in big_lsns)
