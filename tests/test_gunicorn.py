"""examples/gunicorn_app under real gunicorn: 4 sync workers, each its own shared
writer on one log, 300 events posted from 4 client threads while one worker is
SIGKILLed (gunicorn starts a new one, which opens its own writer).

Every acknowledged POST (it got an LSN) must be readable from every worker that
answers a GET, at that LSN, with its bytes, in LSN order, and afterwards from a
``WalReader`` and an exclusive ``Wal.open`` once the server is stopped; LSNs are
unique and contiguous; no event body appears twice (each attempt posts a unique
body, so a retried event may appear once per attempt that reached a worker,
never more). Run twice: workers that import the app after the fork, and
``--preload`` with a shared writer the master opened before forking, which the
workers must not use (they open their own).

Only 127.0.0.1. Bounded in count and time (a deadline per phase; a few seconds
typically); the server is always stopped (SIGTERM, then SIGKILL) and the test
checks that no process of it is left. gunicorn is a test requirement: without it
this FAILS.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from _procs import ROOT

import walogs

# Where the example lives (beside tests/, both in the source tree and when testing the wheel).
APP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "gunicorn_app")

WORKERS = 4
CLIENTS = 4
EVENTS = 300
KILL_AFTER = EVENTS // 2   # acknowledged events before one worker is SIGKILLed
MAX_ATTEMPTS = 5           # per event; every attempt has its own body
TEST_BUDGET = 40.0         # seconds for all phases; stopping the server takes at most ~18 more

# --preload with this module as the app: the master opens a shared writer before it forks
# (as code run at import might), and keeps it until it exits.
MASTER_OPENS = """\
import app as events

MASTER_WAL = events.wal()
app = events.app
"""


# ------------------------------------------------------------------ processes, via /proc


def _stat(pid: int):
    """(state, ppid, pgrp, starttime) of ``pid``, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # comm may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _identity(pid: int):
    st = _stat(pid)
    return None if st is None else (pid, st[3])


