"""Write and sync failures poison the writer (P2); fork makes a handle unusable (P6).

The write failure is real: a child process lowers RLIMIT_FSIZE with SIGXFSZ
ignored, so the kernel gives a short write and then EFBIG. An fdatasync
failure cannot be provoked for real without root-only tools (dm-flakey,
fault-injecting block devices), so those tests wrap ``_io.fdatasync`` with a
function that raises EIO instead of syncing; everything else stays real.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import walogs
from walogs import _io, _lock, _prealloc, _segments
from _procs import ROOT, fork_with_pipe, run_python, stop
from conftest import HeldSync, Interrupted, interrupted_after, join_all, queue_appends, run_threads, write_calls_in_fork

@pytest.fixture(autouse=True)
def prepare_inline(monkeypatch):
    """The next segment is prepared (preallocate) in the writer's own thread, at open and inside
    a rotation's rename: a test that wraps fdatasync after the open sees the writer's calls only,
    in one order (the preparer's own faults: tests/test_prealloc.py)."""
    monkeypatch.setattr(_prealloc, "BACKGROUND", False)


_FSIZE_CHILD = r"""
import json, os, resource, signal, sys
import walogs
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path, limit = sys.argv[1], int(sys.argv[2])
wal = walogs.Wal.open(path, walogs.WalConfig(max_segment_size=None))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
acked, failure, later = [], None, None
for i in range(10_000):
    data = (b"%06d" % i) * 20
    try:
        acked.append([wal.append(data), data.decode()])
    except OSError as exc:
        failure = exc.errno
        break
try:
    wal.append(b"after")
except walogs.WalError as exc:
    later = type(exc).__name__
except OSError as exc:
    later = "OSError %d" % exc.errno
print(json.dumps({"acked": acked, "errno": failure, "later": later}))
"""


def _segment_fd(wal: walogs.Wal) -> int:
    """The descriptor the writer appends through (the active segment's, opened for writing).

    Found in /proc/self/fd: the writer does not hand its descriptor out.
    """
    active = os.path.join(wal.path, _segments.segment_name(wal._writer.snapshot()[0]))
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            writable = fcntl.fcntl(int(name), fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
        except OSError:
            continue  # closed meanwhile (listdir's own descriptor)
        if target == active and writable:
            return int(name)
    raise AssertionError(f"no descriptor open for writing on {active}")


def test_real_efbig_poisons_writer_and_loses_nothing(log_dir):
    """P2: a real short write then EFBIG: that append raises OSError, the next WalError;
    the partial frame is cut at once; a fresh writer recovers every acknowledged entry
    and reuses no acknowledged LSN."""
    limit = 10_000  # not a multiple of the 136-byte frame: the last write is short
    out = run_python(_FSIZE_CHILD, log_dir, limit, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["errno"] == errno.EFBIG
    assert report["later"] == "WalError"
    acked = [(lsn, data.encode()) for lsn, data in report["acked"]]
    assert len(acked) == limit // 136
    # The kernel wrote a partial frame up to the limit; the writer cut it when the write failed.
    assert os.path.getsize(log_dir / "wal-000001.log") == len(acked) * 136
    with walogs.Wal.open(log_dir) as wal:
        assert wal.tail_state.clean
        assert list(wal) == acked
        assert wal.append(b"next") == len(acked) + 1


@pytest.mark.parametrize("sync", ["always", "none"])
def test_real_failing_fdatasync_poisons_writer(log_dir, sync):
    """P2 with a real failing sync, no wrapper: the segment's descriptor is pointed at
    /dev/null (dup2), where pwrite succeeds and fdatasync fails with EINVAL, so both
    writers' own system calls fail for real (the compiled one calls libc directly when
    _io is not wrapped). The failing call raises that OSError, later writes WalError,
    close() does not sync, and a reopen has every acknowledged entry and nothing else."""
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(sync=sync))
    acked = [(wal.append(b"kept %d" % i), b"kept %d" % i) for i in range(3)]
    wal.sync()
    segment_fd = _segment_fd(wal)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, segment_fd)
    finally:
        os.close(null)
    with pytest.raises(OSError) as failed:
        if sync == "always":
            wal.append(b"lost")  # written to /dev/null, then its fdatasync fails
        else:
            assert wal.append(b"lost") == 4  # "none": written, not synced, so no error yet
            wal.sync()
    assert failed.value.errno == errno.EINVAL
    assert not isinstance(failed.value, walogs.WalError)
    assert wal.durable_lsn == 3
    with pytest.raises(walogs.WalError, match="poisoned"):
        wal.append(b"after")
    with pytest.raises(walogs.WalError, match="poisoned"):
        wal.sync()
    wal.close()
    with walogs.Wal.open(log_dir) as again:
        assert list(again) == acked
        assert again.next_lsn == 4


def _failing_fdatasync(monkeypatch, fail_on: int):
    """Replace _io.fdatasync: the fail_on-th call raises EIO instead of syncing (see module doc)."""
    real = _io.fdatasync
    calls = {"n": 0}

    def fdatasync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == fail_on:
            raise OSError(errno.EIO, "injected EIO")
        real(fd)

    monkeypatch.setattr(_io, "fdatasync", fdatasync)
    return calls


@pytest.mark.parametrize("op", ["append", "append_batch", "sync", "rotate"])
def test_failed_fdatasync_poisons_without_retry(log_dir, monkeypatch, op):
    """P2: the failing call raises the OSError; later write calls raise WalError and never
    sync again; the failed frames are never reported durable, not even after a reopen
    (the Rust crate went on writing a second frame with the same LSN)."""
    mode = "always" if op.startswith("append") else "none"
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(sync=mode))
    wal.append(b"durable")
    if mode == "none":
        wal.sync()
    calls = _failing_fdatasync(monkeypatch, 1)
    with pytest.raises(OSError) as info:
        if op == "append":
            wal.append(b"lost?")
        elif op == "append_batch":
            wal.append_batch([b"lost?", b"lost?"])
        else:
            wal.append(b"lost?")
            getattr(wal, op)()
    assert info.value.errno == errno.EIO
    assert wal.durable_lsn == 1
    for call in (lambda: wal.append(b"x"), lambda: wal.append_batch([b"x"]), wal.sync, wal.rotate,
                 lambda: wal.checkpoint(1)):
        with pytest.raises(walogs.WalError, match="poisoned"):
            call()
    assert calls["n"] == 1  # never retried
    wal.close()  # does not sync a poisoned log
    assert calls["n"] == 1
    monkeypatch.undo()
    # The frames whose sync failed were cut at once: Linux marks failed pages clean, so a
    # reopen would otherwise keep them from the page cache and call them durable.
    assert os.path.getsize(log_dir / "wal-000001.log") == 16 + len(b"durable")
    with walogs.Wal.open(log_dir) as again:
        assert list(again) == [(1, b"durable")]
        # P1 allows reusing LSNs that were never durable; the durable one is never reused.
        assert again.append(b"fresh") == 2


