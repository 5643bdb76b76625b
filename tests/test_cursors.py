"""Named cursors: durable positions (P13), one owner across processes, retention they pin (P14).

Real files, real fdatasync, real processes: owners in forked children, SIGKILL
at random instants during commits (P13: the old or the new position, never
garbage), and a writer that rotates and checkpoints under a retention cap
while cursor processes follow it (P5, P14: a consumer never skips silently).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import random
import select
import shutil
import signal
import struct
import time

import pytest
from _procs import (fork_child, fork_with_pipe, kill_all, read_to_eof, read_until, reap, run_walogs, send, send_error,
                    take_records)
from conftest import entry, scale, snapshot

import walogs
from walogs.errors import CursorLockedError, CursorLostError, LsnOutOfRangeError, WalLockedError

SEED = int(os.environ.get("WALOGS_SEED", "20261205"))


def _log(path, n=0, **config):
    wal = walogs.Wal.open(path, walogs.WalConfig(**config))
    for i in range(n):
        wal.append(entry(i + 1))
    return wal


def _cursor_path(path, name):
    return os.path.join(path, "cursors", name + ".cursor")


# ---------------------------------------------------------------------- names, positions, commits


@pytest.mark.parametrize("name", ["a", "billing", "A.b_c-9", ".", "..", "x" * 64, "wal-000001.log"])
def test_valid_names_make_cursors(log_dir, name):
    with _log(log_dir, 3), walogs.WalReader(log_dir) as reader:
        with reader.cursor(name) as cur:
            assert cur.name == name and cur.position == 0
        assert reader.cursors() == {name: 0}


@pytest.mark.parametrize("name", ["", "x" * 65, "a/b", "a b", "ü", "a\x00", "-" * 65])
def test_invalid_names_are_value_errors(log_dir, name):
    with _log(log_dir, 1), walogs.WalReader(log_dir) as reader:
        with pytest.raises(ValueError, match="1 to 64 characters"):
            reader.cursor(name)
        with pytest.raises(TypeError):
            reader.cursor(b"bytes")  # type: ignore[arg-type]
    assert not os.path.exists(os.path.join(log_dir, "cursors", name + ".cursor"))


def test_new_cursor_starts_before_the_oldest_stored_entry_and_reads_from_there(log_dir):
    with _log(log_dir, 30, max_segment_size=500) as wal, walogs.WalReader(log_dir) as reader:
        wal.checkpoint(10)
        first = wal.first_lsn
        assert first > 1
        with reader.cursor("c") as cur:
            assert cur.position == first - 1
            assert [lsn for lsn, _ in cur.iter()] == list(range(first, 31))
            assert cur.lag == 30 - (first - 1)
        with reader.cursor("d", start=25) as cur:
            assert [lsn for lsn, _ in cur.iter()] == [26, 27, 28, 29, 30]
        with reader.cursor("d", start=3) as cur:  # an existing cursor keeps its position
            assert cur.position == 25
        for bad in (first - 2, 31):
            with pytest.raises(LsnOutOfRangeError):
                reader.cursor("e", start=bad)
        assert "e" not in reader.cursors()


def test_commit_is_durable_forward_only_and_within_the_visible_end(log_dir):
    with _log(log_dir, 5), walogs.WalReader(log_dir) as reader:
        with reader.cursor("c") as cur:
            cur.commit(3)
            cur.commit(3)
            with pytest.raises(ValueError, match="below its position"):
                cur.commit(2)
            with pytest.raises(ValueError, match="beyond the visible end"):
                cur.commit(6)
            with pytest.raises(TypeError):
                cur.commit("4")  # type: ignore[arg-type]
            assert [lsn for lsn, _ in cur.iter()] == [4, 5]
        # Another process sees the committed position.
        out = _run_in_child(lambda: walogs.WalReader(log_dir).cursors()["c"])
        assert out == 3


def _run_in_child(fn):
    """Run ``fn()`` in a forked child; its int result (or -1 if it raised)."""
    def body(w):
        send(w, b"R", fn())
    pid, r = fork_with_pipe(body, send_error)
    buf = bytearray()
    read_to_eof(r, buf, time.monotonic() + 20)
    os.close(r)
    reap(pid)
    records = take_records(buf)
    assert records and records[0][0] == b"R", records
    return records[0][1]


def test_follow_yields_new_entries_after_the_position(log_dir):
    with _log(log_dir, 2) as wal, walogs.WalReader(log_dir) as reader, reader.cursor("f") as cur:
        cur.commit(1)
        it = cur.follow(timeout=5)
        assert next(it) == (2, entry(2))
        wal.append(b"new")
        assert next(it) == (3, b"new")
        it.close()


def test_a_cursor_file_with_one_torn_slot_keeps_the_other_position(log_dir):
    with _log(log_dir, 5), walogs.WalReader(log_dir) as reader:
        with reader.cursor("c") as cur:
            cur.commit(2)
            cur.commit(4)  # slot 0 has 2 (counter 2), slot 1... the newest is in the slot written last
        path = _cursor_path(log_dir, "c")
        raw = bytearray(pathlib.Path(path).read_bytes())
        newest = max((0, 512), key=lambda at: struct.unpack_from("<Q", raw, at + 8)[0])
        raw[newest + 20] ^= 0xFF  # tear the newest record: the previous position is what stands
        pathlib.Path(path).write_bytes(bytes(raw))
        assert reader.cursors()["c"] == 2
        other = 512 - newest
        raw[other + 20] ^= 0xFF
        pathlib.Path(path).write_bytes(bytes(raw))
        with pytest.raises(walogs.WalCorruptError, match="damaged cursor file"):
            reader.cursors()


# ---------------------------------------------------------------------- one owner


def test_one_owner_in_a_process_and_across_processes(log_dir):
    with _log(log_dir, 3), walogs.WalReader(log_dir) as reader:
        cur = reader.cursor("c")
        with pytest.raises(CursorLockedError) as caught:
            reader.cursor("c")
        assert isinstance(caught.value, WalLockedError) and caught.value.pid == os.getpid()
        assert "cursor 'c'" in str(caught.value)

        def other_process():
            try:
                walogs.WalReader(log_dir).cursor("c")
            except CursorLockedError:
                return 1
            return 0
        assert _run_in_child(other_process) == 1
        info = reader.cursors()["c"]
        assert info.owned and info.owner_pid == os.getpid()
        cur.close()
        cur.close()
        assert not reader.cursors()["c"].owned
        with pytest.raises(walogs.WalClosedError):
            cur.commit(1)
        with reader.cursor("c") as again:
            again.commit(1)


def test_a_waiting_owner_gets_the_cursor_when_the_owner_is_killed(log_dir):
    with _log(log_dir, 3), walogs.WalReader(log_dir) as reader:
        def owner(w):
            cur = walogs.WalReader(log_dir).cursor("c")
            cur.commit(2)
            send(w, b"O", os.getpid())
            time.sleep(30)
        pid, r = fork_with_pipe(owner, send_error)
        try:
            buf = bytearray()
            assert read_until(r, buf, 17, time.monotonic() + 20), bytes(buf)
            with pytest.raises(CursorLockedError):
                reader.cursor("c", lock_timeout=0.05)
            os.kill(pid, signal.SIGKILL)
            with reader.cursor("c", lock_timeout=10) as cur:  # the kernel released the dead owner's lock
                assert cur.position == 2
        finally:
            kill_all([pid])
            os.close(r)


def test_a_forked_child_cannot_use_its_parents_cursor_and_the_parent_keeps_it(log_dir):
    with _log(log_dir, 3), walogs.WalReader(log_dir) as reader, reader.cursor("c") as cur:
        def child():
            try:
                cur.commit(2)
            except walogs.WalError as exc:
                return 1 if "fork" in str(exc) else 2
            return 0
        assert _run_in_child(child) == 1
        cur.commit(3)
        assert reader.cursors()["c"] == 3 and reader.cursors()["c"].owned


def test_drop_is_refused_while_owned(log_dir):
    with _log(log_dir, 3) as wal, walogs.WalReader(log_dir) as reader:
        cur = reader.cursor("c")
        with pytest.raises(CursorLockedError):
            reader.drop_cursor("c")
        with pytest.raises(CursorLockedError):
            wal.drop_cursor("c")
        cur.close()
        wal.drop_cursor("c")
        assert reader.cursors() == {}
        reader.cursor("d").close()
        reader.drop_cursor("d")
        with pytest.raises(FileNotFoundError):
            reader.drop_cursor("d")


def test_a_reader_writes_nothing_but_its_cursor_files(log_dir):
    """P3 (amended): segments, LOCK, VISIBLE, LSN_FLOOR stay byte for byte as they were."""
    with _log(log_dir, 40, max_segment_size=600) as wal:
        wal.checkpoint(5)
        before = snapshot(log_dir)
        with walogs.WalReader(log_dir) as reader:
            with reader.cursor("c") as cur:
                for lsn, _ in cur.iter():
                    cur.commit(lsn)
            reader.cursors()
            reader.drop_cursor("c")
        assert os.listdir(os.path.join(log_dir, "cursors")) == []  # the dropped cursor left nothing
        os.rmdir(os.path.join(log_dir, "cursors"))  # (snapshot() reads files, not folders)
        assert snapshot(log_dir) == before


def test_segment_scans_ignore_the_cursors_folder(log_dir):
    with _log(log_dir, 20, max_segment_size=600) as wal, walogs.WalReader(log_dir) as reader:
        reader.cursor("wal-000001.log").close()
        os.mkdir(os.path.join(log_dir, "cursors", "wal-000009.log"))  # even a folder named like a segment
        wal.rotate()
    with walogs.Wal.open(log_dir) as wal:
        assert [lsn for lsn, _ in wal.iter()] == list(range(1, 21))
    assert run_walogs("verify", log_dir).returncode == 0


# ---------------------------------------------------------------------- retention


def test_checkpoint_keeps_what_a_cursor_has_not_committed(log_dir):
    with _log(log_dir, 60, max_segment_size=600) as wal, walogs.WalReader(log_dir) as reader:
        assert wal.checkpoint() == 0  # no cursor: nothing goes
        with reader.cursor("slow") as slow, reader.cursor("fast") as fast:
            slow.commit(12)
            fast.commit(50)
            wal.checkpoint(55)
            assert wal.first_lsn <= 13
            assert [lsn for lsn, _ in slow.iter()][0] == 13
            deleted = wal.checkpoint()  # as far as every cursor allows: up to 12
            assert wal.first_lsn <= 13
            slow.commit(40)
            assert wal.checkpoint() > 0
            assert 30 < wal.first_lsn <= 41
            assert deleted >= 0


def test_past_the_cap_checkpoint_deletes_and_the_laggard_is_lost_loudly(log_dir, caplog):
    with _log(log_dir, 100, max_segment_size=600, max_retained_bytes=2000) as wal, \
            walogs.WalReader(log_dir) as reader:
        with reader.cursor("slow") as slow, reader.cursor("fast") as fast:
            slow.commit(5)
            fast.commit(100)
            with caplog.at_level(logging.WARNING, logger="walogs"):
                assert wal.checkpoint() > 0
            first = wal.first_lsn
            kept = sum(os.path.getsize(os.path.join(log_dir, n)) for n in os.listdir(log_dir)
                       if n.startswith("wal-"))
            assert kept <= 2000
            messages = [r.getMessage() for r in caplog.records]
            assert [m for m in messages if "cursor 'slow' is lost" in m and "LSN 6 is the first" in m], messages
            assert not [m for m in messages if "'fast'" in m]
            positions = reader.cursors()
            assert positions["slow"].lost and not positions["fast"].lost
            for call in (slow.iter, lambda: slow.follow(timeout=0)):
                with pytest.raises(CursorLostError) as caught:
                    list(call())
                assert caught.value.first_missing == 6 and caught.value.first_lsn == first
                assert isinstance(caught.value, LsnOutOfRangeError)
            assert list(fast.iter()) == []
            slow.commit(first - 1)  # the consumer rebuilt from a snapshot and resumes
            assert not reader.cursors()["slow"].lost
            assert next(iter(slow.iter()))[0] == first
    result = run_walogs("info", "--json", log_dir)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    rows = {row["name"]: row for row in info["cursors"]}
    text = run_walogs("info", log_dir).stdout.decode()
    assert "cursors:   2" in text and "slow  position" in text and "not owned" in text
    assert rows["slow"]["position"] == first - 1 and rows["slow"]["lost"] is False
    assert rows["fast"]["lag"] == 0 and rows["fast"]["owner_pid"] is None


def test_a_lost_cursor_does_not_pin_and_a_running_follow_raises_instead_of_skipping(log_dir):
    with _log(log_dir, 50, max_segment_size=600, max_retained_bytes=1500) as wal, \
            walogs.WalReader(log_dir) as reader, reader.cursor("c") as cur:
        it = cur.follow(timeout=5)
        assert next(it)[0] == 1
        for i in range(50):
            wal.append(entry(100 + i))
        wal.checkpoint()
        assert wal.first_lsn > 10
        with pytest.raises(CursorLostError) as caught:
            for _ in it:
                pass
        # It yielded some entries it held open, then stopped at the first one that was gone.
        assert caught.value.first_missing >= 2 and caught.value.first_missing < wal.first_lsn


# ---------------------------------------------------------------------- SIGKILL during commits (P13)

KILLS = scale(300, 3000)
KILL_DEADLINE = max(60.0, KILLS * 0.1)  # a bound on a loaded machine; a round takes 10-30 ms


def _committer(w, path, seed):
    rng = random.Random(seed)
    reader = walogs.WalReader(path)
    cur = reader.cursor("k", lock_timeout=10)  # the killed owner's lock is the kernel's to release
    entries = cur.iter()
    step = 0
    for lsn, _ in entries:
        if step == 0:
            send(w, b"P", cur.position)  # reading: commits start now
        step += 1
        if step % rng.randint(1, 3):
            continue
        send(w, b"T", lsn)  # about to commit: a kill from here on may leave either position
        cur.commit(lsn)
        send(w, b"D", lsn)
    time.sleep(30)  # the log has room for every round; the parent kills it


def test_sigkill_at_random_instants_during_commits_leaves_the_old_or_the_new_position(log_dir):
    # A live writer (its published end makes durable_lsn cheap), small segments (a child starts
    # reading at its position, not at the start of one large segment).
    wal = _log(log_dir, 1, max_segment_size=64 << 10)
    for _ in range(KILLS // 50 + 1):  # about 100 LSNs per round, more than a round commits
        wal.append_batch([b"x"] * 5000)
    rng = random.Random(SEED)
    kills = mid_commit = 0
    start = time.monotonic()
    with wal, walogs.WalReader(log_dir) as reader:
        committed = 0
        while kills < KILLS and time.monotonic() - start < KILL_DEADLINE:
            pid, r = fork_with_pipe(lambda w: _committer(w, log_dir, rng.random()), send_error)
            try:
                buf = bytearray()
                assert read_until(r, buf, 17, time.monotonic() + 20), "the committer never started"
                time.sleep(rng.uniform(0, 0.008))
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                read_to_eof(r, buf, time.monotonic() + 5)
            finally:
                kill_all([pid])
                os.close(r)
            records = take_records(buf)
            assert records[0][0] == b"P" and records[0][1] == committed, records[:2]
            errors = [m for k, _, _, m in records if k == b"E"]
            assert not errors, errors
            trying = None
            for kind, a, _, _ in records[1:]:
                if kind == b"T":
                    trying = a
                elif kind == b"D":
                    committed, trying = a, None
            now = reader.cursors()["k"]  # decodes: never garbage
            mid_commit += trying is not None
            assert now == committed or now == trying, (now, committed, trying)
            committed = int(now)
            kills += 1
    assert kills >= min(KILLS, 300), f"only {kills} kills in {KILL_DEADLINE:.0f} s"
    # Most kills must land between "about to commit" and "committed", or this proves little.
    assert mid_commit >= kills // 2, (mid_commit, kills)
    print(f"{kills} kills, {mid_commit} inside a commit, final position {committed}")


# ---------------------------------------------------------------------- retention under fire (P5, P14)


def _consumer(w, path, name, pace, seconds):
    """Follow with a cursor, committing as it goes; report every LSN seen and how it ended."""
    reader = walogs.WalReader(path)
    cur = reader.cursor(name, lock_timeout=10)
    expect = cur.position + 1
    send(w, b"S", expect)
    deadline = time.monotonic() + seconds
    try:
        for lsn, data in cur.follow(timeout=1.0):
            if lsn != expect or data != entry(lsn, 40):
                send(w, b"X", lsn, expect)  # a skip or a wrong entry: the failure this test hunts
                return
            expect = lsn + 1
            if pace:
                time.sleep(pace)
            if lsn % 5 == 0:
                cur.commit(lsn)
            if time.monotonic() > deadline:
                break
        send(w, b"F", expect)
    except CursorLostError as exc:
        send(w, b"L", exc.first_missing, expect)


def test_retention_with_followers_one_lagging_past_the_cap(log_dir):
    """The writer appends and checkpoints until the laggard has been told it is lost (at least 1.5 s,
    at most a 30 s hang guard), so a slow disk only makes the run longer."""
    seconds = 30.0  # the consumers' hang guard; the fast ones end 1 s after the writer stops
    # The cap holds about 1000 entries: a consumer that keeps up stays well inside it even when
    # descheduled for a while on a loaded machine; one handling 20 entries/s falls behind it.
    with _log(log_dir, 0, max_segment_size=1000, max_retained_bytes=60000) as wal:
        for i in range(1, 41):
            wal.append(entry(i, 40))
        procs = {}
        for name, pace in (("fast1", 0), ("fast2", 0), ("slow", 0.05)):
            procs[name] = fork_with_pipe(lambda w, n=name, p=pace: _consumer(w, log_dir, n, p, seconds), send_error)
        try:
            bufs = {name: bytearray() for name in procs}
            for name, (_, r) in procs.items():
                assert read_until(r, bufs[name], 17, time.monotonic() + 20)
            lsn = 40
            started = time.monotonic()
            checkpoints = 0
            slow_fd = procs["slow"][1]
            while time.monotonic() - started < seconds:
                wal.append_batch([entry(lsn + k, 40) for k in range(1, 6)])
                lsn += 5
                if lsn % 50 == 0:
                    checkpoints += wal.checkpoint() > 0
                    if time.monotonic() - started > 1.5 and select.select([slow_fd], [], [], 0)[0]:
                        break  # the laggard reported (lost, or a failure): enough
                time.sleep(0.002)
            results = {}
            for name, (pid, r) in procs.items():
                read_to_eof(r, bufs[name], time.monotonic() + 30)
                reap(pid)
                results[name] = take_records(bufs[name])
        finally:
            kill_all([pid for pid, _ in procs.values()])
            for _, r in procs.values():
                os.close(r)
    for name, records in results.items():
        kinds = [k for k, _, _, _ in records]
        assert b"X" not in kinds and b"E" not in kinds, (name, records)
    assert checkpoints > 0
    ends = {name: records[-1] for name, records in results.items()}
    assert ends["fast1"][0] == b"F" and ends["fast2"][0] == b"F", ends
    # The slow one either kept up within the cap or was told it was lost, at exactly the next LSN it wanted.
    kind, a, b, _ = ends["slow"]
    assert kind in (b"F", b"L"), ends["slow"]
    if kind == b"L":
        assert a == b, "the lost error names the first LSN the consumer had not seen"
    assert kind == b"L", "with a 60000-byte cap and a 50 ms consumer, the laggard must fall behind it"


# ---------------------------------------------------------------------- power loss (P13)


def test_power_loss_at_every_point_of_cursor_creation_and_commits(tmp_path):
    """Crash images (tests/crashfs.py) at every op of creating cursors and committing: each
    variant of unsynced data (dropped, cut, zeroed, random, sectors, kept) under each namespace
    mode. A cursor file is missing only before its creation was made durable; otherwise it
    decodes to the last acknowledged position or the one being committed, never garbage."""
    from crashfs import IMAGE_VARIANTS, NAMESPACE_MODES, Recorder

    from walogs import _cursor_file

    root = tmp_path / "log"
    with _log(root, 30, max_segment_size=600):
        pass
    rec = Recorder(root)
    acked: list[tuple[int, str, int]] = []  # (ops recorded when it returned, cursor, position)
    started: list[tuple[int, str, int]] = []  # (ops recorded before it began, cursor, position)
    with pytest.MonkeyPatch.context() as mp:
        rec.install(mp)
        with walogs.WalReader(root) as reader:
            for name in ("p", "q"):
                started.append((len(rec.ops), name, 0))
                with reader.cursor(name) as cur:
                    acked.append((len(rec.ops), name, 0))
                    for lsn in range(3, 31, 3 if name == "p" else 7):
                        started.append((len(rec.ops), name, lsn))
                        cur.commit(lsn)
                        acked.append((len(rec.ops), name, lsn))
    rng = random.Random(SEED)
    images = 0
    for point in range(len(rec.ops) + 1):
        for variant in IMAGE_VARIANTS:
            namespace = rng.choice(NAMESPACE_MODES)
            dest = tmp_path / f"img-{point}-{variant}"
            rec.build_image(point, dest, variant, namespace, random.Random(point))
            for name in ("p", "q"):
                done = [pos for at, n, pos in acked if n == name and at <= point]
                begun = [pos for at, n, pos in started if n == name and at < point]
                record = _cursor_file.read(_cursor_path(dest, name))
                where = f"crash after op {point} ({variant}, {namespace}), cursor {name}"
                if record is None:
                    assert not done, f"{where}: a created cursor's file is gone"
                    continue
                assert begun, f"{where}: a file before its creation began"
                allowed = set(done[-1:]) | set(begun[-1:])
                assert record.position in allowed, (where, record.position, allowed)
            images += 1
            shutil.rmtree(dest)
    assert images == (len(rec.ops) + 1) * len(IMAGE_VARIANTS)
    assert len(acked) == 2 + 10 + 4


# ---------------------------------------------------------------------- creation races


def _creator(w, path, names):
    reader = walogs.WalReader(path)
    for name in names:
        try:
            with reader.cursor(name, lock_timeout=10) as cur:
                first = next(iter(cur.iter()), None)  # a new cursor is never born lost
                send(w, b"C", cur.position, first[0] if first else 0)
                cur.commit(reader.durable_lsn)  # and pins no more, so checkpoints go on
        except CursorLostError as exc:
            send(w, b"L", exc.first_missing)


def test_cursors_created_while_the_writer_checkpoints_are_never_born_lost(log_dir):
    """A checkpoint either sees a cursor being created or deletes before its position is chosen."""
    with _log(log_dir, 10, max_segment_size=300) as wal:
        procs = [fork_with_pipe(lambda w, k=k: _creator(w, log_dir, [f"c{k}-{i}" for i in range(60)]), send_error)
                 for k in range(2)]
        bufs = [bytearray() for _ in procs]
        try:
            deadline = time.monotonic() + 60
            checkpoints = 0
            while any(reap_nowait(pid) is None for pid, _ in procs) and time.monotonic() < deadline:
                wal.append_batch([entry(i) for i in range(3)])
                checkpoints += wal.checkpoint(wal.next_lsn - 1) > 0
            for (pid, r), buf in zip(procs, bufs):
                read_to_eof(r, buf, time.monotonic() + 20)
        finally:
            kill_all([pid for pid, _ in procs])
            for _, r in procs:
                os.close(r)
    records = [rec for buf in bufs for rec in take_records(buf)]
    assert [rec for rec in records if rec[0] != b"C"] == [], records[:5]
    assert len(records) == 120 and checkpoints > 0
    for _, position, first, _ in records:
        assert first in (0, position + 1)  # it reads on from just after its position: nothing skipped


def reap_nowait(pid):
    """The wait status of child ``pid`` if it has exited (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    return status if done else None


def _incrementer(path, rounds):
    reader = walogs.WalReader(path)
    for _ in range(rounds):
        with reader.cursor("shared", lock_timeout=30) as cur:
            position = cur.position
            time.sleep(0.0005)  # a second owner now would read the same position: a lost update
            cur.commit(position + 1)


def test_owners_in_many_processes_take_turns_and_lose_no_commit(log_dir):
    """Four processes create and take the same cursor at once, 25 times each: the commits add up."""
    with _log(log_dir, 100):
        pids = [fork_child(lambda: _incrementer(log_dir, 25)) for _ in range(4)]
        try:
            statuses = [reap(pid, timeout=60) for pid in pids]
        finally:
            kill_all(pids)
        assert statuses == [0, 0, 0, 0]
        with walogs.WalReader(log_dir) as reader:
            assert reader.cursors() == {"shared": 100}


def test_a_child_forked_during_a_checkpoint_does_not_keep_its_lock(log_dir):
    """Checkpoints and cursor creation hold the log directory's flock; a process forked while it is
    held (another thread starting a worker) keeps a copy of its descriptor, and a flock lasts until
    the last copy closes. The holder unlocks explicitly, so the next checkpoint does not wait for
    that child to exit (before, it waited for ever)."""
    import fcntl
    import signal

    from walogs import _retention

    with walogs.Wal.open(log_dir) as wal:
        wal.append(b"x")
    child = 0
    try:
        with _retention.cursors_held(str(log_dir)):
            child = os.fork()
            if child == 0:
                time.sleep(30)
                os._exit(0)
        fd = os.open(str(log_dir), os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while the child holds it
        finally:
            os.close(fd)
    finally:
        if child:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
