"""A failing disk: write and sync errors poison the writer and lose nothing acknowledged (P2).

Two kinds of failure:

* **Real write failures.** A child process lowers RLIMIT_FSIZE with SIGXFSZ
  ignored; the kernel then gives a short write up to the limit and EFBIG for
  the rest, exactly like a disk that fills up mid-write. Several limits (on a
  frame boundary, inside a header, inside data, inside a batch) for
  ``append``, ``append_batch`` and the first write into a segment that a
  rotation has just created.
* **Injected EIO on fdatasync / directory sync.** This one is a mock: a
  wrapper around ``walogs._io.fdatasync`` / ``_io.sync_dir`` / ``_io.fsync``
  raises ``OSError(EIO)`` on the n-th call instead of syncing. An fdatasync
  or directory-fsync failure cannot be provoked for real without root-only
  fault devices (dm-flakey, dm-error, a fault-injecting block device), and
  the whole point of P2 is what the writer does *after* such an error, which
  the wrapper reproduces exactly: the kernel call reports EIO once. Everything
  else (writes, renames, unlinks, the lock) stays real. n runs over 1..50
  across a workload with appends, batches, size and explicit rotations,
  checkpoints and reopens.

For every case: the failing call raises and is never acknowledged; every later
write call raises WalError and no sync function is called again (counted,
P2); close() does not sync a poisoned writer; a reader never sees the
unacknowledged entries while the poisoned writer lives (P4); a fresh writer
(wrappers removed) recovers every acknowledged entry and at most the entries
of the one failed call (a whole-frame prefix of it), and hands out no
acknowledged LSN again (P1).
"""

from __future__ import annotations

import errno
import json
import os

import pytest
from _damage import seg_name
from _procs import run_python
from conftest import entry, from_preparer, scale

import walogs
from walogs import _io, _lock, _prealloc

SYNC_FUNCTIONS = ("fdatasync", "sync_dir", "fsync")

# ---------------------------------------------------------------------------
# Real EFBIG from RLIMIT_FSIZE, in a child process

_CHILD = r"""
import json, os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
import walogs
from walogs import _io

calls = {"n": 0}
def counting(name):
    real = getattr(_io, name)
    def wrapper(*args):
        calls["n"] += 1  # counted, then really done: this child only counts syncs
        return real(*args)
    setattr(_io, name, wrapper)
for name in ("fdatasync", "sync_dir", "fsync"):
    counting(name)

path, mode, limit, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
segment = 400 if mode == "rotation" else None
wal = walogs.Wal.open(path, walogs.WalConfig(max_segment_size=segment))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
acked, pending, failure, where = [], [], None, None
for i in range(10_000):
    if mode == "append_batch":
        items = [(b"%06d" % (4 * i + j)) * (size // 6) for j in range(4)]
    elif mode == "rotation":
        items = [(b"%06d" % i) * ((size + 50 * i) // 6)]  # growing entries: each one rotates sooner
    else:
        items = [(b"%06d" % i) * (size // 6)]
    pending = [x.decode() for x in items]
    segments_before = wal.segment_count
    offset_before = os.path.getsize(os.path.join(path, "wal-%06d.log" % segments_before))
    try:
        if mode == "append_batch":
            lsns = list(wal.append_batch(items))
        else:
            lsns = [wal.append(items[0])]
    except OSError as exc:
        failure = exc.errno
        where = {"segments_before": segments_before, "offset_before": offset_before,
                 "segments_after": len([n for n in os.listdir(path) if n.startswith("wal-")]),
                 "first_lsn": wal.next_lsn}
        break
    acked.extend([lsn, x.decode()] for lsn, x in zip(lsns, items))
calls_at_failure = calls["n"]
later = []
for call in (lambda: wal.append(b"after"), lambda: wal.append_batch([b"a", b"b"]), wal.sync, wal.rotate,
             lambda: wal.checkpoint(10**9)):
    try:
        call()
        later.append("succeeded")
    except walogs.WalError as exc:
        later.append("WalError: poisoned" if "poisoned" in str(exc) else "WalError: " + str(exc))
    except OSError as exc:
        later.append("OSError %d" % exc.errno)
durable = wal.durable_lsn
calls_after_later = calls["n"]
wal.close()
print(json.dumps({"acked": acked, "pending": pending, "errno": failure, "where": where, "later": later,
                  "durable": durable, "calls": [calls_at_failure, calls_after_later, calls["n"]]}))
"""