def test_group_commit_followers_fail_with_leader(log_dir, monkeypatch):
    """P2 with threads: when the shared fdatasync fails, no waiting append is acknowledged."""

    wal = walogs.Wal.open(log_dir)
    gate = threading.Event()
    real = _io.fdatasync

    def slow_failing(fd: int) -> None:
        gate.wait(5)
        raise OSError(errno.EIO, "injected EIO")

    monkeypatch.setattr(_io, "fdatasync", slow_failing)
    outcomes = []

    def work() -> None:
        try:
            outcomes.append(("ok", wal.append(b"x")))
        except (OSError, walogs.WalError) as exc:
            outcomes.append((type(exc).__name__, None))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert len(outcomes) == 6 and all(kind != "ok" for kind, _ in outcomes)
    assert wal.durable_lsn == 0
    monkeypatch.setattr(_io, "fdatasync", real)
    wal.close()


def test_forked_child_cannot_write_and_keeps_parent_lock(log_dir):
    """P6/I6: in a forked child every write call raises WalError; the child's close() never
    unlocks, so the parent keeps its lock and goes on writing."""
    wal = walogs.Wal.open(log_dir)
    wal.append(b"parent-1")

    def child(out: int) -> None:
        results = write_calls_in_fork(wal)
        wal.close()
        results.append(str(_lock.writer_is_live(str(log_dir))[0]))
        os.write(out, json.dumps(results).encode())

    pid, read_end = fork_with_pipe(child)
    _, status = os.waitpid(pid, 0)
    data = os.read(read_end, 4096)
    os.close(read_end)
    assert status == 0
    assert json.loads(data) == ["refused"] * 5 + ["True"]
    assert _lock.writer_is_live(str(log_dir))[0]
    with pytest.raises(walogs.WalLockedError):
        walogs.Wal.open(log_dir)
    assert wal.append(b"parent-2") == 2
    wal.close()
    assert not _lock.writer_is_live(str(log_dir))[0]
    with walogs.Wal.open(log_dir) as again:
        assert [d for _, d in again] == [b"parent-1", b"parent-2"]


