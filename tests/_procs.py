"""Child processes for the suites: forking, reading pipes until a deadline, SIGKILL and reaping.

One home for what the process suites share, so each keeps to what it tests:

* ``fork_child`` / ``fork_with_pipe``: a forked child runs a body and always
  leaves through ``os._exit`` (never back into pytest); the parent gets its pid
  (and the read end of a pipe from it).
* ``send`` / ``send_error`` / ``take_records``: the 17-byte report records
  (kind, a, b) such children write, one ``os.write`` each (atomic below PIPE_BUF).
* ``read_ready``, ``read_into``, ``read_until``, ``read_exact``,
  ``read_to_eof``, ``read_all``: reading a pipe, bounded by a deadline.
* ``kill_all``, ``reap``, ``stop``, ``watched``: SIGKILL and reap forked children,
  stop a ``subprocess.Popen`` and close its pipes.
* ``ROOT``, ``run_python``, ``walogs_cmd``, ``run_walogs``: ``python -c CODE`` and
  ``python -m walogs`` subprocesses run from the directory walogs is imported
  from, with this process's environment (so WALOGS_PURE_PYTHON picks the
  implementation under test).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import walogs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(walogs.__file__)))
"""Where walogs is imported from (the source tree, or site-packages when testing the wheel)."""

CHUNK = 65536

# ---------------------------------------------------------------------- forking


def fork_child(body: Callable[[], object], on_error: Callable[[BaseException], object] | None = None) -> int:
    """Fork; the child runs ``body()`` and leaves with ``os._exit``: 0 if it returned, 3 if it raised.

    ``on_error(exc)`` runs in the child before it exits 3 (a failure there is ignored: the
    pipe it reports to may be gone; the exit code still says it). Returns the child's pid.
    """
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads (pytest-xdist has some);
        # these forks are deliberate and the children only run walogs and os calls.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - a child never returns into pytest
            code = 3
            if on_error is not None:
                try:
                    on_error(exc)
                except BaseException:  # noqa: BLE001, S110 - the exit code still says it
                    pass
        finally:
            os._exit(code)
    return pid


def fork_with_pipe(body: Callable[[int], object],
                   on_error: Callable[[int, BaseException], object] | None = None) -> tuple[int, int]:
    """``fork_child`` with a pipe to the parent: the child runs ``body(write_fd)``.

    Returns (pid, read end); each side closes the end it does not use.
    ``on_error(write_fd, exc)`` reports a failed body (``send_error`` does).
    """
    r, w = os.pipe()

    def child() -> None:
        os.close(r)
        body(w)

    pid = fork_child(child, None if on_error is None else lambda exc: on_error(w, exc))
    os.close(w)
    return pid, r


# ---------------------------------------------------------------------- report records

REC = struct.Struct("<cQQ")
"""kind, a, b: 17 bytes, one os.write each. Kind ``E`` is followed by ``a`` bytes of message."""


def send(fd: int, kind: bytes, a: int = 0, b: int = 0) -> None:
    os.write(fd, REC.pack(kind, a, b))


def send_error(fd: int, exc: BaseException) -> None:
    """Report ``exc`` as an ``E`` record (for ``fork_with_pipe``'s ``on_error``)."""
    msg = repr(exc).encode()[:400]
    os.write(fd, REC.pack(b"E", len(msg), 0) + msg)


def take_records(buf: bytearray) -> list[tuple[bytes, int, int, bytes]]:
    """Remove the whole records at the start of ``buf``: (kind, a, b, message); a partial one stays."""
    out = []
    while len(buf) >= REC.size:
        kind, a, b = REC.unpack_from(buf)
        extra = a if kind == b"E" else 0
        if len(buf) < REC.size + extra:
            break
        out.append((kind, a, b, bytes(buf[REC.size:REC.size + extra])))
        del buf[:REC.size + extra]
    return out


# ---------------------------------------------------------------------- reading pipes


def read_ready(fd: int, timeout: float, size: int = CHUNK) -> bytes | None:
    """Wait up to ``timeout`` s for ``fd`` to be readable, then read once: None if it never was, b"" at EOF."""
    if not select.select([fd], [], [], max(timeout, 0.0))[0]:
        return None
    return os.read(fd, size)


def read_into(fd: int, buf: bytearray, deadline: float,
              done: Callable[[bytearray], bool] = lambda buf: False) -> bool:
    """Read from ``fd`` into ``buf`` until ``done(buf)``; False at EOF or the deadline."""
    while not done(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        chunk = read_ready(fd, left)
        if not chunk:
            return False
        buf += chunk
    return True


def read_until(fd: int, buf: bytearray, size: int, deadline: float) -> bool:
    """Read into ``buf`` until it holds ``size`` bytes; False at EOF or the deadline."""
    return read_into(fd, buf, deadline, lambda b: len(b) >= size)


def read_to_eof(fd: int, buf: bytearray, deadline: float) -> None:
    """Read into ``buf`` until EOF or the deadline."""
    read_into(fd, buf, deadline)


def read_all(fd: int, deadline: float) -> bytes:
    """Everything ``fd`` gives until EOF or the deadline."""
    buf = bytearray()
    read_to_eof(fd, buf, deadline)
    return bytes(buf)


def read_exact(fd: int, size: int, deadline: float) -> bytes:
    """Read ``size`` bytes and no more (fewer at EOF or the deadline): what follows stays in the pipe."""
    buf = bytearray()
    while len(buf) < size:
        left = deadline - time.monotonic()
        chunk = read_ready(fd, left, size - len(buf)) if left > 0 else None
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


# ---------------------------------------------------------------------- ending processes


def kill_all(pids) -> None:
    """SIGKILL every forked child in ``pids`` and reap it (gone already: nothing to do)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def reap(pid: int, timeout: float = 10) -> int:
    """Wait for a forked child (bounded); SIGKILL it if it does not exit. Returns its wait status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGKILL a subprocess if it still runs, reap it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@contextlib.contextmanager
def watched(proc: subprocess.Popen, seconds: float = 60) -> Iterator[subprocess.Popen]:
    """Kill ``proc`` after ``seconds`` (a watchdog bounding blocking reads of its pipes); ``stop`` it at the end."""
    watchdog = threading.Timer(seconds, proc.kill)
    watchdog.start()
    try:
        yield proc
    finally:
        watchdog.cancel()
        stop(proc)


# ---------------------------------------------------------------------- subprocesses


def run_python(code: str, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -c CODE ARGS`` to its end; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)


def walogs_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "walogs", *map(str, args)]


def run_walogs(*args, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``python -m walogs ARGS`` for real; stdout and stderr as bytes."""
    return subprocess.run(walogs_cmd(*args), cwd=ROOT, env=dict(os.environ), capture_output=True, timeout=timeout)
