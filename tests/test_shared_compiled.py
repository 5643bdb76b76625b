"""Shared writers across real processes, for whichever implementation runs (and both at once).

A check of the compiled shared writer against its twin: processes append and
batch through rotations and checkpoints (some SIGKILLed at random instants),
each recording what was acknowledged; an exclusive open then finds every
acknowledged LSN once, contiguous, with the bytes written. The same sequence of
calls leaves the same bytes under both implementations, and processes of the
two implementations share one log. The full shared-writer suite is
``test_shared*.py``; this file is the compiled twin's own check.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from _procs import ROOT, fork_child, kill_all, reap

import walogs
from walogs import Wal, WalConfig, WalError, _io
from walogs._format import WRITERS_GATHER_AT, WRITERS_NAME

CONFIG = WalConfig(max_segment_size=4096, sync="always")
HERE = os.path.dirname(os.path.abspath(__file__))


def _entry(child: int, k: int, j: int) -> bytes:
    head = b"%d:%d:%d|" % (child, k, j)
    return head + bytes((child * 31 + k * 7 + j + i) % 251 for i in range(100 - len(head)))


def produce(directory: str, child: int, ops: int, acks: str, checkpoint_every: int = 0, seed: int = 0) -> None:
    """Append (one entry, or a batch of 2-5) ``ops`` times (forever if 0), recording each acknowledgement.

    One ``write`` per acknowledgement to ``acks`` (O_APPEND): ``lsn child k count``, or
    ``C applied_up_to`` for a checkpoint, so a SIGKILL loses none that returned.
    """
    rng = random.Random(seed or child)
    out = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    wal = Wal.open(directory, CONFIG, shared=True, lock_timeout=30)
    k = 0
    while not ops or k < ops:
        if rng.random() < 0.3:
            count = rng.randint(2, 5)
            lsn = wal.append_batch([_entry(child, k, j) for j in range(count)]).start
        else:
            count = 1
            lsn = wal.append(_entry(child, k, 0))
        os.write(out, b"%d %d %d %d\n" % (lsn, child, k, count))
        k += 1
        if checkpoint_every and k % checkpoint_every == 0 and lsn > 300:
            os.write(out, b"C %d\n" % (lsn - 300))
            wal.checkpoint(lsn - 300)
    wal.close()
    os.close(out)


def _acknowledged(acks: list[str]) -> tuple[dict[int, bytes], int]:
    """Every acknowledged LSN with its bytes (each once across processes), and the highest checkpoint."""
    expected: dict[int, bytes] = {}
    floor = 0
    for path in acks:
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for line in f:
                fields = line.split()
                if fields[0] == "C":
                    floor = max(floor, int(fields[1]))
                    continue
                lsn, child, k, count = map(int, fields)
                for j in range(count):
                    assert lsn + j not in expected, f"LSN {lsn + j} acknowledged twice"
                    expected[lsn + j] = _entry(child, k, j)
    return expected, floor


def _check_log(directory: str, expected: dict[int, bytes], floor: int) -> int:
    """Exclusive open: contiguous LSNs, every acknowledged one above the checkpoints with its bytes."""
    with Wal.open(directory, CONFIG) as wal:
        found = list(wal.iter())
    lsns = [lsn for lsn, _ in found]
    assert lsns == list(range(lsns[0], lsns[0] + len(lsns))), "LSNs not contiguous"
    stored = dict(found)
    missing = [lsn for lsn in expected if lsn > floor and lsn not in stored]
    assert not missing, f"{len(missing)} acknowledged entries lost, first {sorted(missing)[:5]}"
    wrong = [lsn for lsn, data in expected.items() if lsn in stored and stored[lsn] != data]
    assert not wrong, f"entries with other bytes than written: {wrong[:5]}"
    for lsn, data in found:  # entries nobody acknowledged (a killed producer's) are still whole entries
        child, k, j = map(int, data.split(b"|", 1)[0].split(b":"))
        assert data == _entry(child, k, j), lsn
    return len(found)


def test_eight_processes_append_and_batch_through_rotations_and_checkpoints(tmp_path):
    directory = str(tmp_path / "log")
    Wal.open(directory, CONFIG).close()
    acks = [str(tmp_path / f"acks{i}") for i in range(8)]
    pids = [fork_child(lambda i=i: produce(directory, i, 120, acks[i], checkpoint_every=40 if i < 2 else 0))
            for i in range(8)]
    statuses = [reap(pid, timeout=120) for pid in pids]
    assert all(os.waitstatus_to_exitcode(s) == 0 for s in statuses), statuses
    expected, floor = _acknowledged(acks)
    assert len(expected) >= 8 * 120
    assert floor > 0
    _check_log(directory, expected, floor)
    assert len([n for n in os.listdir(directory) if n.startswith("wal-")]) > 1


def test_producers_killed_at_random_instants_lose_no_acknowledged_entry(tmp_path):
    directory = str(tmp_path / "log")
    Wal.open(directory, CONFIG).close()
    rng = random.Random(13)
    acks: list[str] = []
    running: list[int] = []

    def start() -> None:
        path = str(tmp_path / f"acks{len(acks)}")
        child = len(acks)
        acks.append(path)
        running.append(fork_child(lambda: produce(directory, child, 0, path, checkpoint_every=50)))

    for _ in range(6):
        start()
    kills = 0
    try:
        for _ in range(int(os.environ.get("WALOGS_STRESS", "1")) * 40):
            time.sleep(rng.uniform(0.005, 0.06))
            victim = running.pop(rng.randrange(len(running)))
            kill_all([victim])
            kills += 1
            start()
        time.sleep(0.2)
    finally:
        for pid in running:
            os.kill(pid, signal.SIGKILL)
        kill_all(running)
    expected, floor = _acknowledged(acks)
    assert kills >= 40 and len(expected) > 100
    _check_log(directory, expected, floor)


SEQUENCE = r"""
import os, sys, walogs
from walogs import Wal, WalConfig
from walogs._format import WRITERS_GATHER_AT, WRITERS_NAME
directory = sys.argv[1]
config = WalConfig(max_segment_size=1024, sync=sys.argv[2])
a = Wal.open(directory, config, shared=True)
b = Wal.open(directory, config, shared=True)
for k in range(60):
    w = (a, b)[k % 2]
    if k % 5 == 0:
        w.append_batch([b"batch %d.%d " % (k, j) * (j + 1) for j in range(k % 4)])
    else:
        w.append(b"entry %d " % k * (k % 9))
    if k % 17 == 0:
        w.sync()
    if k % 23 == 0:
        w._writer.rotate()