def test_sigkill_releases_lock(log_dir):
    """I6: the kernel drops the lock of a killed writer; the next writer opens at once."""
    code = ("import sys, walogs\nw = walogs.Wal.open(sys.argv[1])\nw.append(b'x')\n"
            "print('ready', flush=True)\nimport time\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(log_dir)], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(walogs.WalLockedError) as info:
            walogs.Wal.open(log_dir)
        assert info.value.pid == child.pid
    finally:
        stop(child)
    with walogs.Wal.open(log_dir, lock_timeout=0) as wal:
        assert list(wal) == [(1, b"x")]


def test_entries_survive_sigkill_in_every_mode(log_dir):
    """P7: no mode keeps acknowledged entries in user space: SIGKILL loses none."""
    for mode in ("always", "interval", "none"):
        d = log_dir / mode
        code = ("import sys, walogs\n"
                f"w = walogs.Wal.open(sys.argv[1], walogs.WalConfig(sync={mode!r}, sync_interval=60))\n"
                "for i in range(200): w.append(b'%d' % i)\n"
                "print('done', flush=True)\nimport time\ntime.sleep(60)\n")
        child = subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE,
                                 text=True, cwd=ROOT)
        try:
            assert child.stdout.readline().strip() == "done"
        finally:
            stop(child)
        with walogs.Wal.open(d) as wal:
            assert [d for _, d in wal] == [b"%d" % i for i in range(200)], mode


# ---------------------------------------------------------------------------- group commit under failure


def test_acknowledged_entry_survives_a_failing_rotate_sync(log_dir, monkeypatch):
    """I4 + P2: a leader whose fdatasync succeeded acknowledges its entry even when, before
    it records that, another append's rotate() fails its own fdatasync and cuts the
    unsynced tail: the cut stops at what the leader synced, so the entry is there after
    reopen. (Regression: the cut used the older sync point and removed an acknowledged entry.)"""
    real = _io.fdatasync
    calls = {"n": 0}
    leader_synced = threading.Event()

    def first_ok_then_eio(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            real(fd)
            leader_synced.set()
            time.sleep(0.3)  # both writers record the sync when this returns, under their mutex
            return
        raise OSError(errno.EIO, "injected EIO")

    wal = walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=200))
    # The window between a leader's successful sync and recording it: the return of the
    # (wrapped) fdatasync, after which the leader takes the writer's mutex to record the sync.
    monkeypatch.setattr(_io, "fdatasync", first_ok_then_eio)
    acked = {}
    leader = threading.Thread(target=lambda: acked.setdefault("lsn", wal.append(b"A" * 100)), daemon=True)
    leader.start()
    assert leader_synced.wait(10)
    with pytest.raises(OSError):
        wal.append(b"B" * 100)  # overflows segment 1: rotate's fdatasync fails
    leader.join(10)
    assert acked == {"lsn": 1}
    monkeypatch.setattr(_io, "fdatasync", real)
    wal.close()
    with walogs.Wal.open(log_dir) as again:
        assert [(lsn, data) for lsn, data in again.iter()] == [(1, b"A" * 100)]


