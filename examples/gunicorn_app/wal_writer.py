"""The one process that writes the events log, its supervisor, and the client the
web workers use to reach it.

    python wal_writer.py supervise --log-dir DIR --ready-fd N   # started by gunicorn.conf.py
    python wal_writer.py serve --log-dir DIR                     # the writer itself (by hand: debugging)

``serve`` owns the only ``walogs.Wal`` of the log directory (``sync="always"``)
and listens on a Unix domain socket next to it, ``<parent>/<name>.writer.sock``.
Each connection carries one event; the writer appends it and answers with its LSN
only after ``append`` returned, that is after the frame was fdatasync'd. Every
connection is served by its own thread, so concurrent events share one fdatasync
(walogs' group commit).

``supervise`` starts ``serve``, restarts it with a backoff if it dies (a crash, or
a poisoned log after an I/O error: the new writer runs recovery), and stops it
when gunicorn's master asks (SIGTERM) or disappears.

Wire protocol (one request per connection)::

    request:  u32 big-endian length, then that many bytes of event
    reply:    b"+" u64 big-endian LSN   appended and durable
              b"!" message             rejected, not appended (bad request)
              b"?" message             the append failed: it may or may not survive
                                        (the writer restarts and recovery decides)

This module imports only the standard library at the top, so the gunicorn master
can import it without loading walogs; ``serve`` imports walogs.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # never at run time: the gunicorn master imports this module without walogs
    import walogs

LENGTH = struct.Struct(">I")
LSN = struct.Struct(">Q")
OK, REJECTED, FAILED = b"+", b"!", b"?"
MAX_EVENT_SIZE = 16 * 1024 * 1024  # walogs.MAX_ENTRY_SIZE; the web app caps events lower
MAX_CONNECTIONS = 64               # in-flight appends; more wait in the listen backlog


def socket_path_for(log_dir: str) -> str:
    """The writer's socket: in the log directory's parent, never inside the log
    directory (that one belongs to walogs: segments, lock, visible end)."""
    log_dir = os.path.abspath(log_dir)
    return os.path.join(os.path.dirname(log_dir), os.path.basename(log_dir) + ".writer.sock")


def _log(role: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    sys.stderr.write(f"[{stamp}] [{os.getpid()}] [walogs-{role}] {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- client side


class WriterUnavailable(Exception):
    """No writer accepted the connection: nothing was sent, retrying is safe."""


class OutcomeUnknown(Exception):
    """The event was sent but no LSN came back: it may or may not be in the log."""


class EventRejected(Exception):
    """The writer refused the event (bad request): it is not in the log."""


def append_event(socket_path: str, data: bytes, *, connect_timeout: float = 5.0,
                 reply_timeout: float = 20.0) -> int:
    """Send one event to the writer; return its LSN once it is durable.

    Connecting is retried until ``connect_timeout`` (a writer being restarted
    comes back within that); once bytes were sent, nothing is retried here:
    a second send could append the event twice.
    """
    deadline = time.monotonic() + connect_timeout
    delay = 0.02
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.connect(socket_path)
            break
        except (FileNotFoundError, ConnectionRefusedError, BlockingIOError, socket.timeout) as exc:
            sock.close()
            if time.monotonic() + delay >= deadline:
                raise WriterUnavailable(f"no writer listening on {socket_path}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        except BaseException:
            sock.close()
            raise
    with sock:
        try:
            sock.settimeout(reply_timeout)
            sock.sendall(LENGTH.pack(len(data)))
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            reply = _recv_to_eof(sock, 64 * 1024)
        except OSError as exc:  # includes the timeout: the writer may still append it
            raise OutcomeUnknown(f"no reply from the writer: {exc}") from exc
    if reply[:1] == OK and len(reply) == 1 + LSN.size:
        lsn: int = LSN.unpack_from(reply, 1)[0]
        return lsn
    message = reply[1:].decode("utf-8", "replace")
    if reply[:1] == REJECTED:
        raise EventRejected(message)
    if reply[:1] == FAILED:
        raise OutcomeUnknown(f"the writer failed: {message}")
    raise OutcomeUnknown(f"unexpected reply from the writer: {reply[:40]!r}")


def _recv_to_eof(sock: socket.socket, limit: int) -> bytes:
    chunks, size = [], 0
    while size <= limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes, or None if the peer closed first."""
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(min(size - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# --------------------------------------------------------------------------- the writer


class _Stop:
    """Set by SIGTERM, or when the parent process is gone (its pid changed)."""

    def __init__(self) -> None:
        self.parent = os.getppid()
        self.requested = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: self.requested.set())
        # Ctrl-C in a terminal reaches the whole process group: let gunicorn's master
        # stop its workers first, then it stops us (on_exit), so in-flight events are answered.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __bool__(self) -> bool:
        return self.requested.is_set() or os.getppid() != self.parent


def serve(log_dir: str, ready_fd: int | None, lock_timeout: float) -> int:
    import walogs

    stop = _Stop()
    log_dir = os.path.abspath(log_dir)
    path = socket_path_for(log_dir)
    config = walogs.WalConfig(sync="always")

    # The writer lock makes us the only writer of this log, whatever else runs.
    # Wait a little for it: a previous writer may still be shutting down.
    deadline = time.monotonic() + lock_timeout
    while True:
        try:
            wal = walogs.Wal.open(log_dir, config, lock_timeout=min(0.5, lock_timeout))
            break
        except walogs.WalLockedError:
            if stop or time.monotonic() >= deadline:
                _log("writer", f"{log_dir}: the writer lock is held by another process; giving up")
                return 1
    try:
        if not wal.tail_state.clean:
            _log("writer", f"recovery cut a torn tail at byte {wal.tail_state.truncated_at}")
        # We hold the lock, so a socket file left at `path` is a dead writer's: replace it.
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ours = None
        try:
            listener.bind(path)
            listener.listen(128)
            ours = os.stat(path)
            _log("writer", f"log {log_dir} (walogs {walogs.__version__}, codec {walogs.IMPLEMENTATION}, "
                           f"next LSN {wal.next_lsn}); listening on {path}")
            if ready_fd is not None:
                os.write(ready_fd, b"R")
                os.close(ready_fd)
            failed = _accept_loop(listener, wal, stop)
        finally:
            listener.close()
            try:
                if ours is not None and os.stat(path).st_ino == ours.st_ino:
                    os.unlink(path)
            except FileNotFoundError:
                pass
    finally:
        wal.close()
    _log("writer", "stopped after an append failure; the supervisor restarts me" if failed else "stopped")
    return 1 if failed else 0


def _accept_loop(listener: socket.socket, wal: walogs.Wal, stop: _Stop) -> bool:
    """Serve until asked to stop; True if an append failed (the Wal is poisoned)."""
    failed = threading.Event()
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    threads: set[threading.Thread] = set()
    listener.settimeout(0.2)
    while not stop and not failed.is_set():
        if not slots.acquire(timeout=0.2):
            continue
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            slots.release()
            continue
        thread = threading.Thread(target=_handle, args=(conn, wal, failed, slots, threads), daemon=True)
        threads.add(thread)
        thread.start()
    # Stop accepting, answer what was already accepted, then the caller closes the Wal.
    deadline = time.monotonic() + 10.0
    for thread in threads.copy():
        thread.join(max(0.0, deadline - time.monotonic()))
    return failed.is_set()


def _handle(conn: socket.socket, wal: walogs.Wal, failed: threading.Event,
            slots: threading.BoundedSemaphore, threads: set[threading.Thread]) -> None:
    import walogs

    try:
        with conn:
            conn.settimeout(30.0)
            try:
                head = _recv_exact(conn, LENGTH.size)
                if head is None:
                    return
                (size,) = LENGTH.unpack(head)
                if size > MAX_EVENT_SIZE:
                    conn.sendall(REJECTED + f"event of {size} bytes exceeds {MAX_EVENT_SIZE}".encode())
                    return
                data = _recv_exact(conn, size)
            except OSError:
                return  # the client went away before the event was complete: nothing appended
            if data is None:
                return
            try:
                lsn = wal.append(data)
            except (walogs.EntryTooLargeError, TypeError) as exc:
                reply = REJECTED + str(exc).encode()
            except (OSError, walogs.WalError) as exc:
                # A failed sync poisons the Wal: stop, and let a fresh writer run recovery.
                failed.set()
                _log("writer", f"append failed: {exc!r}")
                reply = FAILED + repr(exc).encode()
            else:
                reply = OK + LSN.pack(lsn)
            try:
                conn.sendall(reply)
            except OSError:
                pass  # the client is gone (e.g. its worker was killed); the entry is durable anyway
    finally:
        threads.discard(threading.current_thread())
        slots.release()


# --------------------------------------------------------------------------- the supervisor


def supervise(log_dir: str, ready_fd: int | None, lock_timeout: float) -> int:
    """Run ``serve`` in a child process, restart it when it dies, stop it on SIGTERM.

    ``ready_fd`` gets b"R" once the first writer listens. If that first writer
    fails, we exit 1 and the gunicorn master refuses to start: better than
    serving POSTs that can never succeed.
    """
    stop = _Stop()
    backoff = 0.5
    while not stop:
        r, w = os.pipe()
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", "--log-dir", log_dir,
             "--ready-fd", str(w), "--lock-timeout", str(lock_timeout)],
            pass_fds=(w,),
        )
        os.close(w)
        started = time.monotonic()
        ready = False
        try:
            while child.poll() is None and not stop:
                if r >= 0 and select.select([r], [], [], 0.2)[0]:
                    ready = os.read(r, 1) == b"R" or ready
                    os.close(r)
                    r = -1
                    if ready and ready_fd is not None:
                        os.write(ready_fd, b"R")
                        os.close(ready_fd)
                        ready_fd = None
                elif r < 0:
                    try:
                        child.wait(0.2)
                    except subprocess.TimeoutExpired:
                        pass
        finally:
            if r >= 0:
                os.close(r)
            if child.poll() is None:  # we are stopping: let it answer in-flight events
                child.terminate()
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        if stop:
            break
        _log("supervisor", f"writer pid {child.pid} exited with status {child.returncode}")
        if ready_fd is not None:  # the first writer never came up
            return 1
        backoff = 0.5 if time.monotonic() - started > 30 else min(backoff * 2, 10.0)
        stop.requested.wait(backoff)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("supervise", "serve"))
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--lock-timeout", type=float, default=10.0,
                        help="seconds to wait for the writer lock (default 10)")
    args = parser.parse_args(argv)
    run = supervise if args.mode == "supervise" else serve
    return run(args.log_dir, args.ready_fd, args.lock_timeout)


if __name__ == "__main__":
    sys.exit(main())