FRAME = 16 + 102  # the child's entries: 17 x b"%06d" = 102 bytes
BATCH = 4 * FRAME

EFBIG_CASES = [
    # (mode, limit, entry size): limit on a frame boundary, inside a header, at the end of a
    # header, inside data, and (batches) on a frame boundary inside the batch.
    ("append", 3 * FRAME, 102),
    ("append", 3 * FRAME + 1, 102),
    ("append", 3 * FRAME + 15, 102),
    ("append", 3 * FRAME + 16, 102),
    ("append", 3 * FRAME + 77, 102),
    ("append", 10_000, 102),
    ("append_batch", 2 * BATCH, 102),
    ("append_batch", 2 * BATCH + 9, 102),
    ("append_batch", 2 * BATCH + FRAME, 102),
    ("append_batch", 2 * BATCH + 2 * FRAME + 40, 102),
    ("append_batch", 2 * BATCH + BATCH - 1, 102),
    # Rotation: max_segment_size 400, entries growing by 50 bytes; the first entry whose frame
    # exceeds the limit rotates (the new segment file is created and synced) and then fails
    # on its first write into that new file.
    ("rotation", 300, 100),
    ("rotation", 333, 100),
    ("rotation", 500, 60),
]


@pytest.mark.parametrize("mode,limit,size", EFBIG_CASES, ids=[f"{m}-{lim}" for m, lim, _ in EFBIG_CASES])
def test_real_efbig(log_dir, mode, limit, size):
    """P2, I2, P1: a real short write then EFBIG (RLIMIT_FSIZE). The failing call raises
    OSError(EFBIG); every later write call raises WalError and no sync is attempted after
    the failure, close() included; the failed call's bytes are cut at once (whole frames of a
    batch too: none was acknowledged), so the fresh writer finds exactly the acknowledged
    entries and continues after them."""
    out = run_python(_CHILD, log_dir, mode, limit, size, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["errno"] == errno.EFBIG, report
    assert report["later"] == ["WalError: poisoned"] * 5, report["later"]
    at_failure, after_later, after_close = report["calls"]
    assert at_failure == after_later == after_close, f"a sync was attempted after the failure: {report['calls']}"
    acked = [(lsn, data.encode()) for lsn, data in report["acked"]]
    pending = [d.encode() for d in report["pending"]]
    assert acked, "the limit left no room for a single acknowledged entry"
    assert report["durable"] == acked[-1][0]
    where = report["where"]
    segment = seg_name(where["segments_after"])
    if mode == "rotation":
        # The rotation happened (file created) before the write into it failed.
        assert where["segments_after"] == where["segments_before"] + 1, where
        start = 0
    else:
        assert where["segments_after"] == where["segments_before"] == 1, where
        start = where["offset_before"]
    # The kernel wrote up to the limit, then refused (EFBIG); the writer then cut every byte of
    # the failed call, whole frames included: none was acknowledged, and a caller retrying a
    # batch must not find half of it stored.
    assert os.path.getsize(log_dir / segment) == start
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=400 if mode == "rotation" else None)) as wal:
        recovered = list(wal)
        assert recovered == acked, recovered[len(acked):]
        assert wal.tail_state == walogs.TailState.CLEAN
        assert wal.next_lsn == recovered[-1][0] + 1
        assert wal.append(b"fresh") == recovered[-1][0] + 1 > acked[-1][0]  # P1: no acknowledged LSN again
    print(f"\n[failing disk] EFBIG {mode} limit={limit}: {len(acked)} acked, {len(pending)} frames of "
          f"the failed call on disk, {len(recovered) - len(acked)} recovered, later calls {report['later'][0]!r}")