def test_close_that_fails_still_wakes_waiters_and_unlocks(log_dir, monkeypatch):
    """Group commit + close: if closing the segment's descriptor fails (EIO, as on NFS),
    close() raises, yet every append waiting behind a sync returns (its entry was synced
    by close) and the lock is released: a new Wal opens at once."""
    real_close = _io.close
    wal = walogs.Wal.open(log_dir)
    segment_fd = _segment_fd(wal)

    def failing_close(fd: int) -> None:
        real_close(fd)
        if fd == segment_fd:
            raise OSError(errno.EIO, "injected EIO on close")

    held = HeldSync(monkeypatch)
    threads, results = queue_appends(wal, 4, held)
    monkeypatch.setattr(_io, "close", failing_close)
    held.release()
    with pytest.raises(OSError, match="injected EIO on close"):
        wal.close()
    join_all(threads, 10)
    assert sorted(results.values()) == [1, 2, 3, 4]
    monkeypatch.undo()
    with walogs.Wal.open(log_dir) as again:  # the lock was released
        assert [lsn for lsn, _ in again.iter()] == [1, 2, 3, 4]


def test_follower_interrupted_by_a_signal_strands_no_other(log_dir, monkeypatch):
    """Group commit: a follower whose wait is broken by an exception (here a SIGALRM handler
    raising in the main thread) leaves the queue; the sync that would have woken it to
    lead passes that on, so a later follower is not left asleep. Its own entry was
    written, so it is durable after the next sync. (The compiled writer waits without
    the GIL, where no handler runs: there the handler raises as soon as the append
    returns, once the held sync is released; nobody is stranded either way.)"""

    wal = walogs.Wal.open(log_dir)
    held = HeldSync(monkeypatch)
    results = {}
    leader = threading.Thread(target=lambda: results.setdefault("leader", wal.append(b"L")), daemon=True)
    leader.start()
    assert held.started.wait(10)
    later = threading.Thread(target=lambda: (time.sleep(0.1), results.setdefault("later", wal.append(b"T"))),
                             daemon=True)
    later.start()
    with interrupted_after(0.3, held, release_after=0.6), pytest.raises(Interrupted):
        wal.append(b"main")  # a follower behind the held sync when the alarm fires
    leader.join(10)
    later.join(10)
    assert not leader.is_alive() and not later.is_alive()
    assert results == {"leader": 1, "later": 3}
    assert wal.durable_lsn == 3
    monkeypatch.undo()
    wal.close()


# ---------------------------------------------------------------------------
# Regressions found by review of the compiled writer (each failed before its fix).


def test_concurrent_failing_calls_each_raise_their_own_error(log_dir):
    """Threads whose batches fail at once each raise their own exception (a bad item's
    TypeError, an oversized item's EntryTooLargeError): the compiled writer kept a failed
    call's exception in one slot shared by all threads, so calls raised each other's
    errors or `raise None`."""
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(sync="none"))
    big = memoryview(bytearray(walogs.MAX_ENTRY_SIZE + 1))
    bad = {"type": [b"ok", object()], "big": [b"ok", big]}
    expected = {"type": TypeError, "big": walogs.EntryTooLargeError}
    wrong: list[tuple[str, str]] = []

    def work(kind: str) -> None:
        for _ in range(150):
            try:
                wal.append_batch(bad[kind])
                wrong.append((kind, "no error"))
            except BaseException as exc:  # the test compares what each call raised
                if type(exc) is not expected[kind] or "BaseException" in str(exc):
                    wrong.append((kind, repr(exc)))

    run_threads([threading.Thread(target=work, args=(kind,), daemon=True) for kind in ("type", "big") * 2], 60)
    assert wrong == []
    assert wal.next_lsn == 1  # nothing of a bad batch was written (I7)
    wal.close()


