"""Followers that sleep until the writer writes (walogs/_notify.py), and the polling fallback.

Every case runs twice: with inotify (``inotify``) and with the polling
fallback followers use where inotify is missing (``poll``). The writer's
publication of the visible end raises no inotify event (a store into a
mapping), so the cases are the ones where a wake-up could be missed: a write
whose sync ends after the follower looked, a rotation, a writer that closes
and one that opens later, each sync mode, a follower in another process.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from _procs import fork_child, reap, run_python
from conftest import entry, settled

import walogs
from walogs import _notify

GUARD = 20.0  # a hang guard, not a speed check


@pytest.fixture(params=["inotify", "poll"])
def wake(request, monkeypatch):
    if request.param == "inotify":
        assert _notify.AVAILABLE, "inotify is expected on the Linux test machines"
    else:
        monkeypatch.setattr(_notify, "AVAILABLE", False)
    return request.param


def _collect(it, count, out):
    for lsn, data in it:
        out.append((lsn, data))
        if len(out) == count:
            return


@pytest.mark.parametrize("sync", ["always", "interval", "none"])
def test_a_follower_sees_each_paced_append_across_rotations(log_dir, wake, sync):
    config = walogs.WalConfig(max_segment_size=400, sync=sync, sync_interval=0.005)
    with walogs.Wal.open(log_dir, config) as wal, walogs.WalReader(log_dir) as reader:
        wal.append(entry(1))
        got: list = []
        t = threading.Thread(target=_collect, args=(reader.follow(start=1, timeout=GUARD), 40, got), daemon=True)
        t.start()
        for i in range(2, 41):
            time.sleep(0.002)  # the follower is asleep between appends
            wal.append(entry(i))
        t.join(GUARD)
        assert [lsn for lsn, _ in got] == list(range(1, 41))
        assert all(data == entry(lsn) for lsn, data in got)
        assert wal.segment_count > 5


def test_a_follower_sees_a_writer_that_closes_and_one_that_opens_later(log_dir, wake):
    with walogs.Wal.open(log_dir) as wal:
        wal.append(b"one")
    with walogs.WalReader(log_dir) as reader:
        got: list = []
        t = threading.Thread(target=_collect, args=(reader.follow(start=1, timeout=GUARD), 4, got), daemon=True)
        t.start()
        time.sleep(0.05)
        with walogs.Wal.open(log_dir) as wal:
            time.sleep(0.05)
            wal.append(b"two")
            wal.append(b"three")
        time.sleep(0.05)
        with walogs.Wal.open(log_dir, walogs.WalConfig(sync="none")) as wal:
            wal.append(b"four")
        t.join(GUARD)
        assert got == [(1, b"one"), (2, b"two"), (3, b"three"), (4, b"four")]


def test_an_idle_follow_ends_after_its_timeout(log_dir, wake):
    with walogs.Wal.open(log_dir) as wal, walogs.WalReader(log_dir) as reader:
        wal.append(b"x")
        started = time.monotonic()
        assert list(reader.follow(start=1, timeout=0.3)) == [(1, b"x")]
        assert 0.25 < time.monotonic() - started < GUARD


def test_a_follower_process_sees_appends_from_this_one(log_dir, wake):
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=300)) as wal:
        wal.append(b"start")
        env_poll = "1" if wake == "poll" else "0"
        code = (
            "import os, sys\n"
            f"os.environ['WALOGS_FOLLOW_POLL'] = {env_poll!r}\n"
            "import walogs\n"
            "n = 0\n"
            "for lsn, data in walogs.WalReader(sys.argv[1]).follow(start=1, timeout=20):\n"
            "    n += 1\n"
            "    if data == b'end': break\n"
            "print(n, lsn)\n"
        )
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(p=run_python(code, log_dir, timeout=60)), daemon=True)
        t.start()
        time.sleep(0.3)
        for i in range(30):
            wal.append(entry(i))
            time.sleep(0.003)
        wal.append(b"end")
        t.join(60)
    proc = result["p"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["32", "32"]


def test_fallback_without_inotify_instances(log_dir, monkeypatch):
    """Where inotify_init1 fails (the per-user limit of instances), followers poll instead."""
    monkeypatch.setattr(_notify, "_libc", None)
    assert _notify.watch(str(log_dir.parent)) is None
    with walogs.Wal.open(log_dir) as wal, walogs.WalReader(log_dir) as reader:
        wal.append(b"a")
        it = reader.follow(start=1, timeout=GUARD)
        assert next(it) == (1, b"a")
        wal.append(b"b")
        assert next(it) == (2, b"b")
        it.close()


def test_the_watch_of_a_forked_child_is_its_own(log_dir):
    """A follower's inotify queue shared with a forked child would lose wake-ups to it."""
    os.makedirs(log_dir)
    waiter = _notify.watch(str(log_dir))
    assert waiter is not None
    try:
        def child():
            fd = waiter._descriptor()
            if fd is None or waiter._pid != os.getpid():
                raise AssertionError("the child kept its parent's inotify queue")
        assert reap(fork_child(child)) == 0
        assert waiter._descriptor() is not None and waiter._pid == os.getpid()
    finally:
        waiter.close()