# ---------------------------------------------------------------------------
# Injected EIO on the n-th sync call (a mock: see the module docstring)


@pytest.fixture(autouse=True)
def prepare_inline(monkeypatch):
    """Segments are prepared in the writer's own thread, so the n-th call is the same in every run."""
    monkeypatch.setattr(_prealloc, "BACKGROUND", False)


class Injector:
    """Wraps the sync functions of walogs._io; the n-th call of ``target`` raises EIO.

    ``target`` is one of SYNC_FUNCTIONS, or "any" for the n-th call of any of them.
    Every call of every sync function is counted, before and after the failure,
    except the segment preparer's (zeros for the next segment, walogs/_prealloc.py):
    its failures are never the writer's, they only leave the next segment unprepared
    (tests/test_prealloc.py injects them).
    """

    def __init__(self, monkeypatch, target: str, n: int) -> None:
        self.target, self.n = target, n
        self.calls = 0  # every sync call, any function
        self.target_calls = 0
        self.failed_in: str | None = None
        self.failed_function: str | None = None
        self.op = "setup"
        for name in SYNC_FUNCTIONS:
            monkeypatch.setattr(_io, name, self._wrap(name, getattr(_io, name)))

    def _wrap(self, name, real):
        def wrapper(*args):
            if from_preparer():
                return real(*args)
            self.calls += 1
            if self.target in (name, "any"):
                self.target_calls += 1
                if self.target_calls == self.n:
                    self.failed_in, self.failed_function = self.op, name
                    raise OSError(errno.EIO, f"injected EIO on {name} call {self.n}")
            return real(*args)
        return wrapper


# Enough rounds for every injection point: ~6 fdatasync and ~4.5 sync_dir calls a round
# (a checkpoint writes no LSN floor since rotation records it), n up to scale(50, 130).
ROUNDS = scale(12, 40)


def _workload():
    """Deterministic operations: appends, batches, size and explicit rotations, checkpoints, reopens."""
    ops = [("open",)]
    i = 0
    for r in range(ROUNDS):
        for _ in range(3):
            ops.append(("append", [entry(i, 20 + 7 * (i % 5))]))
            i += 1
        ops.append(("append_batch", [entry(i + j, 10 + 9 * j) for j in range(3)]))
        i += 3
        ops.append(("rotate",))
        if r % 2:
            ops.append(("checkpoint", 4 * r))
        if r % 3 == 2:
            ops.append(("reopen",))
        ops.append(("sync",))
    ops.append(("checkpoint", 10**6))  # every completed segment: the LSN floor must carry P1
    ops.append(("reopen",))
    ops.append(("append", [b"last"]))
    return ops


CONFIG = walogs.WalConfig(max_segment_size=200)


def _run_until_failure(log_dir, inj: Injector):
    """Run the workload; stop at the first OSError. Returns the state the checks need."""
    state = {"wal": None, "acked": {}, "pending": [], "pending_first": None, "ckpt": 0, "failed_op": None}
    for op in _workload():
        kind = op[0]
        inj.op = kind
        wal = state["wal"]
        try:
            if kind == "open":
                state["wal"] = walogs.Wal.open(log_dir, CONFIG)
            elif kind == "reopen":
                wal.close()
                state["wal"] = None
                state["wal"] = walogs.Wal.open(log_dir, CONFIG)
            elif kind in ("append", "append_batch"):
                state["pending"], state["pending_first"] = op[1], wal.next_lsn
                if kind == "append":
                    lsns = [wal.append(op[1][0])]
                else:
                    lsns = list(wal.append_batch(op[1]))
                assert lsns == list(range(state["pending_first"], state["pending_first"] + len(op[1])))
                state["acked"].update(zip(lsns, op[1]))
                state["pending"] = []
            elif kind == "rotate":
                wal.rotate()
            elif kind == "checkpoint":
                state["ckpt"] = max(state["ckpt"], op[1])  # may delete up to here even if it fails
                wal.checkpoint(op[1])
            elif kind == "sync":
                wal.sync()
        except OSError as exc:
            state["failed_op"] = (kind, exc)
            return state
    return state


