"""examples/worker_pool.py's job queue survives SIGKILL: no job lost, no result recorded twice.

Real processes, real files: each round runs ``worker_pool.py queue DIR JOBS``
(the parent and its spawned workers, in a session of their own) with more
jobs than the round before, SIGKILLs one random worker at a random instant
once it owns its cursor (it is working) and the parent around then (or, in
some rounds, at any instant from its start), waits until the other workers
have left by themselves (they leave when their parent dies; a hang guard,
not a timing assert), and checks that no job has two results. A last run
without kills must finish, and then, read here without the example's code,
every job 1..JOBS has exactly one result, the right one, in the results log
of the worker whose partition it is; the jobs log holds each job once and
every cursor is at the end. ``WALOGS_STRESS`` runs 200 rounds instead of 20.
With ``-s`` it prints the kill counts, among them how often a worker died
between recording a result and committing its cursor (the window the
restarted worker must skip).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time

from _procs import ROOT
from conftest import scale

import walogs

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "worker_pool.py")
WORKERS = 4  # worker_pool.WORKERS
ROUNDS = scale(20, 200)
STEP = 300  # new jobs per round: every round has work to be killed in


def _alive_in_group(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes of process group ``pgid``."""
    alive = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(name))
    return alive


def _kill_if_alive(pid: int) -> bool:
    """SIGKILL ``pid`` if it is a live process; True if it was."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        os.kill(pid, signal.SIGKILL)
    except (OSError, IndexError):
        return False
    return True


def _start(base: str, jobs: int, out: str) -> subprocess.Popen[bytes]:
    with open(out, "wb") as stdout, open(out + ".err", "wb") as stderr:
        return subprocess.Popen([sys.executable, EXAMPLE, "queue", base, str(jobs)], cwd=os.path.dirname(base),
                                env=dict(os.environ, PYTHONPATH=ROOT), stdout=stdout, stderr=stderr,
                                start_new_session=True)


def _tail(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-3000:]


def _worker_pids(out: str) -> list[int] | None:
    with open(out) as f:
        for line in f:
            if line.startswith("job queue in ") and " pids " in line:
                return [int(pid) for pid in line.split(" pids ")[1].split()]
    return None


def _recorded(base: str) -> tuple[collections.Counter[int], list[str]]:
    """How many results each job LSN has, across the workers' results logs, and what is wrong with any."""
    counts: collections.Counter[int] = collections.Counter()
    wrong = []
    for index in range(WORKERS):
        path = os.path.join(base, "results", f"worker-{index}")
        if not os.path.isdir(path):
            continue
        with walogs.WalReader(path) as results:
            for _, entry in results.iter():
                lsn, result = (int(part) for part in entry.split())
                if result != lsn * lsn or lsn % WORKERS != index:
                    wrong.append(f"worker-{index}: {entry!r}")
                counts[lsn] += 1
    return counts, wrong


def _owner(base: str, index: int) -> int:
    """The pid owning worker ``index``'s cursor (0: none, or not created yet)."""
    try:
        with walogs.WalReader(os.path.join(base, "jobs")) as log:
            position = log.cursors().get(f"worker-{index}")
    except FileNotFoundError:
        return 0
    return position.owner_pid or 0 if position is not None and position.owned else 0


def _recorded_not_committed(base: str) -> list[int]:
    """The workers whose last recorded result is past their cursor's position."""
    if not os.path.isdir(os.path.join(base, "jobs")):
        return []
    with walogs.WalReader(os.path.join(base, "jobs")) as log:
        positions = log.cursors()
    behind = []
    for index in range(WORKERS):
        path = os.path.join(base, "results", f"worker-{index}")
        if not os.path.isdir(path):
            continue
        with walogs.WalReader(path) as results:
            last = max((int(entry.split()[0]) for _, entry in results.iter()), default=0)
        if last > positions.get(f"worker-{index}", 0):
            behind.append(index)
    return behind


