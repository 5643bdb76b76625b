"""Readers in other processes follow a log while writers append, checkpoint and get SIGKILLed.

P4: a reader yields entries in LSN order, each exactly once, never a partial
frame. P5: it never skips: when a checkpoint removed what it still needed it
raises LsnOutOfRangeError, and only then may it restart from ``first_lsn``.
P3: a reader never writes, truncates, creates, renames or deletes anything
and never takes the writer lock: each reader process installs a
``sys.addaudithook`` first thing and records every such operation.

Four reader processes run ``WalReader.follow`` while a chain of writer
processes (each forked from the test process, each a different sync mode)
appends ``scale(20000, 200000)`` entries in batches of 50 into small
segments and checkpoints every ~500 entries; all but the last writer are
SIGKILLed part-way and the next one continues from ``next_lsn`` (I8, P1).
An entry's bytes are a pure function of its LSN, so readers check every
byte. Children use walogs and ``os._exit`` only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import signal
import sys
import time
import traceback

import pytest
from _procs import fork_with_pipe, kill_all, read_all, read_ready, send, send_error, take_records
from conftest import entry, scale

import walogs

SEED = int(os.environ.get("WALOGS_SEED", "20241124"))
TOTAL = scale(20000, 200000)
BATCH = 50
KILLS = scale(4, 20)
READERS = 4
SEGMENT = 32 * 1024
CHECKPOINT_EVERY = 500
CHECKPOINT_LAG = 1000  # entries kept behind the writer; a reader further behind must restart
DEADLINE = 30.0 if TOTAL <= 20000 else TOTAL * 0.0015
MODES = ("always", "interval", "none")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MUTATING_EVENTS = {"os.truncate", "os.remove", "os.unlink", "os.rename", "os.mkdir", "os.rmdir",
                    "os.chmod", "os.chown", "os.utime", "os.link", "os.symlink", "shutil.rmtree",
                    "shutil.move", "fcntl.flock", "fcntl.lockf"}
# Taking any fcntl lock is taking the writer lock (P3); F_OFD_GETLK only asks.
_LOCK_CMDS = {fcntl.F_SETLK, fcntl.F_SETLKW, getattr(fcntl, "F_OFD_SETLK", 37), getattr(fcntl, "F_OFD_SETLKW", 38)}


def payload(lsn: int) -> bytes:
    """The bytes at ``lsn``, whichever writer generation wrote them."""
    return entry(lsn, 40 + (lsn * 37) % 90)


def _install_audit(found: list) -> None:
    """P3 detector: record every open for writing and every mutating or locking call."""

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            mode = args[1] if len(args) > 1 else None
            flags = args[2] if len(args) > 2 else 0
            writes = isinstance(mode, str) and any(c in mode for c in "wax+")
            if writes or (isinstance(flags, int) and flags & _WRITE_FLAGS):
                found.append(f"open {args!r}"[:200])
        elif event in _MUTATING_EVENTS or (event == "fcntl.fcntl" and len(args) > 1 and args[1] in _LOCK_CMDS):
            found.append(f"{event} {args!r}"[:200])

    sys.addaudithook(hook)  # cannot be removed: only ever called in a forked child


# ---------------------------------------------------------------------- children


def _fork(body) -> tuple[int, int]:
    """Fork a child running ``body(write_fd)`` (walogs and os._exit only); returns (pid, read end of its pipe)."""
    return fork_with_pipe(body, send_error)


def _reader_body(path: str, deadline: float, pause: float):
    def body(out: int) -> None:
        audit: list[str] = []
        _install_audit(audit)  # first thing in the child
        report = _follow_and_check(path, deadline, pause)
        report["audit"] = audit[:10]
        report["audit_count"] = len(audit)
        data = json.dumps(report).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]
    return body


def _follow_and_check(path: str, deadline: float, pause: float) -> dict:
    """Follow from LSN 1 to TOTAL checking order, uniqueness and bytes (P4, P5).

    ``pause`` seconds every 50 entries make a slow consumer that checkpoints overtake.
    """
    reader = walogs.WalReader(path)
    expected = 1
    yielded = restarts = skipped = spurious = retries = 0
    errors: list[str] = []
    started = time.monotonic()
    while expected <= TOTAL and time.monotonic() < deadline:
        try:
            for lsn, data in reader.follow(start=expected, timeout=0.25):
                if lsn != expected:
                    kind = "gap" if lsn > expected else "duplicate or backwards"
                    errors.append(f"{kind}: expected LSN {expected}, got {lsn}")
                elif data != payload(lsn):
                    errors.append(f"LSN {lsn}: bytes differ: {data[:20]!r}.. (len {len(data)})")
                expected = lsn + 1
                yielded += 1
                if pause and not yielded % 50:
                    time.sleep(pause)
                if expected > TOTAL or time.monotonic() > deadline:
                    break
        except walogs.LsnOutOfRangeError as exc:
            # P5: allowed only when a checkpoint really removed LSN `expected`.
            restarts += 1
            try:
                first = reader.first_lsn
            except Exception as exc:  # noqa: BLE001 - a finding, like any error below
                errors.append(f"first_lsn after LsnOutOfRangeError at LSN {expected}: {exc!r}")
                continue
            if first is None:
                retries += 1
                time.sleep(0.001)
            elif first <= expected:
                spurious += 1
                errors.append(f"LsnOutOfRangeError at LSN {expected} while first_lsn is {first}: {exc}")
            else:
                skipped += first - expected
                expected = first
        except Exception as exc:  # noqa: BLE001 - every other error is a finding
            where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                                for f in reversed(traceback.extract_tb(exc.__traceback__)[-4:]))
            errors.append(f"at LSN {expected}: {exc!r} at {where}")
            retries += 1
            time.sleep(0.001)
        if len(errors) > 50:
            break
    return {"yielded": yielded, "next": expected, "restarts": restarts, "skipped": skipped,
            "spurious": spurious, "retries": retries, "errors": errors[:10], "error_count": len(errors),
            "seconds": round(time.monotonic() - started, 2), "pid": os.getpid()}


def _writer_body(path: str, sync: str, seed: int):
    def body(out: int) -> None:
        rng = random.Random(seed)
        config = walogs.WalConfig(max_segment_size=SEGMENT, sync=sync, sync_interval=0.005)
        wal = walogs.Wal.open(path, config, lock_timeout=10.0)
        send(out, b"O", wal.next_lsn)
        since = 0
        while wal.next_lsn <= TOTAL:
            first = wal.next_lsn
            count = min(BATCH, TOTAL - first + 1)
            got = wal.append_batch([payload(first + k) for k in range(count)])
            send(out, b"A", got.start, got.stop - 1)
            since += count
            if since >= CHECKPOINT_EVERY:
                since = 0
                upto = got.stop - 1 - CHECKPOINT_LAG + rng.randrange(-200, 200)
                if upto > 0:
                    wal.checkpoint(upto)
        end = wal.next_lsn
        wal.close()
        send(out, b"D", end)
    return body


# ---------------------------------------------------------------------- tests


def test_audit_hook_sees_writes(tmp_path):
    """The P3 detector itself: in a child, writing opens, renames, unlinks and locks are all recorded."""

    def body(out: int) -> None:
        found: list[str] = []
        _install_audit(found)
        target = str(tmp_path / "x")
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))  # 1
        with open(target, "rb"):
            pass  # read-only: not recorded
        with open(target, "ab"):  # 2
            pass
        os.rename(target, target + "2")  # 3
        os.truncate(target + "2", 0)  # 4
        os.unlink(target + "2")  # 5
        os.write(out, json.dumps(found).encode())

    pid, fd = _fork(body)
    try:
        found = json.loads(read_all(fd, time.monotonic() + 10) or b"null")
    finally:
        kill_all([pid])
        os.close(fd)
    assert found is not None and len(found) == 5, found


@pytest.mark.parametrize("start", [None, 1])
def test_checkpoint_between_listing_and_opening_a_segment(log_dir, monkeypatch, start):
    """P5 (docs/api.rst "Readers"): a checkpoint that lands while a reader locates its start.

    Deterministic replay of a race the multi-process test below hits: the
    reader lists the segment files, then a real checkpoint deletes the
    oldest one before the reader opens it. The reader must answer in the
    contract's terms: ``start=1`` (checkpointed away) raises
    LsnOutOfRangeError, ``start=None`` yields from the oldest entry still
    stored, contiguously. Never a bare FileNotFoundError.
    """
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=None))
    try:
        wal.append_batch([payload(lsn) for lsn in range(1, 11)])
        wal.rotate()
        wal.append_batch([payload(lsn) for lsn in range(11, 21)])
        wal.rotate()
        wal.append_batch([payload(lsn) for lsn in range(21, 31)])
        real_open_read = walogs._io.open_read
        fired = []

        def open_read(path: str) -> int:
            # The checkpoint runs after the reader listed wal-000001.log, just before it opens it.
            if path.endswith("wal-000001.log") and not fired:
                fired.append(wal.checkpoint(10))
            return real_open_read(path)

        monkeypatch.setattr(walogs._io, "open_read", open_read)
        reader = walogs.WalReader(log_dir)
        if start is None:
            got = list(reader.follow(start=None, timeout=0))
            assert got == [(lsn, payload(lsn)) for lsn in range(11, 31)]
        else:
            with pytest.raises(walogs.LsnOutOfRangeError):
                list(reader.follow(start=start, timeout=0))
        assert fired == [1], "the checkpoint did not run inside the reader's locate"
    finally:
        wal.close()


class WriterChain:
    """Writer processes one after another on one log, each a different sync mode; all but the last
    are SIGKILLed once they acknowledged their kill point, and the next continues (P1, I8)."""

    def __init__(self, path: str, rng: random.Random, deadline: float) -> None:
        self.path, self.rng, self.deadline = path, rng, deadline
        # Kill points spread over the run, each a little random.
        self.kill_at = sorted(rng.randrange(TOTAL * k // (KILLS + 1), TOTAL * (k + 1) // (KILLS + 1))
                              for k in range(1, KILLS + 1))
        self.pids: list[int] = []  # writers not reaped yet
        self.violations: list[str] = []
        self.generations = self.kills = self.max_acked = 0
        self.done = False

    def run(self) -> None:
        """Writers until one reports TOTAL written, one ends before it, or the deadline."""
        while not self.done and time.monotonic() < self.deadline and self._next_writer():
            pass

    def _next_writer(self) -> bool:
        """Fork the next writer and follow it until it is killed or done; False if it ended otherwise."""
        sync = MODES[self.generations % len(MODES)]
        pid, fd = _fork(_writer_body(self.path, sync, self.rng.randrange(1 << 30)))
        self.pids.append(pid)
        self.generations += 1
        target = self.kill_at.pop(0) if self.kill_at else None
        try:
            killed = self._follow(pid, fd, sync, target)
            if killed:
                self.kills += 1
            _, status = os.waitpid(pid, 0)
            self.pids.remove(pid)
            if not killed and not self.done:
                self.violations.append(f"writer {self.generations} ({sync}) ended with status {status:#x} "
                                       "before the end")
                return False
        finally:
            os.close(fd)
        return True

    def _follow(self, pid: int, fd: int, sync: str, target: int | None) -> bool:
        """Check the writer's reports as they come (P1, I8); SIGKILL it once it acknowledged
        ``target``. True if it was killed."""
        buf = bytearray()
        killed = False
        while time.monotonic() < self.deadline and not killed and not self.done:
            chunk = read_ready(fd, self.deadline - time.monotonic())
            if not chunk:
                break
            buf += chunk
            for kind, a, b, msg in take_records(buf):
                if kind == b"O" and a <= self.max_acked:
                    self.violations.append(f"writer {self.generations} opened at next_lsn {a} <= acknowledged "
                                           f"LSN {self.max_acked} (P1, I8)")
                elif kind == b"A":
                    self.max_acked = max(self.max_acked, b)
                    if target is not None and b >= target and not killed:
                        time.sleep(self.rng.uniform(0, 0.003))
                        os.kill(pid, signal.SIGKILL)
                        killed = True
                elif kind == b"D":
                    self.done = True
                elif kind == b"E":
                    self.violations.append(f"writer {self.generations} ({sync}) failed: "
                                           f"{msg.decode(errors='replace')}")
        return killed


def _start_readers(path: str, deadline: float, readers: dict[int, int]) -> None:
    """Fork the followers into ``readers`` (pid -> read end of its report pipe)."""
    for k in range(READERS):
        # Two readers at full speed, two slow ones that checkpoints will overtake.
        pid, fd = _fork(_reader_body(path, deadline, (0.0, 0.0, 0.002, 0.005)[k % 4]))
        readers[pid] = fd


def _collect_reports(readers: dict[int, int], deadline: float) -> list[dict]:
    """Each follower's JSON report; a missing one counts as an error."""
    reports = []
    for pid, fd in readers.items():
        raw = read_all(fd, deadline)
        try:
            reports.append(json.loads(raw))
        except ValueError:
            reports.append({"pid": pid, "errors": [f"no report: {raw[:200]!r}"], "error_count": 1,
                            "next": 0, "yielded": 0, "restarts": 0, "skipped": 0, "spurious": 0,
                            "audit": [], "audit_count": 0, "seconds": 0})
    return reports