a.close()
b.close()
print(walogs.BUILD_INFO.shared_writer)
"""


def _run(code: str, *args: str, pure: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WALOGS_PURE_PYTHON"}
    if pure:
        env["WALOGS_PURE_PYTHON"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE])
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)


def _files(directory: str) -> dict[str, bytes]:
    """The segments, LSN_FLOOR and the WRITERS state (less the gather record's sync time, a duration)."""
    names = sorted(n for n in os.listdir(directory) if n.startswith("wal-") or n in ("LSN_FLOOR", WRITERS_NAME))
    image = {}
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            image[name] = f.read()
    took = WRITERS_GATHER_AT + 8
    image[WRITERS_NAME] = image[WRITERS_NAME][:took] + image[WRITERS_NAME][took + 8:]
    return image


@pytest.mark.parametrize("mode", ["always", "none"])
def test_the_same_calls_leave_the_same_bytes_in_both_implementations(tmp_path, mode):
    if not any(f.startswith("_shared_writer.") and f.endswith(".so") for f in os.listdir(os.path.dirname(walogs.__file__))):
        pytest.skip("walogs._shared_writer is not built here")
    images = {}
    for pure in (True, False):
        directory = str(tmp_path / f"log-{pure}")
        done = _run(SEQUENCE, directory, mode, pure=pure)
        assert done.stdout.strip() == ("walogs._shared_writer_py" if pure else "walogs._shared_writer")
        images[pure] = _files(directory)
    assert len([n for n in images[True] if n.startswith("wal-")]) > 2
    assert images[True] == images[False]


def test_processes_of_both_implementations_share_one_log(tmp_path):
    if not any(f.startswith("_shared_writer.") and f.endswith(".so") for f in os.listdir(os.path.dirname(walogs.__file__))):
        pytest.skip("walogs._shared_writer is not built here")
    directory = str(tmp_path / "log")
    Wal.open(directory, CONFIG).close()
    acks = [str(tmp_path / f"acks{i}") for i in range(4)]
    code = "import sys, test_shared_compiled as t; t.produce(sys.argv[1], int(sys.argv[2]), 150, sys.argv[3], 60)"
    env_base = {k: v for k, v in os.environ.items() if k != "WALOGS_PURE_PYTHON"}
    env_base["PYTHONPATH"] = os.pathsep.join([ROOT, HERE])
    children = []
    for i in range(4):
        env = dict(env_base, **({"WALOGS_PURE_PYTHON": "1"} if i % 2 else {}))
        children.append(subprocess.Popen([sys.executable, "-c", code, directory, str(i), acks[i]], cwd=ROOT, env=env,
                                         stderr=subprocess.PIPE, text=True))
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    expected, floor = _acknowledged(acks)
    assert len(expected) >= 4 * 150
    _check_log(directory, expected, floor)


def test_a_failed_sync_through_the_io_seam_poisons_every_handle_and_cuts_the_unsynced_entry(tmp_path, monkeypatch):
    directory = str(tmp_path / "log")
    a = Wal.open(directory, CONFIG, shared=True)
    b = Wal.open(directory, CONFIG, shared=True)
    try:
        assert a.append(b"one") == 1
        assert b.append(b"two") == 2
        failed = []

        def failing(fd: int) -> None:
            failed.append(fd)
            raise OSError(errno.EIO, "injected by the test")

        monkeypatch.setattr(_io, "fdatasync", failing)
        with pytest.raises(OSError) as caught:
            a.append(b"three")
        assert caught.value.errno == errno.EIO and failed
        monkeypatch.undo()
        for wal in (a, b):
            with pytest.raises(WalError, match="poisoned"):
                wal.append(b"four")
    finally:
        a.close()
        b.close()
    with Wal.open(directory, CONFIG) as wal:
        assert list(wal.iter()) == [(1, b"one"), (2, b"two")]
