"""Issue #17, hardening: signals, fork, a failing background sync, Ctrl-C during rotation.

Each test here failed on the code before its fix (commit 5d7623f). The
scenarios that can hang or kill a process run in a child process with a
timeout as the hang guard; counts are fixed, nothing is timed.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from _procs import ROOT, run_python, stop
from conftest import HeldSync, Interrupted, entry, interrupted_after, queue_appends, settled

import walogs
from walogs import _io

HANG_GUARD = 60  # seconds a child may take before it counts as hung


def run_child(code: str, *args: object, timeout: float = HANG_GUARD):
    """Run ``code`` in a fresh interpreter (same implementation) and return the JSON it prints last."""
    try:
        out = run_python(code, *args, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child hung (killed after {timeout} s); its output: {exc.stdout!r} {exc.stderr!r}")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# 1. close() from a signal handler that interrupted a call on the same thread

_SIGTERM_CHILD = r"""
import json, sys, signal
import walogs

path, sync, segment = sys.argv[1], sys.argv[2], int(sys.argv[3])
wal = walogs.Wal.open(path, walogs.WalConfig(sync=sync, max_segment_size=segment))
handler = {"returned": 0, "closed_in_handler": None}

def on_term(signum, frame):
    wal.close()  # what a server does on SIGTERM: it must return (or raise), never hang
    handler["returned"] += 1
    handler["closed_in_handler"] = wal.closed

signal.signal(signal.SIGTERM, on_term)
acked, error = 0, None
i = 0
while True:
    try:
        acked = wal.append(b"%08d" % i * 12)
    except walogs.WalClosedError:
        break
    i += 1
    if i == 300:
        print("appending", flush=True)
print(json.dumps({"acked": acked, "closed": wal.closed, **handler}))
"""

SIGTERM_CASES = [("always", 4096), ("none", 4096), ("none", walogs.DEFAULT_MAX_SEGMENT_SIZE),
                 ("always", walogs.DEFAULT_MAX_SEGMENT_SIZE)]


@pytest.mark.parametrize("sync,segment", SIGTERM_CASES, ids=[f"{s}-{n}" for s, n in SIGTERM_CASES])
def test_close_from_sigterm_handler_returns(tmp_path, sync, segment):
    """A SIGTERM handler calls close() while the main thread appends (4 KiB segments:
    mostly inside a rotation). close() returns, the interrupted append finishes, the Wal is
    closed when it returns (the next append raises WalClosedError), and every acknowledged
    entry is in the log. Before the fix the child hung on a lock its own thread held."""
    rng = random.Random(17)
    for trial in range(3):
        path = tmp_path / f"log{trial}"
        child = subprocess.Popen([sys.executable, "-c", _SIGTERM_CHILD, str(path), sync, str(segment)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert child.stdout.readline() == "appending\n", child.stderr.read()
            time.sleep(rng.uniform(0.0, 0.05))
            child.send_signal(signal.SIGTERM)
            out, err = child.communicate(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            stop(child)
            pytest.fail(f"trial {trial}: the child hung after SIGTERM (close() in the handler)")
        assert child.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert report["returned"] == 1 and report["closed"], report
        with walogs.Wal.open(path, walogs.WalConfig(max_segment_size=segment)) as wal:
            stored = list(wal)
        assert [lsn for lsn, _ in stored[: report["acked"]]] == list(range(1, report["acked"] + 1))
        assert all(data == b"%08d" % (lsn - 1) * 12 for lsn, data in stored)


_DEFERRED_CHILD = r"""
import json, sys
import walogs
from walogs import _io

path = sys.argv[1]
from walogs import _prealloc
_prealloc.BACKGROUND = False  # no preparing thread holds a descriptor while they are counted
wal = walogs.Wal.open(path, walogs.WalConfig(max_segment_size=200))
wal.append(b"a" * 150)
real = _io.sync_dir
seen = {}

def handler_runs_here(directory):
    real(directory)
    if "closed" not in seen:
        wal.close()  # as a SIGTERM handler would, on the thread inside the rotation
        seen["closed"] = wal.closed