def test_failed_write_poisons_while_other_threads_fail_too(log_dir, monkeypatch):
    """P2 under concurrency: a failed write (injected EIO from pwrite_all in one thread)
    poisons the writer and raises that OSError, even while another thread's batches fail
    with TypeError at the same time. Before the fix the other thread could take the
    OSError out of the shared slot: the writer stayed unpoisoned and a later append was
    acknowledged."""
    real = _io.pwrite_all
    doomed = threading.Event()

    def pwrite_all(fd: int, data, offset: int) -> None:
        if doomed.is_set() and threading.current_thread().name == "doomed":
            raise OSError(errno.EIO, "injected EIO")
        real(fd, data, offset)

    monkeypatch.setattr(_io, "pwrite_all", pwrite_all)
    for trial in range(30):
        wal = walogs.Wal.open(log_dir / str(trial))
        stop = threading.Event()

        unexpected: list[BaseException] = []

        def bad_batches() -> None:
            while not stop.is_set():
                try:
                    wal.append_batch([object()])
                except (TypeError, walogs.WalError):
                    pass  # its own error; WalError once the other thread poisoned the writer
                except BaseException as exc:  # e.g. the other thread's OSError
                    unexpected.append(exc)

        result: dict[str, object] = {}

        def doomed_append() -> None:
            doomed.set()
            try:
                result["lsn"] = wal.append(b"doomed")
            except BaseException as exc:  # the test checks which exception it was
                result["exc"] = exc
            doomed.clear()

        other = threading.Thread(target=bad_batches, daemon=True)
        other.start()
        writer = threading.Thread(target=doomed_append, name="doomed", daemon=True)
        writer.start()
        writer.join(10)
        stop.set()
        other.join(10)
        assert isinstance(result.get("exc"), OSError) and result["exc"].errno == errno.EIO, result
        assert unexpected == []
        assert wal._writer.poison is result["exc"]
        with pytest.raises(walogs.WalError, match="poisoned"):
            wal.append(b"after")
        wal.close()


def test_cleanup_error_does_not_replace_the_write_error(log_dir, monkeypatch):
    """P2: when a write fails and the clean-up ftruncate fails too, the call raises the
    write's OSError and that is what poisons the writer (not the truncate's)."""
    wal = walogs.Wal.open(log_dir)

    def failing_write(fd: int, data, offset: int) -> None:
        raise OSError(errno.EIO, "write failed")

    def failing_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EROFS, "truncate failed")

    monkeypatch.setattr(_io, "pwrite_all", failing_write)
    monkeypatch.setattr(_io, "ftruncate", failing_truncate)
    with pytest.raises(OSError, match="write failed") as failed:
        wal.append(b"x")
    assert wal._writer.poison is failed.value
    monkeypatch.undo()
    wal.close()


def test_rotation_behind_a_failed_sync_does_not_sync_again(log_dir, monkeypatch):
    """P2 + P4: a leader's fdatasync fails while rotate() waits for it. rotate() must not
    sync again (Linux reports a writeback error once, so a retry "succeeds" over lost
    pages): it raises WalError, nothing after the last good sync is durable or visible to
    readers, and the cut leaves only that. Before the fix rotate() synced again, returned
    normally and published the lost frames."""
    real = _io.fdatasync
    started, release = threading.Event(), threading.Event()
    calls = {"after": 0}

    def fdatasync(fd: int) -> None:
        if not started.is_set():
            started.set()
            release.wait(10)
            raise OSError(errno.EIO, "injected writeback error")
        calls["after"] += 1
        real(fd)

    wal = walogs.Wal.open(log_dir)
    assert wal.append(b"durable") == 1
    monkeypatch.setattr(_io, "fdatasync", fdatasync)
    results: dict[object, object] = {}

    def run(key: object, call) -> None:
        try:
            results[key] = call()
        except BaseException as exc:  # the test checks what each call raised
            results[key] = exc

    leader = threading.Thread(target=run, args=(2, lambda: wal.append(b"lost 2")), daemon=True)
    leader.start()
    assert started.wait(10)
    follower = threading.Thread(target=run, args=(3, lambda: wal.append(b"lost 3")), daemon=True)
    follower.start()
    deadline = time.monotonic() + 10
    while wal.next_lsn < 4 and time.monotonic() < deadline:
        time.sleep(0.001)
    rotator = threading.Thread(target=run, args=("rotate", wal.rotate), daemon=True)
    rotator.start()
    time.sleep(0.2)  # rotate() passes its first check and waits for the leader's sync
    release.set()
    for t in (leader, follower, rotator):
        t.join(10)
    assert isinstance(results[2], OSError) and results[2].errno == errno.EIO
    assert isinstance(results[3], walogs.WalError)
    assert isinstance(results["rotate"], walogs.WalError)
    assert calls["after"] == 0  # no fdatasync after the failed one
    assert wal.durable_lsn == 1
    visible = walogs._visible.read(str(log_dir))
    assert (visible.lsn, visible.offset) == (1, 16 + len(b"durable"))
    assert os.path.getsize(log_dir / "wal-000001.log") == 16 + len(b"durable")
    monkeypatch.undo()
    wal.close()
    with walogs.Wal.open(log_dir) as again:
        assert list(again) == [(1, b"durable")]