def _events(fd: int) -> list[tuple[int, str]]:
    """(mask, name) of every inotify event queued on ``fd`` (struct inotify_event: wd, mask, cookie, len, name)."""
    import struct

    out = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return out
        at = 0
        while at < len(chunk):
            _, mask, _, size = struct.unpack_from("iIII", chunk, at)
            name = chunk[at + 16:at + 16 + size].split(b"\0", 1)[0].decode()
            out.append((mask, name))
            at += 16 + size


@pytest.mark.skipif(not _notify.AVAILABLE, reason="inotify is not available here (not Linux, or no libc symbol)")
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("sync", ["always", "interval"])
def test_a_sync_that_publishes_raises_an_event_on_visible(log_dir, shared, sync):
    """The writer wakes followers: a store into VISIBLE's mapping raises no inotify event, so a
    writer that published a new end after its fdatasync rewrites VISIBLE's first byte (a write,
    IN_MODIFY). Without it, a follower woken by the write of frames has to poll for the publication."""
    config = walogs.WalConfig(sync=sync, sync_interval=0.01)
    with walogs.Wal.open(log_dir, config, shared=shared) as wal:
        wal.append(b"first")
        wal.sync()
        waiter = _notify.watch(str(log_dir))
        assert waiter is not None
        try:
            _events(waiter._fd)
            wal.append(b"second")
            wal.sync()
            events = _events(waiter._fd)
        finally:
            waiter.close()
        record = walogs._visible.read(str(log_dir))
        assert record is not None and record.state == walogs._visible.PUBLISHED and record.lsn == 2
    assert (0x2, "VISIBLE") in events, events  # IN_MODIFY


def test_an_idle_follower_of_a_prepared_segment_sees_nothing_pending(log_dir):
    """A segment prepared with zeros is full size before anything is written into it, so "written,
    not yet published" is judged by bytes: an idle follower of such a log sleeps on inotify, not in
    the short looks meant for a write awaiting its sync (before: woken ~25 times a second)."""
    config = walogs.WalConfig(max_segment_size=1 << 20, preallocate=True)
    with walogs.Wal.open(log_dir, config) as wal:
        wal.append(b"a")
        settled(wal)
        wal.rotate()
        wal.append(b"b")  # into the prepared segment: the file is 1 MiB, its frames 17 bytes
        end = walogs._visible.read(str(log_dir))
        assert end is not None and os.path.getsize(os.path.join(log_dir, "wal-000002.log")) > end.offset
        waiter = _notify.watch(str(log_dir))
        assert waiter is not None
        try:
            assert not waiter._unpublished(end)
        finally:
            waiter.close()