_io.sync_dir = handler_runs_here
lsn = wal.append(b"b" * 150)  # rotates; the append completes, then the Wal closes
_io.sync_dir = real
try:
    wal.append(b"late")
    late = "accepted"
except walogs.WalClosedError:
    late = "WalClosedError"
with walogs.Wal.open(path) as again:
    stored = [data.decode() for _, data in again]
print(json.dumps({"lsn": lsn, "seen": seen, "closed": wal.closed, "late": late, "stored": stored}))
"""


def test_close_inside_a_call_is_deferred_until_it_returns(log_dir):
    """The same, deterministic: close() made from inside a rotation (where a signal handler
    can run) returns at once, not closed yet; the append completes, then the Wal is closed.
    In a child process: before the fix this hung."""
    report = run_child(_DEFERRED_CHILD, log_dir)
    assert report == {"lsn": 2, "seen": {"closed": False}, "closed": True, "late": "WalClosedError",
                      "stored": ["a" * 150, "b" * 150]}


def test_close_interrupted_while_it_waits_still_closes(log_dir, monkeypatch):
    """A signal handler that raises (Ctrl-C) while close() waits for a running sync does not
    leave a writer that still writes under a released lock: close() finishes (no write
    after it, the lock released, no waiting append left asleep) and then raises the
    handler's exception. The compiled writer waits without the GIL, where no handler runs;
    the pure-Python one waits in a Condition, where it does (#12: its close() keeps
    waiting, then raises). Each waiting append returns durable, or, if the handler ran
    inside close()'s own last sync (as it can while a test wraps _io.fdatasync), is
    refused with WalClosedError: that sync counts as not done, so nothing it may not have
    covered is acknowledged."""

    wal = walogs.Wal.open(log_dir)
    held = HeldSync(monkeypatch)
    threads, results = queue_appends(wal, 3, held)
    with interrupted_after(0.3, held, release_after=0.6), pytest.raises(Interrupted):
        wal.close()  # waits for the held sync when the alarm fires
    assert wal.closed
    with pytest.raises(walogs.WalClosedError):
        wal.append(b"late")
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert all(isinstance(r, (int, walogs.WalClosedError)) for r in results.values()), results
    acked = {r for r in results.values() if isinstance(r, int)}
    assert 1 in acked  # the leader's own sync was never interrupted
    monkeypatch.undo()
    with walogs.Wal.open(log_dir) as again:  # the lock was released
        assert acked <= {lsn for lsn, _ in again} <= {1, 2, 3}


 # ---------------------------------------------------------------------------
 # 3. fork while another thread holds the Wal's mutex

# ---------------------------------------------------------------------------
# 3. fork while another thread holds the Wal's mutex

_FORK_CHILD = r"""
import json, os, sys, threading, time
import walogs
from walogs import _io

path, sync, holder = sys.argv[1], sys.argv[2], sys.argv[3]
wal = walogs.Wal.open(path, walogs.WalConfig(sync=sync, max_segment_size=None))
wal.append(b"one")
if holder == "checkpoint":
    wal.rotate()
    wal.append(b"two")
inside, release = threading.Event(), threading.Event()
name = "sync_dir" if holder == "rotate" else "unlink"
real = getattr(_io, name)

def held(*args):
    inside.set()  # this thread holds Wal._mutex (and, rotating, has the writer paused)
    release.wait(30)
    return real(*args)

setattr(_io, name, held)
worker = threading.Thread(target=wal.rotate if holder == "rotate" else lambda: wal.checkpoint(1))
worker.start()
assert inside.wait(10)
pid = os.fork()
if pid == 0:
    code = 0
    try:
        wal.close()  # P6: only drops the handle; must not wait for the parent's thread
    except BaseException:
        code = 3
    os._exit(code)
deadline = time.monotonic() + 20
status = None
while status is None and time.monotonic() < deadline:
    done, raw = os.waitpid(pid, os.WNOHANG)
    status = os.waitstatus_to_exitcode(raw) if done else None
    time.sleep(0.01)