def test_leader_acknowledged_when_another_write_fails_during_its_sync(log_dir, monkeypatch):
    """I4, same answer from both writers: a leader whose own fdatasync succeeded returns
    its LSN even though another thread's write failed (and poisoned the writer) while the
    sync ran; the failed write raises its OSError; the entry is there after reopen."""
    real = _io.fdatasync
    real_write = _io.pwrite_all
    started, release = threading.Event(), threading.Event()

    def fdatasync(fd: int) -> None:
        if not started.is_set():
            started.set()
            release.wait(10)
        real(fd)

    def pwrite_all(fd: int, data, offset: int) -> None:
        if threading.current_thread().name == "failing":
            raise OSError(errno.EIO, "injected EIO")
        real_write(fd, data, offset)

    wal = walogs.Wal.open(log_dir)
    monkeypatch.setattr(_io, "fdatasync", fdatasync)
    monkeypatch.setattr(_io, "pwrite_all", pwrite_all)
    results: dict[str, object] = {}

    def run(key: str, data: bytes) -> None:
        try:
            results[key] = wal.append(data)
        except BaseException as exc:  # the test checks what each call raised
            results[key] = exc

    leader = threading.Thread(target=run, args=("leader", b"leader"), daemon=True)
    leader.start()
    assert started.wait(10)
    failing = threading.Thread(target=run, args=("failing", b"fails"), name="failing", daemon=True)
    failing.start()
    failing.join(10)
    release.set()
    leader.join(10)
    assert results["leader"] == 1
    assert isinstance(results["failing"], OSError) and results["failing"].errno == errno.EIO
    monkeypatch.undo()
    wal.close()
    with walogs.Wal.open(log_dir) as again:
        assert list(again) == [(1, b"leader")]


def test_lsns_above_2_to_the_63_come_back_whole(log_dir):
    """I9: LSNs are u64. A log whose last frame has LSN 2**63 + 5 hands out 2**63 + 6 next
    (the compiled writer returned it through a signed 64-bit status and gave a negative
    number)."""
    from conftest import make_frame

    log_dir.mkdir()
    (log_dir / "wal-000001.log").write_bytes(make_frame(2**63 + 5, b"hi"))
    with walogs.Wal.open(log_dir) as wal:
        assert wal.append(b"x") == 2**63 + 6
        assert wal.append_batch([b"y", b"z"]) == range(2**63 + 7, 2**63 + 9)
        assert wal.durable_lsn == 2**63 + 8


def test_poisoned_writer_refuses_before_checking_the_entry(log_dir, monkeypatch):
    """P2: once a sync failed, every write raises WalError, even one whose entry is also
    bad; both writers check the poison first (the compiled one raised TypeError)."""
    wal = walogs.Wal.open(log_dir)
    _failing_fdatasync(monkeypatch, 1)
    with pytest.raises(OSError):
        wal.append(b"x")
    with pytest.raises(walogs.WalError, match="poisoned"):
        wal.append(object())
    with pytest.raises(walogs.WalError, match="poisoned"):
        wal.append_batch([object()])
    monkeypatch.undo()
    wal.close()


# Regressions found by the second review of the writer (each failed before its fix).