def test_job_queue_loses_no_job_and_records_none_twice_under_sigkill(tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    base = str(tmp_path / "queue")
    os.mkdir(base)
    kills: collections.Counter[str] = collections.Counter()
    for round_ in range(ROUNDS):
        jobs = STEP * (round_ + 1)
        out = str(tmp_path / f"round-{round_}.out")
        started = time.monotonic()
        proc = _start(base, jobs, out)
        try:
            # The worker dies at a random instant once it owns its cursor (working); the parent
            # mostly around then, else at any instant from its start (its workers' startup too).
            index = rng.randrange(WORKERS)
            parent_at = started + rng.uniform(0.0, 1.0) if rng.random() < 0.3 else None
            worker_at: float | None = None
            victim = 0
            while proc.poll() is None and (parent_at is None or time.monotonic() < parent_at):
                assert time.monotonic() < started + 60, (seed, round_, "the queue hangs")
                if not victim:
                    victim = (_worker_pids(out) or [0] * WORKERS)[index]
                elif worker_at is None and _owner(base, index) == victim:
                    worker_at = time.monotonic() + rng.uniform(0.0, 0.2)
                    if parent_at is None:
                        parent_at = worker_at + rng.uniform(-0.05, 0.2)
                elif worker_at is not None and time.monotonic() >= worker_at:
                    kills["worker"] += _kill_if_alive(victim)
                    worker_at = float("inf")
                time.sleep(0.003)
            if proc.poll() is None:
                proc.kill()
                kills["parent"] += 1
            else:
                assert proc.returncode == 0, (seed, round_, _tail(out + ".err"))
                kills["rounds the parent finished"] += 1
            proc.wait(timeout=30)
            # The other workers leave by themselves when their parent dies (a hang guard, not a timing assert).
            deadline = time.monotonic() + 30
            while _alive_in_group(proc.pid):
                assert time.monotonic() < deadline, (seed, round_, "workers outlived their parent",
                                                     _alive_in_group(proc.pid))
                time.sleep(0.01)
        finally:
            for pid in _alive_in_group(proc.pid):
                _kill_if_alive(pid)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        counts, wrong = _recorded(base)
        assert not wrong, (seed, round_, wrong[:5])
        if _recorded_not_committed(base):  # the window a restarted worker must skip
            kills["a worker killed between its result and its commit"] += 1
        assert max(counts.values(), default=1) == 1, (seed, round_, "recorded twice",
                                                      [lsn for lsn, n in counts.items() if n > 1][:10])
        if len(counts) < jobs and victim:
            kills["rounds killed with jobs left"] += 1

    # Restart everything, no kill: it finishes, and the example's own check passes.
    jobs = STEP * ROUNDS
    out = str(tmp_path / "final.out")
    proc = _start(base, jobs, out)
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    counts, wrong = _recorded(base)
    assert not wrong, (seed, wrong[:5])
    assert sorted(counts) == list(range(1, jobs + 1)), (seed, "jobs without a result",
                                                       sorted(set(range(1, jobs + 1)) - set(counts))[:10])
    assert set(counts.values()) == {1}, (seed, "recorded twice", [lsn for lsn, n in counts.items() if n > 1][:10])
    with walogs.WalReader(os.path.join(base, "jobs")) as log:
        assert log.durable_lsn == jobs, seed  # no job appended twice: job n is LSN n
        assert all(data == b"square %d" % lsn for lsn, data in log.iter()), seed
        assert {name: int(position) for name, position in log.cursors().items()} == {
            f"worker-{i}": jobs for i in range(WORKERS)}, seed
    assert proc.returncode == 0, (seed, _tail(out + ".err"))
    with open(out) as f:
        assert f"job queue: {jobs} jobs, each result recorded exactly once by {WORKERS} workers" in f.read()
    # The kills happened where they matter (printed with -s; asserted loosely, speed varies).
    print(f"job queue, seed {seed}: {ROUNDS} rounds, kills {dict(kills)}")
    assert kills["parent"] >= 1 and kills["rounds killed with jobs left"] >= 1, (seed, dict(kills))