if status is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
setattr(_io, name, real)
release.set()
worker.join()
try:
    walogs.Wal.open(path)
    parent_lock = "lost"
except walogs.WalLockedError:
    parent_lock = "kept"
lsn = wal.append(b"after")
wal.close()
print(json.dumps({"child": "hung" if status is None else status, "parent_lock": parent_lock, "lsn": lsn}))
"""


@pytest.mark.parametrize("holder", ["rotate", "checkpoint"])
@pytest.mark.parametrize("sync", ["always", "interval"])
def test_forked_child_close_while_a_parent_thread_holds_the_mutex(log_dir, sync, holder):
    """P6: a child forked while another thread of the parent is inside rotate() or
    checkpoint() (holding the Wal's mutex) closes its copy at once; the parent keeps its
    lock and goes on. Before the fix the child's close() waited forever for that mutex."""
    report = run_child(_FORK_CHILD, log_dir, sync, holder)
    assert report["child"] == 0, report
    assert report["parent_lock"] == "kept"
    assert report["lsn"] == (2 if holder == "rotate" else 3)


# ---------------------------------------------------------------------------
# 6. sync="interval": a failed background fdatasync


@pytest.mark.parametrize("next_call", ["append", "append_batch", "sync", "close"])
def test_failed_background_sync_is_logged_and_raised_by_the_next_call(log_dir, monkeypatch, caplog, next_call):
    """P2 under "interval": the sync thread's fdatasync fails (EIO). The writer is poisoned,
    the ``walogs`` logger warns at once naming the lost LSNs, and the next call on the handle
    raises WalError caused by the OSError; close() raises it if nothing did before. Before
    the fix the error was swallowed: close() returned normally and LSNs 6.. came back.

    The EIO is injected by wrapping walogs._io.fdatasync (the test seam of
    test_failing_disk.py): a real fdatasync failure cannot be produced on demand without
    root-only fault devices. Only the sync thread's call fails; every other is real."""
    real = _io.fdatasync
    failed = threading.Event()

    def fails_in_the_sync_thread(fd):
        if threading.current_thread().name.startswith("walogs-sync") and not failed.is_set():
            failed.set()
            raise OSError(errno.EIO, "injected EIO (test)")
        real(fd)

    caplog.set_level(logging.WARNING, logger="walogs")
    wal = walogs.Wal.open(log_dir, walogs.WalConfig(sync="interval", sync_interval=0.01, max_segment_size=None))
    for i in range(5):
        wal.append(entry(i))
    wal.sync()
    monkeypatch.setattr(_io, "fdatasync", fails_in_the_sync_thread)
    for i in range(5, 10):
        assert wal.append(entry(i)) == i + 1  # acknowledged: written, not yet durable
    assert failed.wait(10)
    for _ in range(1000):  # the warning follows the failed call by a few statements
        if caplog.records:
            break
        time.sleep(0.01)
    [record] = [r for r in caplog.records if r.name == "walogs"]
    assert record.levelno == logging.WARNING and "6..10" in record.getMessage() and str(log_dir) in record.getMessage()
    calls = {"append": lambda: wal.append(b"x"), "append_batch": lambda: wal.append_batch([b"x"]),
             "sync": wal.sync, "close": wal.close}
    with pytest.raises(walogs.WalError, match="background fdatasync") as raised:
        calls[next_call]()
    assert isinstance(raised.value.__cause__, OSError) and raised.value.__cause__.errno == errno.EIO
    later = walogs.WalClosedError if next_call == "close" else walogs.WalError
    with pytest.raises(later, match="closed" if next_call == "close" else "poisoned"):
        wal.append(b"y")
    wal.close()  # reported once: closing now just closes
    monkeypatch.undo()
    with walogs.Wal.open(log_dir) as again:
        assert [d for _, d in again] == [entry(i) for i in range(5)]  # the lost ones, as the warning said


# ---------------------------------------------------------------------------
# 7. Ctrl-C (a real SIGINT) during a rotation

_CTRL_C_CHILD = r"""
import json, os, signal, sys
import walogs
from walogs import _io
# A non-interactive shell runs background jobs (`make test &`) with SIGINT ignored, and
# Python keeps an inherited SIG_IGN: Ctrl-C must raise KeyboardInterrupt here.
signal.signal(signal.SIGINT, signal.default_int_handler)

path, sync, trigger, preallocate = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
from walogs import _prealloc
_prealloc.BACKGROUND = False  # the next segment is prepared in this thread: its calls are steps too
NAMES = ("fdatasync", "create_new", "rename", "pwrite_all", "sync_dir", "close")
plan = {"armed": False, "at": 0, "when": "", "calls": []}

def wrap(name):
    real = getattr(_io, name)
    def wrapper(*args):
        if not plan["armed"]:
            return real(*args)
        plan["calls"].append(name)
        hit = len(plan["calls"]) == plan["at"]
        if hit and plan["when"] == "before":
            signal.raise_signal(signal.SIGINT)  # Ctrl-C: KeyboardInterrupt raised here
        result = real(*args)
        if hit and plan["when"] == "after":
            signal.raise_signal(signal.SIGINT)  # arrived during the call: raised as it returns
        return result
    setattr(_io, name, wrapper)

for name in NAMES:
    wrap(name)

def fds():
    return len(os.listdir("/proc/self/fd"))

def trigger_rotation(wal, i):
    if trigger == "rotate":
        wal.rotate()
        return wal.append(b"%06d" % i * 10)
    return wal.append(b"%06d" % i * 10)  # 60 bytes: the third entry in a segment rotates

cfg = walogs.WalConfig(sync=sync, max_segment_size=200, preallocate=preallocate)
results = []
for at in range(1, 40):
    for when in ("before", "after"):
        d = os.path.join(path, "%s-%d" % (when, at))
        wal = walogs.Wal.open(d, cfg)
        acked, i = [], 0
        for i in range(2):
            acked.append((wal.append(b"%06d" % i * 10), i))
        i = 2
        before = fds()
        plan.update(armed=True, at=at, when=when, calls=[])
        interrupted = False
        try:
            acked.append((trigger_rotation(wal, i), i))
        except KeyboardInterrupt:
            interrupted = True
        plan["armed"] = False
        calls = list(plan["calls"])
        case = {"at": at, "when": when, "interrupted": interrupted, "calls": calls,
                "fds_leaked": fds() - before, "files": len([n for n in os.listdir(d) if n.startswith("wal-")]),
                "segment_count": wal.segment_count}
        try:
            for i in range(3, 12):  # at least two more rotations
                acked.append((wal.append(b"%06d" % i * 10), i))
            case["after"] = "ok"
        except Exception as exc:
            case["after"] = repr(exc)
        wal.close()
        with walogs.Wal.open(d, cfg) as again:
            stored = {lsn: data for lsn, data in again}
        case["lost"] = [lsn for lsn, i in acked if stored.get(lsn) != b"%06d" % i * 10]
        case["lsns"] = sorted(stored) == list(range(1, len(stored) + 1))
        results.append(case)
    if not interrupted:
        break  # the rotation made fewer calls than `at`: every step was covered
print(json.dumps(results))
"""


@pytest.mark.parametrize("preallocate", [False, True])
@pytest.mark.parametrize("sync,trigger", [("always", "size"), ("none", "size"), ("none", "rotate")])
def test_ctrl_c_at_every_step_of_a_rotation(tmp_path, sync, trigger, preallocate):
    """A real SIGINT (KeyboardInterrupt) raised before and after each system call of a
    rotation (sync the old segment, create the new one, sync the directory, close the old
    one, and the write's sync after it): the call raises KeyboardInterrupt, no descriptor
    stays open (not even one whose open(2) the interrupt cut off from its caller), the
    files on disk match segment_count, the next appends rotate again, and every
    acknowledged entry is in the log. Before the fix: FileExistsError on the next
    rotation, a leaked descriptor and one segment more on disk than segment_count.

    The wrappers only raise the signal at the chosen call (Ctrl-C cannot be timed to one
    system call from outside); every call is the real one. With ``preallocate`` the new
    segment is the prepared one renamed into place, and the next one is prepared (zeros
    written and synced) inside the rotation: Ctrl-C lands in each of those calls too."""
    results = run_child(_CTRL_C_CHILD, tmp_path, sync, trigger, int(preallocate))
    interrupted = [case for case in results if case["interrupted"]]
    steps = set(interrupted[-1]["calls"])
    made = {"rename", "pwrite_all"} if preallocate else {"create_new"}
    assert {"fdatasync", "sync_dir", "close"} | made <= steps, interrupted[-1]
    bad = [case for case in interrupted
           if case["fds_leaked"] or case["files"] != case["segment_count"] or case["after"] != "ok"
           or case["lost"] or not case["lsns"]]
    assert not bad, bad


_SWITCH_CHILD = r"""
import json, os, signal, sys
import walogs
# A non-interactive shell runs background jobs (`make test &`) with SIGINT ignored, and
# Python keeps an inherited SIG_IGN: Ctrl-C must raise KeyboardInterrupt here.
signal.signal(signal.SIGINT, signal.default_int_handler)

path = sys.argv[1]
from walogs import _prealloc
_prealloc.BACKGROUND = False  # no preparing thread holds a descriptor while they are counted
wal = walogs.Wal.open(path, walogs.WalConfig(max_segment_size=200))
for i in range(2):
    wal.append(b"%06d" % i * 10)

def profile(frame, event, arg):
    # The writer has switched to the new segment and the rotation is about to list the old
    # one as completed (its first call after the switch): Ctrl-C arrives now.
    if event == "c_call" and frame.f_code.co_name == "_segment_completed" and arg.__name__ == "append":
        sys.setprofile(None)
        signal.raise_signal(signal.SIGINT)

fds = len(os.listdir("/proc/self/fd"))
sys.setprofile(profile)
try:
    wal.rotate()
    interrupted = False
except KeyboardInterrupt:
    interrupted = True
sys.setprofile(None)
report = {"interrupted": interrupted, "fds_leaked": len(os.listdir("/proc/self/fd")) - fds,
          "segment_count": wal.segment_count, "first_lsn": wal.first_lsn,
          "files": sorted(n for n in os.listdir(path) if n.startswith("wal-"))}
report["lsns"] = [lsn for lsn, _ in wal.iter()] + [wal.append(b"%06d" % i * 10) for i in range(2, 8)]
wal.close()
print(json.dumps(report))
"""


def test_ctrl_c_right_after_the_writer_switched_segments(tmp_path):
    """Ctrl-C just after the writer switched to the new segment: the rotation counts as done
    (the old segment is listed as completed, its descriptor closed exactly once), and
    appends go on."""
    report = run_child(_SWITCH_CHILD, tmp_path / "log")
    assert report == {"interrupted": True, "fds_leaked": 0, "segment_count": 2, "first_lsn": 1,
                      "files": ["wal-000001.log", "wal-000002.log"], "lsns": [1, 2, 3, 4, 5, 6, 7, 8]}


def test_rotation_takes_over_an_empty_leftover_segment(log_dir):
    """An empty next segment file (what an interrupted rotation leaves if even its clean-up
    was cut short) does not stop the next rotation; a non-empty one is never touched."""
    wal = settled(walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=200)))
    wal.append(entry(0, 150))
    open(os.path.join(log_dir, "wal-000002.log"), "wb").close()
    assert wal.append(entry(1, 150)) == 2  # rotates into wal-000002.log
    with open(os.path.join(log_dir, "wal-000003.log"), "wb") as f:
        f.write(b"not ours")
    with pytest.raises(FileExistsError, match="wal-000003.log"):
        wal.append(entry(2, 150))
    with open(os.path.join(log_dir, "wal-000003.log"), "rb") as f:
        assert f.read() == b"not ours"
    wal.close()
    assert wal.closed


