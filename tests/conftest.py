"""Shared fixtures. The suite runs once per implementation (``make test`` runs
it with and without WALOGS_PURE_PYTHON=1); here we check that the one under
test is really the one asked for."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

import pytest
from _impls import CODECS, PURE
from vectors import frame as make_frame  # noqa: F401  (the tests import it from here)

import walogs
from walogs import _io

# make_frame(lsn, data): a frame built without walogs, from docs/format.md by hand (struct and
# zlib only). It is the one such builder, vectors.frame; it does not take the header layout from
# walogs._format on purpose: the frames it builds are what the codecs and _format are checked
# against, so a mistake there must not make the tests agree with it.


def pytest_report_header(config: pytest.Config) -> str:
    return f"walogs implementation: {walogs.IMPLEMENTATION}"


def pytest_sessionstart(session: pytest.Session) -> None:
    # Like aiokafka's conftest: a missing extension must not pass silently as "python".
    expected = "python" if PURE else "cython"
    if walogs.IMPLEMENTATION != expected:
        raise pytest.UsageError(
            f"walogs.IMPLEMENTATION is {walogs.IMPLEMENTATION!r}, expected {expected!r}: "
            "build the extension (make build) or set WALOGS_PURE_PYTHON=1"
        )
    writer = walogs._impl.SegmentWriter.__module__
    if writer != ("walogs._writer_py" if PURE else "walogs._writer"):
        raise pytest.UsageError(f"the {expected} suite would test the writer from {writer}: rebuild (make build)")


@pytest.fixture(scope="session", params=list(CODECS.values()), ids=list(CODECS))
def codec(request):
    """Each codec module in turn, ``walogs._frame_py`` (id ``py``) and ``walogs._frame`` (``c``),
    in one process (propcache's conftest); see tests/_impls.py."""
    return request.param


@pytest.fixture
def log_dir(tmp_path):
    """A path for a log directory that does not exist yet."""
    return tmp_path / "log"


def entry(i: int, size: int = 100) -> bytes:
    """Deterministic, distinct entry bytes for index ``i``."""
    head = b"%08d:" % i
    return (head * (size // len(head) + 1))[:size] if size >= len(head) else head[:size]


def write_calls_in_fork(wal: walogs.Wal) -> list[str]:
    """In a forked child of the writer, what each write call (append, append_batch, sync,
    rotate, checkpoint) did: "wrote", "refused" (a WalError naming the fork, P6) or "other"."""
    results = []
    for call in (lambda: wal.append(b"child"), lambda: wal.append_batch([b"child"]), wal.sync,
                 wal.rotate, lambda: wal.checkpoint(1)):
        try:
            call()
            results.append("wrote")
        except walogs.WalError as exc:
            results.append("refused" if "fork" in str(exc) else "other")
    return results


def settled(wal: walogs.Wal, timeout: float = 60.0) -> walogs.Wal:
    """Wait until ``wal``'s segment preparer (preallocate) has the next segment ready: from then
    on the directory changes only when ``wal`` is called. A hang guard, not a timing assert."""
    preparer = wal._preparer
    deadline = time.monotonic() + timeout
    while preparer is not None and not preparer.ready:
        assert time.monotonic() < deadline, "the next segment was never prepared"
        time.sleep(0.005)
    return wal


def snapshot(directory) -> dict[str, tuple[bytes, int, int]]:
    """Every file's bytes, size and mtime (ns), to prove a call changed nothing."""
    out = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        st = os.stat(path)
        with open(path, "rb") as f:
            out[name] = (f.read(), st.st_size, st.st_mtime_ns)
    return out


STRESS = os.environ.get("WALOGS_STRESS", "") not in ("", "0")
"""`make stress` sets WALOGS_STRESS=1: suites run their long versions."""


def scale(per_commit: int, stress: int) -> int:
    """A case count: the per-commit size under `make test`, the long one under `make stress`.

    WALOGS_STRESS may also be a number, multiplying the stress size.
    """
    if not STRESS:
        return per_commit
    factor = os.environ["WALOGS_STRESS"]
    return stress * (int(factor) if factor.isdigit() and int(factor) > 1 else 1)


def from_preparer() -> bool:
    """True when the segment preparer (walogs/_prealloc.py, preallocate) makes the current call.

    Its system calls are not the writer's: fault tests that count or hold the writer's
    syncs pass them through (its own faults: tests/test_prealloc.py).
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.endswith(os.path.join("walogs", "_prealloc.py")):
            return True
        frame = frame.f_back
    return False


class HeldSync:
    """Wraps ``_io.fdatasync`` so that its first call waits for :meth:`release` (up to 10 s).

    Holds a group-commit leader inside its sync while followers queue up behind it.
    Every call still makes the real fdatasync; ``monkeypatch.undo()`` removes the wrapper.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started, self._released = threading.Event(), threading.Event()
        real = _io.fdatasync

        def held(fd: int) -> None:
            if from_preparer():
                return real(fd)
            if not self.started.is_set():
                self.started.set()
                self._released.wait(10)
            real(fd)

        monkeypatch.setattr(_io, "fdatasync", held)

    def release(self) -> None:
        """Let the held sync (and every later one) run."""
        self._released.set()


def run_threads(threads: list[threading.Thread], timeout: float) -> None:
    """Start every thread, then join each for up to ``timeout`` s: none may still be running
    (make them daemons, so that a hang fails the test rather than blocking the run)."""
    for t in threads:
        t.start()
    join_all(threads, timeout)


def join_all(threads: list[threading.Thread], timeout: float) -> None:
    """Join each thread for up to ``timeout`` s; none may still be running."""
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads)


def queue_appends(wal: walogs.Wal, count: int, held: HeldSync) -> tuple[list[threading.Thread], dict[int, object]]:
    """Start ``count`` appending threads: the first leads the held sync, the rest wait behind it.

    Returns once all have written, with the threads (daemons: a hang fails a test rather
    than blocking the run) and a dict that will map each thread's index to its LSN or
    to the exception it raised.
    """
    results: dict[int, object] = {}
    first = wal.next_lsn

    def work(i: int) -> None:
        try:
            results[i] = wal.append(b"w%d" % i)
        except BaseException as exc:  # the test compares results
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(count)]
    threads[0].start()
    assert held.started.wait(10)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while wal.next_lsn < first + count and time.monotonic() < deadline:
        time.sleep(0.005)
    assert wal.next_lsn == first + count  # all written: one leads the held sync, the rest wait
    return threads, results


class Interrupted(Exception):
    """What :func:`interrupted_after` raises in the main thread, as a signal handler would."""


@contextlib.contextmanager
def interrupted_after(alarm: float, then_release: HeldSync, release_after: float):
    """A SIGALRM handler raises Interrupted in the main thread after ``alarm`` seconds,
    and another thread releases ``then_release`` after ``release_after`` seconds; both are
    undone on exit. For the tests of a wait broken by a signal handler."""

    def on_alarm(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    releaser = threading.Timer(release_after, then_release.release)
    releaser.start()
    try:
        signal.setitimer(signal.ITIMER_REAL, alarm)
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        releaser.join(10)