def test_lsns_run_out_at_2_to_the_64_minus_1(log_dir):
    """I9 at the very end of the LSN space: after 2**64-2 the writer hands out 2**64-1,
    then refuses further appends with ValueError, writing nothing and never acknowledging
    anything without a sync (the compiled writer wrapped to LSN 0 and then 1, 2, ...)."""
    from conftest import make_frame

    log_dir.mkdir()
    (log_dir / "wal-000001.log").write_bytes(make_frame(2**64 - 2, b"next to last"))
    with walogs.Wal.open(log_dir) as wal:
        assert wal.append(b"last") == 2**64 - 1
        assert wal.durable_lsn == 2**64 - 1 and wal.next_lsn == 2**64
        with pytest.raises(ValueError, match="out of range"):
            wal.append(b"one too many")
        with pytest.raises(ValueError, match="out of range"):
            wal.append_batch([b"too", b"many"])
        assert wal.append_batch([]) == range(2**64, 2**64)
        assert wal.durable_lsn == 2**64 - 1
    with walogs.Wal.open(log_dir) as again:  # a log ending at 2**64-1 opens, and stays full
        assert [lsn for lsn, _ in again.iter()] == [2**64 - 2, 2**64 - 1]
        with pytest.raises(ValueError, match="out of range"):
            again.append(b"still too many")


def test_failed_construction_leaves_nothing_behind(log_dir, monkeypatch):
    """A Wal whose construction fails after recovery releases the lock, the segment's
    descriptor and the VISIBLE mapping at once, so the same process can open the log
    again. (Mock: the writer's constructor is replaced by one that raises MemoryError;
    it cannot be made to fail for real short of exhausting memory.)"""
    from walogs import _impl

    walogs.Wal.open(log_dir).close()

    def failing_writer(*args, **kwargs):
        raise MemoryError("injected")

    monkeypatch.setattr(_impl, "SegmentWriter", failing_writer)
    with pytest.raises(MemoryError, match="injected"):
        walogs.Wal.open(log_dir)
    monkeypatch.undo()
    fd_dir = f"/proc/{os.getpid()}/fd"
    held = [os.readlink(os.path.join(fd_dir, name)) for name in os.listdir(fd_dir)
            if os.path.exists(os.path.join(fd_dir, name))]
    assert not [path for path in held if path.startswith(str(log_dir))]
    with walogs.Wal.open(log_dir) as again:  # the lock was released
        assert again.append(b"x") == 1


def test_close_during_a_failing_sync_still_cuts_its_tail(log_dir, monkeypatch):
    """P2: when close() arrives while a leader's fdatasync is failing, the frame that sync
    did not make durable is cut before close() finishes, so a reopen cannot bring back an
    entry whose append raised (the pure-Python writer skipped the cut once closed)."""
    wal = walogs.Wal.open(log_dir)
    assert wal.append(b"synced before") == 1
    entered = threading.Event()

    def failing(fd: int) -> None:
        entered.set()
        time.sleep(0.3)  # close() arrives while this sync runs
        raise OSError(errno.EIO, "injected EIO")

    monkeypatch.setattr(_io, "fdatasync", failing)
    result: dict[str, object] = {}

    def append() -> None:
        try:
            result["lsn"] = wal.append(b"never acknowledged")
        except BaseException as exc:  # the test checks what it raised
            result["exc"] = exc

    appender = threading.Thread(target=append, daemon=True)
    appender.start()
    assert entered.wait(10)
    wal.close()
    appender.join(10)
    assert isinstance(result.get("exc"), OSError)
    monkeypatch.undo()
    assert os.path.getsize(log_dir / "wal-000001.log") == 16 + len(b"synced before")
    with walogs.Wal.open(log_dir) as again:
        assert list(again) == [(1, b"synced before")]


def test_none_mode_readers_see_the_cut_after_a_failed_sync(log_dir, monkeypatch):
    """P2 + P4 under sync="none": written entries are published at once; when a sync fails
    and the unsynced tail is cut, the published end moves back to the cut, so a live reader
    sees the log as it is (it raised WalCorruptError on a healthy log before)."""
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(sync="none"))
    for i in range(3):
        wal.append(b"e%d" % i)
    reader = walogs.WalReader(log_dir)
    assert [lsn for lsn, _ in reader.iter()] == [1, 2, 3]
    _failing_fdatasync(monkeypatch, 1)
    with pytest.raises(OSError):
        wal.sync()
    assert os.path.getsize(log_dir / "wal-000001.log") == 0  # nothing was ever synced
    assert [lsn for lsn, _ in reader.iter()] == []
    monkeypatch.undo()
    reader.close()
    wal.close()