# ---------------------------------------------------------------------------
# 10. sync_interval range


@pytest.mark.parametrize("value", [1e300, 86400.5, 1e6, 0.0005, 1e-300, math.nan, math.inf, -math.inf])
def test_sync_interval_out_of_range_is_refused(value):
    """A sync_interval the sync thread cannot wait (1e300 overflowed its timer and killed it)
    or that makes no sense is a ValueError naming the value and the allowed range."""
    with pytest.raises(ValueError, match="from 0.001 to 86400") as raised:
        walogs.WalConfig(sync="interval", sync_interval=value)
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize("value", [0.001, 0.05, 3600, 86400])
def test_sync_interval_in_range_is_accepted(value):
    assert walogs.WalConfig(sync="interval", sync_interval=value).sync_interval == value


# ---------------------------------------------------------------------------
# Rough edges


ONE_OBJECT_BATCHES = pytest.mark.parametrize("batch", [b"abc", bytearray(b"abc"), memoryview(b"abc"), "abc"],
                                             ids=["bytes", "bytearray", "memoryview", "str"])


def batch_message(batch) -> str:
    return "iterable of entries .* not " + type(batch).__name__ + ": to append one entry use append"


@ONE_OBJECT_BATCHES
def test_encode_batch_of_one_bytes_object_says_what_a_batch_is(codec, batch):
    """encode_batch(1, b"abc") used to say "...not int"; now each codec says a batch is an
    iterable of entries and how to append one entry."""
    with pytest.raises(TypeError, match=batch_message(batch)):
        codec.encode_batch(1, batch)


