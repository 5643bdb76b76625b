"""The writer lock dies with the writer, even when it forked (I6, P6; issue #17, item 9).

A plain ``os.fork()`` after ``Wal.open`` copies the LOCK descriptor into the
child. OFD locks and flock belong to the open file, not the process: while
the child keeps its copy, the lock outlives the parent. So the child must
drop its copy at once (without unlocking: the parent still writes), and
after the parent is SIGKILLed the next writer opens although the child still
runs. Real processes and a real SIGKILL; the child does nothing with walogs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from _procs import ROOT, kill_all, run_python, stop

import walogs
from walogs import _lock

_PARENT = r"""
import os, sys, time
import walogs
wal = walogs.Wal.open(sys.argv[1])
wal.append(b"from the parent")
pid = os.fork()
if pid == 0:
    time.sleep(60)          # a worker that has nothing to do with the log
    os._exit(0)
print(pid, flush=True)
wal.append(b"after the fork")  # the parent keeps its lock and writes on
print("ready", flush=True)
time.sleep(60)
"""


def _lock_holders(path) -> set[int]:
    """Pids with a descriptor open on ``path``/LOCK (from /proc)."""
    target = os.path.realpath(os.path.join(path, _lock.LOCK_NAME))
    holders = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    holders.add(int(pid))
        except OSError:
            continue
    return holders


def test_forked_child_does_not_keep_the_lock_after_the_parent_is_killed(log_dir):
    """After SIGKILL of the writer, a new writer opens at once while the writer's forked
    child still runs; the child holds no descriptor of LOCK; while the parent lived, the
    parent alone held the lock (a second open failed)."""
    proc = subprocess.Popen([sys.executable, "-c", _PARENT, str(log_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    child = None
    try:
        child = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        with pytest.raises(walogs.WalLockedError):
            walogs.Wal.open(log_dir)  # the parent still holds it
        assert _lock.writer_is_live(str(log_dir))[0]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        os.kill(child, 0)  # still running
        with walogs.Wal.open(log_dir, lock_timeout=2.0) as wal:
            assert [data for _, data in wal] == [b"from the parent", b"after the fork"]
        assert child not in _lock_holders(log_dir), "the forked child kept a descriptor of LOCK"
    finally:
        stop(proc)
        if child is not None:
            kill_all([child])  # a grandchild: signalled, nothing of ours to reap


_FORK_THEN_CLOSE = r"""
import os, sys
import walogs
wal = walogs.Wal.open(sys.argv[1])
pid = os.fork()
if pid == 0:
    wal.close()   # in the child: only drops the handle (P6)
    os._exit(0)
os.waitpid(pid, 0)
try:
    walogs.Wal.open(sys.argv[1])
    print("second writer opened")
except walogs.WalLockedError:
    print("locked")
wal.append(b"still mine")
wal.close()
print("ok")
"""


def test_parent_keeps_its_lock_after_the_child_drops_its_copy(log_dir):
    """P6 still holds: the child closing its handle (and the at-fork hook closing its copy
    of LOCK) never unlocks the parent's lock."""
    out = run_python(_FORK_THEN_CLOSE, log_dir)
    assert out.stdout.split() == ["locked", "ok"], out.stderr
    with walogs.Wal.open(log_dir) as wal:
        assert [data for _, data in wal] == [b"still mine"]