def _alive(ident) -> bool:
    """Running (not a zombie) and still the same process (same start time)."""
    st = _stat(ident[0])
    return st is not None and st[3] == ident[1] and st[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """Children of ``pid``: /proc/<pid>/task/*/children where the kernel has it, else a scan."""
    found, have_file = [], False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
            have_file = True
        except FileNotFoundError:
            pass
    return found if have_file else _living(lambda st: st[1] == pid)


def _open_files(pid: int) -> list[str]:
    """What ``pid``'s descriptors point at (paths, ``socket:[...]``, ...)."""
    targets = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return []
    for fd in fds:
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return targets


def _sockets(pid: int) -> int:
    """How many sockets ``pid`` has open. An idle sync worker has its listener; one
    in a request also has the client's connection."""
    return sum(target.startswith("socket:") for target in _open_files(pid))


def _living(match) -> list[int]:
    """Every process (not a zombie) whose ``_stat`` tuple ``match`` accepts: a scan of /proc."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and match(st) and st[0] not in ("Z", "X"):
                out.append(int(name))
    return out


def _group_members(pgrp: int) -> list[int]:
    return _living(lambda st: st[2] == pgrp)


def _free_port() -> int:
    # gunicorn cannot bind port 0: take a free port from the kernel and release it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the server


class Server:
    """A gunicorn master in its own session, with everything it starts recorded."""

    def __init__(self, tmp_path, port: int, preload: bool) -> None:
        self.port = port
        self.log_dir = str(tmp_path / "events")
        self.log_path = tmp_path / "gunicorn.log"
        self.seen: set[tuple[int, int]] = set()   # every process of this server we saw
        env = dict(os.environ, WALOGS_EVENTS_DIR=self.log_dir)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
        env.pop("WEB_CONCURRENCY", None)
        args = ["-b", f"127.0.0.1:{port}", "-w", str(WORKERS)]
        if preload:
            (tmp_path / "master_opens.py").write_text(MASTER_OPENS)
            args += ["--preload", "master_opens:app"]
        else:
            args += ["app:app"]
        if tuple(int(p) for p in importlib.metadata.version("gunicorn").split(".")[:2]) >= (25, 1):
            args.append("--no-control-socket")  # else every server of this user shares ~/.gunicorn's
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 -- open while gunicorn runs
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", os.path.join(APP_DIR, "gunicorn.conf.py"), *args],
                cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL,
                stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except BaseException:
            self._log_file.close()
            raise
        self.master = _identity(self.proc.pid) or (self.proc.pid, -1)
        self.seen.add(self.master)

    def log_tail(self, lines: int = 40) -> str:
        self._log_file.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n--- gunicorn output (tail) ---\n" + "\n".join(text[-lines:])

    def scan(self) -> list[int]:
        """The master's children (its workers), recording all of them."""
        workers = []
        for pid in _children(self.proc.pid):
            ident = _identity(pid)
            if ident is not None:
                self.seen.add(ident)
                workers.append(pid)
        return sorted(workers)

    def without_own_writer(self, pids: list[int], deadline: float) -> list[int]:
        """Which of the workers ``pids`` have not logged that they opened a shared writer of
        their own (post_worker_init) by the deadline. A worker counts as started when it is
        forked, and logs this a moment later."""
        while True:
            self._log_file.flush()
            text = self.log_path.read_text(errors="replace")
            missing = [pid for pid in pids
                       if f"[{pid}] [INFO] walogs {walogs.IMPLEMENTATION} shared writer open" not in text]
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.05)

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 5.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Connection": "close"})
            resp = conn.getresponse()
            payload = resp.read()
            pid = resp.getheader("X-Worker-Pid")
            return resp.status, payload, int(pid) if pid else None
        finally:
            conn.close()

    def wait_ready(self, deadline: float) -> None:
        last = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gunicorn exited with {self.proc.returncode}" + self.log_tail()
            try:
                status, _, _ = self.request("GET", "/events?since=1", timeout=2.0)
                if status == 200 and len(self.scan()) == WORKERS:
                    return
                last = status
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            time.sleep(0.1)
        pytest.fail(f"gunicorn did not answer in time (last: {last!r})" + self.log_tail())

    def stop(self) -> list[tuple[int, int]]:
        """SIGTERM the master (it stops the workers), SIGKILL whatever is left; return the
        processes still alive afterwards (should be none)."""
        try:
            self.scan()  # record the latest workers before the master goes
        except (OSError, ValueError):
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # What the master did not stop (it was killed, or hung) gets SIGTERM, then SIGKILL:
        # every process of this server we saw, and any other in its process group.
        pgrp = self.proc.pid
        others = {ident for ident in self.seen if ident != self.master}
        others |= {ident for ident in map(_identity, _group_members(pgrp)) if ident is not None}

        def wait_gone(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end and any(_alive(i) for i in others):
                time.sleep(0.05)

        wait_gone(2.0)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for ident in others:
                if _alive(ident):
                    try:
                        os.kill(ident[0], sig)
                    except ProcessLookupError:
                        pass
            wait_gone(3.0)
        self._log_file.close()
        leftover = {i for i in others if _alive(i)}
        leftover |= {i for i in map(_identity, _group_members(pgrp)) if i is not None and _alive(i)}
        return sorted(leftover)


# ------------------------------------------------------------------ checks


def _entries(items: list) -> list[tuple[int, bytes]]:
    """A GET /events answer as [(lsn, bytes)]."""
    return [(item["lsn"], item["data"].encode()) for item in items]


def _check_view(entries: list[tuple[int, bytes]], acked: dict, posted: set, where: str) -> None:
    """A view of the whole log: contiguous LSNs from 1, every acknowledged event at
    its LSN, nothing foreign, no body twice."""
    lsns = [lsn for lsn, _ in entries]
    assert lsns == list(range(1, len(lsns) + 1)), f"{where}: LSNs not contiguous from 1: {lsns[:20]}..."
    bodies = [data for _, data in entries]
    assert len(set(bodies)) == len(bodies), f"{where}: an event body appears twice"
    foreign = [b for b in bodies if b not in posted]
    assert not foreign, f"{where}: entries nobody posted: {foreign[:3]}"
    assert len(entries) >= max(acked.values()), f"{where}: ends at {len(entries)}, acked up to {max(acked.values())}"
    for body, lsn in acked.items():
        assert entries[lsn - 1][1] == body, f"{where}: LSN {lsn} is {entries[lsn - 1][1]!r}, acked {body!r}"


# ------------------------------------------------------------------ the phases


class Posting:
    """EVENTS events posted by CLIENTS threads, each up to MAX_ATTEMPTS times with a body of
    its own; every third acknowledged event is read back at once."""

    def __init__(self, server: Server, token: str, deadline: float) -> None:
        self.server, self.token, self.deadline = server, token, deadline
        self.lock = threading.Lock()
        self._next_event = iter(range(EVENTS))
        self.acked: dict[bytes, int] = {}        # body -> LSN
        self.unacked: dict[bytes, str] = {}      # body -> what happened (may or may not be in the log)
        self.posted: set[bytes] = set()
        self.errors: list[BaseException] = []
        self.read_backs: list[int] = []          # worker pids that served an immediate read-back
        self.threads = [threading.Thread(target=self._client, name=f"client-{n}") for n in range(CLIENTS)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self) -> None:
        for t in self.threads:
            t.join(max(1.0, self.deadline - time.monotonic() + 6))

    def _read_back(self, lsn: int, body: bytes) -> None:
        """An acknowledged event is visible at once, from whichever worker answers."""
        for _ in range(3):  # a GET is safe to repeat (its worker may be the one killed)
            try:
                status, payload, pid = self.server.request("GET", f"/events?since={lsn}&limit=1")
            except (OSError, http.client.HTTPException):
                continue
            assert status == 200, (status, payload[:300])
            assert _entries(json.loads(payload)) == [(lsn, body)], (lsn, body, payload[:300])
            with self.lock:
                self.read_backs.append(pid)
            return
        raise AssertionError(f"could not read LSN {lsn} back")

    def _client(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                with self.lock:
                    i = next(self._next_event, None)
                if i is None:
                    return
                for attempt in range(MAX_ATTEMPTS):
                    body = f"event {i:04d} attempt {attempt} run {self.token}".encode()
                    with self.lock:
                        self.posted.add(body)
                    try:
                        status, payload, _pid = self.server.request("POST", "/events", body)
                    except (OSError, http.client.HTTPException) as exc:
                        with self.lock:
                            self.unacked[body] = repr(exc)
                        continue
                    if status == 200:
                        lsn = json.loads(payload)["lsn"]
                        with self.lock:
                            self.acked[body] = lsn
                        if i % 3 == 0:
                            self._read_back(lsn, body)
                        break
                    with self.lock:
                        self.unacked[body] = f"HTTP {status} {payload[:200]!r}"
                    time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 -- reported by the main thread
            self.errors.append(exc)


def _kill_a_busy_worker(server: Server) -> int:
    """SIGKILL a worker in the middle of a request (listener + client sockets) if one can be
    caught there, else the busiest; returns its pid."""
    workers, busiest = server.scan(), (-1, None)
    catch_until = time.monotonic() + 1.0
    while time.monotonic() < catch_until and busiest[0] < 2:
        for pid in workers:
            busiest = max(busiest, (_sockets(pid), pid))
        time.sleep(0.0005)
    victim = busiest[1]
    os.kill(victim, signal.SIGKILL)
    return victim


def _post_killing_a_worker(server: Server, posting: Posting) -> int | None:
    """Run the posting; once KILL_AFTER events are acknowledged, SIGKILL one worker.
    Returns its pid (None if the posting never got that far)."""
    posting.start()
    victim = None
    try:
        while time.monotonic() < posting.deadline and posting.running():
            with posting.lock:
                n_acked = len(posting.acked)
            if n_acked >= KILL_AFTER:
                victim = _kill_a_busy_worker(server)
                break
            time.sleep(0.002)
    finally:
        posting.join()
    return victim


def _check_posting(server: Server, posting: Posting, victim: int | None) -> None:
    """Every event acknowledged once, at an LSN of its own; only the killed worker's request failed."""
    acked, unacked = posting.acked, posting.unacked
    assert not posting.running(), "clients still running after the deadline"
    assert not posting.errors, posting.errors
    assert victim is not None, f"only {len(acked)} events acknowledged before the deadline" + server.log_tail()
    assert len(acked) == EVENTS, \
        f"{EVENTS - len(acked)} events never acknowledged; failures: {list(unacked.values())[:5]}" + server.log_tail()
    assert len(set(acked.values())) == EVENTS, "two POSTs got the same LSN"
    # Only the killed worker's in-flight request may fail: the others go on appending.
    assert len(unacked) <= 1, f"{len(unacked)} failed POSTs: {unacked}" + server.log_tail()


def _wait_for_replacement(server: Server, initial_workers: list[int], victim: int,
                          deadline: float) -> tuple[list[int], int]:
    """gunicorn replaces the killed worker: returns the workers then, and the new one."""
    while True:
        workers = server.scan()
        fresh = set(workers) - set(initial_workers)
        if len(workers) == WORKERS and victim not in workers and fresh:
            return workers, fresh.pop()
        assert time.monotonic() < deadline, \
            f"killed worker {victim} not replaced: workers {workers}" + server.log_tail()
        time.sleep(0.05)


def _read_from_workers(server: Server, workers: list[int], deadline: float) -> dict[int, list]:
    """GET the whole log from 2 * WORKERS threads until each of ``workers`` answered (or the
    deadline): worker pid -> every answer it gave."""
    lock = threading.Lock()
    views: dict[int, list] = {}
    get_errors: list[BaseException] = []

    def getter() -> None:
        try:
            while time.monotonic() < deadline:
                with lock:
                    if set(workers) <= set(views):
                        return
                status, payload, pid = server.request("GET", "/events?since=1")
                assert status == 200, (status, payload[:300])
                with lock:
                    views.setdefault(pid, []).append(_entries(json.loads(payload)))
        except BaseException as exc:  # noqa: BLE001 -- reported by the main thread
            get_errors.append(exc)

    getters = [threading.Thread(target=getter, name=f"getter-{n}") for n in range(2 * WORKERS)]
    for t in getters:
        t.start()
    for t in getters:
        t.join(max(1.0, deadline - time.monotonic() + 6))
    assert not any(t.is_alive() for t in getters)
    assert not get_errors, get_errors
    return views


def _check_views(server: Server, views: dict[int, list], known_workers: set[int],
                 posting: Posting) -> tuple[list, list]:
    """At least 3 workers answered, each answer a right view of the log, all prefixes of the
    longest. Returns (every (pid, answer), the longest answer)."""
    answered = set(views)
    assert answered <= known_workers, f"answers from unknown pids {answered}"
    assert len(answered) >= 3, f"only workers {sorted(answered)} answered GET" + server.log_tail()
    every = [(pid, entries) for pid, answers in views.items() for entries in answers]
    for pid, entries in every:
        _check_view(entries, posting.acked, posting.posted, f"worker {pid}")
    longest = max((entries for _, entries in every), key=len)
    for pid, entries in every:
        assert entries == longest[:len(entries)], f"worker {pid} disagrees with another worker"
    return every, longest


def _check_stopped_server_and_log(server: Server, posting: Posting, longest: list) -> tuple[list, list]:
    """Stop the server: nothing left running; the log on disk, read by a WalReader and by
    an exclusive writer (no shared writer is left attached), says what the workers said.
    Returns (the log, unacknowledged bodies that landed in it)."""
    leftover = server.stop()
    assert not leftover, f"processes left running: {leftover}" + server.log_tail()
    assert server.proc.returncode == 0, f"gunicorn exited with {server.proc.returncode}" + server.log_tail()
    with walogs.WalReader(server.log_dir) as reader:
        on_disk = list(reader.iter())
    with walogs.Wal.open(server.log_dir, create=False) as wal:
        assert list(wal.iter()) == on_disk, "the exclusive writer's view differs from the reader's"
    assert on_disk[:len(longest)] == longest
    _check_view(on_disk, posting.acked, posting.posted, "the log on disk")
    landed_unacked = [body for body in posting.unacked if body in {data for _, data in on_disk}]
    assert len(on_disk) == EVENTS + len(landed_unacked)
    return on_disk, landed_unacked


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-import", "preload-master-opened"])
def test_events_survive_a_killed_worker(tmp_path, preload):
    if importlib.util.find_spec("gunicorn") is None:
        pytest.fail("gunicorn is not installed: install the test requirements "
                    "(pip install -r requirements-dev.txt, which lists gunicorn)")
    started = time.monotonic()
    budget_end = started + TEST_BUDGET
    server = Server(tmp_path, _free_port(), preload)
    try:
        server.wait_ready(min(budget_end, time.monotonic() + 15))
        initial_workers = server.scan()
        assert len(initial_workers) == WORKERS, initial_workers
        # Each worker opened a writer of its own, with the implementation under test.
        missing = server.without_own_writer(initial_workers, min(budget_end, time.monotonic() + 10))
        assert not missing, f"workers {missing} did not open their own writer" + server.log_tail()
        # With --preload the master holds a shared writer of its own the whole time.
        master_attached = os.path.join(server.log_dir, "WRITERS") in _open_files(server.proc.pid)
        assert master_attached == preload, "the master should hold a writer with --preload only"

        # Post EVENTS events from CLIENTS threads (bodies unique to this run); SIGKILL one worker midway.
        posting = Posting(server, os.urandom(4).hex(), min(budget_end, time.monotonic() + 20))
        victim = _post_killing_a_worker(server, posting)
        _check_posting(server, posting, victim)
        workers, restarted = _wait_for_replacement(server, initial_workers, victim,
                                                   min(budget_end, time.monotonic() + 10))
        # Read from the workers until >= 3 of them (ideally all, the new one too) answered.
        views = _read_from_workers(server, workers, min(budget_end, time.monotonic() + 8))
        every, longest = _check_views(server, views, set(initial_workers) | set(workers), posting)
        assert not server.without_own_writer([restarted], min(budget_end, time.monotonic() + 5)), \
            f"the replacement worker {restarted} did not open its own writer" + server.log_tail()
        on_disk, landed_unacked = _check_stopped_server_and_log(server, posting, longest)

        answered = set(views)
        print(f"\n[gunicorn {WORKERS} sync workers{', --preload' if preload else ''}, "
              f"codec {walogs.IMPLEMENTATION}] events {EVENTS}: posts {len(posting.posted)}, "
              f"acked {len(posting.acked)}, failed {len(posting.unacked)} (of which in the log: "
              f"{len(landed_unacked)}); {len(posting.read_backs)} read-backs right after the ack "
              f"from {len(set(posting.read_backs))} workers; killed worker {victim}, "
              f"replaced by {restarted}; {len(every)} GETs answered by {len(answered)} workers "
              f"{sorted(answered)} (restarted one {'seen' if restarted in answered else 'not seen'}); "
              f"log {len(on_disk)} entries, 0 lost, 0 duplicated; {time.monotonic() - started:.1f} s")
    finally:
        leftover = server.stop() if not server._log_file.closed else []
        assert not leftover, f"processes left running: {leftover}"