def _log_at_rest_violations(path: str) -> list[str]:
    """The log at rest: contiguous up to TOTAL, every byte right."""
    violations = []
    with walogs.Wal.open(path, lock_timeout=0) as wal:
        next_lsn, first = wal.next_lsn, wal.first_lsn
        rest = list(wal.iter())
    if next_lsn != TOTAL + 1:
        violations.append(f"final next_lsn is {next_lsn}, expected {TOTAL + 1}")
    if rest != [(lsn, payload(lsn)) for lsn in range(first or next_lsn, next_lsn)]:
        violations.append("the final log is not contiguous or holds different bytes")
    return violations


def _reader_violations(reports: list[dict]) -> list[str]:
    """P3, P4, P5: no reader saw an error or made a writing/locking call, and each reached the end."""
    violations = []
    for k, r in enumerate(reports):
        if r["error_count"]:
            violations.append(f"reader #{k}: {r['error_count']} errors: {r['errors']}")
        if r["audit_count"]:
            violations.append(f"reader #{k}: {r['audit_count']} writing/locking operations (P3): {r['audit']}")
        if r["next"] != TOTAL + 1:
            violations.append(f"reader #{k} stopped at LSN {r['next']}, not at the end {TOTAL + 1}")
    return violations


def test_readers_follow_through_appends_checkpoints_and_kills(log_dir):
    """P3, P4, P5 (and P1, I8 across writer kills): four followers see every LSN once, byte-identical.

    A reader that a checkpoint overtook gets LsnOutOfRangeError and restarts
    from ``first_lsn``, which must then be beyond the LSN it needed; any
    other error, a gap, a duplicate or different bytes fails the test.
    """
    path = str(log_dir)
    walogs.Wal.open(path).close()  # readers need the directory
    rng = random.Random(SEED)
    started = time.monotonic()
    deadline = started + DEADLINE
    readers: dict[int, int] = {}
    writers = WriterChain(path, rng, deadline)
    try:
        _start_readers(path, deadline, readers)
        writers.run()
        writer_seconds = time.monotonic() - started
        reports = _collect_reports(readers, deadline + 5.0)
    finally:
        kill_all(writers.pids)
        kill_all(list(readers))
        for fd in readers.values():
            try:
                os.close(fd)
            except OSError as exc:
                assert exc.errno == errno.EBADF
    elapsed = time.monotonic() - started
    violations = writers.violations + _log_at_rest_violations(path)

    summary = (f"readers-under-fire impl={walogs.IMPLEMENTATION}: {TOTAL} entries by {writers.generations} writers "
               f"({writers.kills} SIGKILLed) in {writer_seconds:.1f}s; readers: " + "; ".join(
                   f"#{k} yielded {r['yielded']} next {r['next']} restarts {r['restarts']} skipped {r['skipped']} "
                   f"spurious {r['spurious']} errors {r['error_count']} audit {r['audit_count']} ({r['seconds']}s)"
                   for k, r in enumerate(reports)) + f"; total {elapsed:.1f}s")
    print(summary)
    violations += _reader_violations(reports)
    assert not violations, summary + "\n" + "\n".join(violations)
    assert writers.kills >= min(KILLS, 1), summary