@ONE_OBJECT_BATCHES
def test_append_batch_of_one_bytes_object_says_what_a_batch_is(log_dir, batch):
    """append_batch(b"abc") used to say "...not int"; now the writer too says a batch is an
    iterable of entries and how to append one entry."""
    message = batch_message(batch)
    with walogs.Wal.open(log_dir) as wal:
        with pytest.raises(TypeError, match=message):
            wal.append_batch(batch)
        with pytest.raises(TypeError, match=message):
            wal._writer.append_batch(batch)
        with pytest.raises(TypeError, match="iterable of entries .* not int$"):
            wal.append_batch(5)
        assert wal.append_batch(iter([b"a", bytearray(b"b")])) == range(1, 3)
        assert wal.next_lsn == 3


def test_unclosed_wal_warns_when_collected(log_dir):
    """A Wal dropped without close() gives a ResourceWarning, as an unclosed file does,
    and still gives back its lock."""
    wal = walogs.Wal.open(log_dir)
    wal.append(b"a")
    with pytest.warns(ResourceWarning, match="unclosed <walogs.Wal"):
        del wal
        gc.collect()
    with walogs.Wal.open(log_dir) as again:
        assert again.next_lsn == 2


def test_closed_wal_warns_nothing_when_collected(log_dir, recwarn):
    wal = walogs.Wal.open(log_dir)
    wal.close()
    del wal
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]


def test_close_called_from_c_with_no_python_caller(log_dir):
    """close() registered with atexit runs with no Python frame below it: it closes
    cleanly (it looks for an interrupted call on the stack, and there is none)."""
    code = ("import atexit, sys, walogs\n"
            "wal = walogs.Wal.open(sys.argv[1])\n"
            "wal.append(b'a')\n"
            "atexit.register(wal.close)\n")
    out = subprocess.run([sys.executable, "-c", code, str(log_dir)], capture_output=True, text=True,
                         timeout=HANG_GUARD, cwd=ROOT, check=False)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    with walogs.Wal.open(log_dir) as again:
        assert again.next_lsn == 2


def test_enter_on_a_closed_wal_raises(log_dir):
    wal = walogs.Wal.open(log_dir)
    wal.close()
    with pytest.raises(walogs.WalClosedError):
        with wal:
            pass