def later_outcomes(wal) -> list[str]:
    """What each write call does on ``wal`` now: "<call>: poisoned" is what a poisoned writer (P2) answers."""
    calls = (("append", lambda: wal.append(b"after")), ("append_batch", lambda: wal.append_batch([b"a", b"b"])),
             ("sync", wal.sync), ("rotate", wal.rotate), ("checkpoint", lambda: wal.checkpoint(10**9)))
    outcomes = []
    for name, call in calls:
        try:
            call()
            outcomes.append(f"{name}: succeeded")
        except walogs.WalError as later:
            outcomes.append(f"{name}: poisoned" if "poisoned" in str(later) else f"{name}: WalError {later}")
        except OSError as later:
            outcomes.append(f"{name}: OSError {later.errno}")
    return outcomes


@pytest.mark.parametrize("n", range(1, scale(50, 130) + 1))
@pytest.mark.parametrize("target", ["fdatasync", "sync_dir", "any"])
def test_injected_eio(log_dir, monkeypatch, target, n):
    """P2, P4, P1, I14: EIO on the n-th sync call of the workload (see the module docstring
    for why this one is a mock)."""
    inj = Injector(monkeypatch, target, n)
    state = _run_until_failure(log_dir, inj)
    wal: walogs.Wal | None = state["wal"]
    assert state["failed_op"] is not None, (
        f"the injected EIO never fired: the workload made {inj.target_calls} {target} calls (< {n}) "
        "or swallowed it; grow the workload")
    kind, exc = state["failed_op"]
    assert exc.errno == errno.EIO and inj.failed_in == kind, (kind, inj.failed_in, exc)
    acked: dict[int, bytes] = state["acked"]
    pending = state["pending"] if kind in ("append", "append_batch") else []
    max_acked = max(acked, default=0)
    calls_at_failure = inj.calls

    if wal is not None and not wal.closed:
        # The failing call was not acknowledged, and nothing after it can be (P2).
        assert wal.durable_lsn <= max_acked
        with walogs.WalReader(log_dir) as reader:  # P4: the poisoned writer still holds the lock
            seen = list(reader.iter())
        assert all(lsn in acked and acked[lsn] == data for lsn, data in seen), (
            f"a reader saw an unacknowledged entry after {inj.failed_function} failed in {kind}")
        outcomes = later_outcomes(wal)
        assert all(o.endswith(": poisoned") for o in outcomes), (
            f"EIO from {inj.failed_function} in {kind}() did not poison the writer; later calls: {outcomes} "
            f"({inj.calls - calls_at_failure} more sync calls) (P2)")
        assert inj.calls == calls_at_failure, (
            f"{inj.calls - calls_at_failure} sync call(s) after {inj.failed_function} failed in {kind} (P2)")
        wal.close()  # never syncs a poisoned writer
        assert inj.calls == calls_at_failure, "close() synced a poisoned writer (P2)"
    else:
        # Wal.open itself failed: it must not leave the lock held.
        assert not _lock.writer_is_live(str(log_dir))[0]

    monkeypatch.undo()
    with walogs.Wal.open(log_dir, CONFIG) as fresh:
        recovered = list(fresh)
        lsns = [lsn for lsn, _ in recovered]
        if lsns:
            assert lsns == list(range(lsns[0], lsns[0] + len(lsns))), "LSN gap after recovery (I12)"
        extra = []
        for lsn, data in recovered:
            if lsn in acked:
                assert acked[lsn] == data, f"LSN {lsn} holds other data than was acknowledged"
            else:
                extra.append((lsn, data))
        # At most the entries of the one failed call, as a prefix of it, right after the acked ones.
        first = state["pending_first"]
        assert extra == [(first + j, pending[j]) for j in range(len(extra))], extra
        missing = [lsn for lsn in acked if lsn > state["ckpt"] and lsn not in set(lsns)]
        assert not missing, f"acknowledged LSNs lost: {missing}"
        new = fresh.append(b"fresh")
        assert new > max_acked, f"LSN {new} handed out again (P1)"
        if lsns:
            assert new == lsns[-1] + 1
    print(f"\n[failing disk] EIO on {target} call {n}: failed {inj.failed_function} in {kind}; "
          f"{len(acked)} acked, {len(extra)} of {len(pending)} unacknowledged recovered")


