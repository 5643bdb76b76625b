"""gunicorn configuration for the walogs events service (see README.md).

    gunicorn -c examples/gunicorn_app/gunicorn.conf.py app:app

Environment:
    WALOGS_EVENTS_DIR   the log directory (default: ./events-log, resolved at start)
    WALOGS_EVENTS_BIND  the address to listen on (default 127.0.0.1:8000; -b overrides)
    WEB_CONCURRENCY     number of sync workers (default 4; -w overrides)

The master starts the single writer (wal_writer.py, through its supervisor) in
``on_starting``, before any worker exists, and waits until it listens; it stops
it in ``on_exit``, after the workers are gone. Workers never open a ``walogs.Wal``:
they send events to the writer and read with their own ``walogs.WalReader``.
"""

import os
import select
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
LOG_DIR = os.path.abspath(os.environ.get("WALOGS_EVENTS_DIR", "events-log"))
os.environ["WALOGS_EVENTS_DIR"] = LOG_DIR  # absolute, for the workers and the writer

wsgi_app = "app:app"
pythonpath = HERE
bind = [os.environ.get("WALOGS_EVENTS_BIND", "127.0.0.1:8000")]
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "sync"
timeout = 30          # the writer answers within 20 s (wal_writer.append_event), or the POST fails
graceful_timeout = 10

# gunicorn >= 25.1 opens a control socket (for gunicornc), by default one per user in
# ~/.gunicorn: keep it next to the log instead so that two servers never share it.
# (Older gunicorn versions ignore this name.)
control_socket = os.path.join(os.path.dirname(LOG_DIR), os.path.basename(LOG_DIR) + ".gunicorn.ctl")

WRITER_START_TIMEOUT = 30.0  # recovery of a large log, or waiting for a previous writer's lock


# The hooks' `server` is gunicorn's Arbiter; gunicorn ships no type information, hence Any.
def on_starting(server: Any) -> None:
    """Start the writer supervisor and wait until its writer listens (master process)."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "wal_writer.py"), "supervise",
             "--log-dir", LOG_DIR, "--ready-fd", str(w)],
            pass_fds=(w,),
        )
    finally:
        os.close(w)
    # Kept on the arbiter, not in a global: a reload (SIGHUP) re-reads this file.
    server.walogs_writer = proc
    try:
        deadline = time.monotonic() + WRITER_START_TIMEOUT
        ready = b""
        while not ready and time.monotonic() < deadline:
            if select.select([r], [], [], 0.5)[0]:
                ready = os.read(r, 1) or b"EOF"
    finally:
        os.close(r)
    if ready != b"R":
        _stop_writer(server)
        raise RuntimeError(f"the walogs writer for {LOG_DIR} did not start "
                           f"({'it exited' if ready else 'timed out'}; see its messages above)")
    server.log.info("walogs writer ready (supervisor pid %s) for %s", proc.pid, LOG_DIR)


def on_exit(server: Any) -> None:
    """Workers are stopped by now: stop the writer (it answers in-flight events first)."""
    _stop_writer(server)


def _stop_writer(server: Any) -> None:
    proc = getattr(server, "walogs_writer", None)
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        server.log.warning("walogs writer supervisor pid %s did not stop; killing it", proc.pid)
        proc.kill()
        proc.wait(5)