@pytest.mark.parametrize("nth", [1, 2, 3], ids=["dir-sync-after-1st-unlink", "dir-sync-after-2nd-unlink",
                                                "dir-sync-after-3rd-unlink"])
def test_failed_sync_in_checkpoint_poisons_the_writer(log_dir, monkeypatch, nth):
    """P2 (docs/invariants.md: a failed sync is never retried and never followed by a success
    report), I14, docs/api.rst ("after an fdatasync or write error the writer is poisoned").

    checkpoint() syncs the directory after each segment it unlinks (I14: a crash leaves a
    contiguous suffix); it writes no LSN floor, since the rotation that completed each
    segment recorded it (LSN_FLOOR), so it makes no other sync call. When one of those
    directory syncs fails with EIO (mocked, see the module docstring), checkpoint raises the
    OSError and poisons the writer: otherwise later appends would be acknowledged and a later
    checkpoint/rotate would sync the same directory again and report success, although the
    failed directory sync may have lost the unlink (after a power cut a deleted segment can
    come back before a later one is gone: a gap, I11).
    """
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=None)) as setup:
        for i in range(3):
            setup.append(entry(i, 10))
            setup.rotate()
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=None))
    try:
        inj = Injector(monkeypatch, "sync_dir", nth)
        inj.op = "checkpoint"
        with pytest.raises(OSError) as info:
            wal.checkpoint(3)  # deletes segments 1-3: 3 directory syncs
        assert info.value.errno == errno.EIO
        assert inj.calls == nth, f"checkpoint made {inj.calls - nth} other sync call(s) before the failure"
        calls = inj.calls
        outcomes = later_outcomes(wal)
        assert all(o.endswith("poisoned") for o in outcomes), (
            f"EIO on directory sync {nth} in checkpoint() did not poison the writer: {outcomes}; "
            f"{inj.calls - calls} sync call(s) after the failure (P2)")
        assert inj.calls == calls
    finally:
        wal.close()


@pytest.mark.parametrize("how", ["slot-update", "file-creation"])
def test_failed_floor_sync_at_rotation_poisons_the_writer(log_dir, monkeypatch, how):
    """P2 for LSN_FLOOR: rotation records the floor (an in-place slot update and fdatasync, or,
    with no floor file, a temp file's fdatasync then a rename); EIO there raises from rotate()
    and poisons, since a later checkpoint would rely on a floor that may be on no disk. A
    full disk there is not an I/O failure (tests/test_full_disk.py)."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=None)) as wal:
        wal.append(b"a")
        wal.rotate()  # the first rotation creates LSN_FLOOR
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=None))
    try:
        if how == "file-creation":
            os.unlink(log_dir / "LSN_FLOOR")  # as in a log from before the floor file
        wal.append(b"b")
        real = _io.fdatasync

        def failing(fd):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(log_dir / "LSN_FLOOR")):
                raise OSError(errno.EIO, "injected EIO on fdatasync of the LSN floor")
            return real(fd)

        monkeypatch.setattr(_io, "fdatasync", failing)
        with pytest.raises(OSError) as info:
            wal.rotate()
        assert info.value.errno == errno.EIO
        with pytest.raises(walogs.WalError, match="poisoned"):
            wal.append(b"c")
    finally:
        monkeypatch.undo()
        wal.close()
    with walogs.Wal.open(log_dir) as wal:
        assert [d for _, d in wal] == [b"a", b"b"]
    assert not (log_dir / "LSN_FLOOR.tmp").exists()  # the open removed what the failed sync left
