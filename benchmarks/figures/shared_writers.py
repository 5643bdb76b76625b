"""shared_*: many producer processes appending durably to one log, against SQLite and a socket writer.

One set of rounds serves the four shared figures. For 4 and then 8
producer processes, each round runs the three ways one after another in a
rotating order, each for ``durable_seconds``, on fresh files of the same
filesystem; every producer appends one 100-byte entry per call, durably,
as fast as it can, and records each call's latency:

* walogs: every producer opens the log with ``Wal.open(..., shared=True)``
  (``sync="always"``) and calls ``append``;
* SQLite: every producer opens the same database (``journal_mode=WAL``,
  ``synchronous=FULL``, ``busy_timeout``) and inserts one row per
  autocommit transaction;
* socket writer: one writer process owns an exclusive ``Wal`` and a Unix
  socket; a thread per producer connection queues what it receives, and
  one thread appends everything queued with ``append_batch`` and replies
  with each entry's LSN (the 487-line service users used to copy, cut to
  its core). Producers send an entry and wait for the LSN.

Rates are entries/s over all producers; latency is over every call of
every producer; fairness is the fewest appends of a producer over the most.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import sqlite3
import struct
import threading
import time
from typing import Any, Callable

from harness import Bench, Figure, Row, Spec, log, median, percentile, si

from walogs import Wal, WalConfig

PROCESSES = (4, 8)
WAYS = ("walogs", "sqlite", "socket")
_LEN = struct.Struct("<I")
_LSN = struct.Struct("<Q")
_results: dict[int, dict] = {}  # id(bench) -> the rounds' results, measured once per run


def _producer(way: str, where: str, seconds: float, payload: bytes, ready: Any, go: Any, out: Any, me: int) -> None:
    """One producer process: open ``way``'s handle, wait for ``go``, append for ``seconds``."""
    close: Callable[[], None]
    if way == "walogs":
        wal = Wal.open(where, WalConfig(sync="always"), shared=True, lock_timeout=30)
        op: Callable[[bytes], object] = wal.append
        close = wal.close
    elif way == "sqlite":
        conn = sqlite3.connect(where, isolation_level=None, timeout=60)
        conn.execute("PRAGMA synchronous=FULL")
        insert = conn.execute

        def op(data: bytes) -> object:
            return insert("INSERT INTO t (data) VALUES (?)", (data,))
        close = conn.close
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(where)
        frame = _LEN.pack(len(payload)) + payload

        def op(data: bytes) -> object:
            sock.sendall(frame)
            return _recv_exact(sock, _LSN.size)
        close = sock.close
    ready.put(me)
    go.wait()
    latencies: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    stop = start + int(seconds * 1e9)
    now = start
    while now < stop:
        op(payload)
        after = clock()
        latencies.append(after - now)
        now = after
    elapsed = (now - start) / 1e9
    close()
    out.put((me, len(latencies), elapsed, latencies[:: max(1, len(latencies) // 4000)]))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the socket writer closed the connection")
        data += chunk
    return data


def _socket_writer(log_dir: str, sock_path: str, ready: Any) -> None:
    """The user-side writer process: one exclusive Wal, append_batch of whatever producers queued."""
    wal = Wal.open(log_dir, WalConfig(sync="always"))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(64)
    pending: list[tuple[socket.socket, bytes]] = []
    cond = threading.Condition()

    def serve(conn: socket.socket) -> None:
        try:
            while True:
                (size,) = _LEN.unpack(_recv_exact(conn, _LEN.size))
                data = _recv_exact(conn, size)
                with cond:
                    pending.append((conn, data))
                    cond.notify()
        except (ConnectionError, OSError):
            conn.close()

    def write() -> None:
        while True:
            with cond:
                while not pending:
                    cond.wait()
                batch = pending[:]
                pending.clear()
            lsns = wal.append_batch([data for _, data in batch])
            for (conn, _), lsn in zip(batch, lsns):
                try:
                    conn.sendall(_LSN.pack(lsn))
                except OSError:
                    pass

    threading.Thread(target=write, daemon=True).start()
    ready.put("writer")
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _round(b: Bench, way: str, processes: int) -> dict:
    """Run ``processes`` producers of ``way`` once; entries/s, latencies (ms) and per-producer counts."""
    ctx = multiprocessing.get_context("fork")
    base = b.fresh(f"shared-{way}-{processes}")
    helpers: list[Any] = []
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    if way == "walogs":
        where = base
    elif way == "sqlite":
        where = base + ".db"
        conn = sqlite3.connect(where, isolation_level=None)
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        conn.close()
    else:
        where = os.path.join(b.dir, f"writer-{processes}.sock")
        writer = ctx.Process(target=_socket_writer, args=(base, where, ready), daemon=True)
        writer.start()
        helpers.append(writer)
        ready.get(timeout=60)
    producers = [ctx.Process(target=_producer, args=(way, where, b.sizes.durable_seconds, b.payload, ready, go, out, i))
                 for i in range(processes)]
    try:
        for p in producers:
            p.start()
        for _ in producers:
            ready.get(timeout=60)
        go.set()
        results = [out.get(timeout=b.sizes.durable_seconds + 120) for _ in producers]
        for p in producers:
            p.join(timeout=60)
    finally:
        for p in producers + helpers:
            if p.is_alive():
                p.kill()
                p.join()
        for path in (base, base + ".db", base + ".db-wal", base + ".db-shm", where):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)
    counts = [n for _, n, _, _ in results]
    seconds = max(t for _, _, t, _ in results)
    lat = sorted(x / 1e6 for _, _, _, sample in results for x in sample)
    return {"rate": sum(counts) / seconds, "p50": percentile(lat, 50), "p99": percentile(lat, 99),
            "max": lat[-1], "fairness": min(counts) / max(counts), "counts": counts}


def _measure_all(b: Bench) -> dict:
    """Every way and process count, ``repeats`` rounds each, in rotating order; measured once per run."""
    if id(b) in _results:
        return _results[id(b)]
    rounds = max(3, b.sizes.repeats - 2)
    found: dict = {n: {way: [] for way in WAYS} for n in PROCESSES}
    for n in PROCESSES:
        for r in range(rounds):
            for way in WAYS[r % 3:] + WAYS[: r % 3]:
                res = _round(b, way, n)
                found[n][way].append(res)
                log(f"  shared {n} procs {way}: {si(res['rate'])}/s p99 {res['p99']:.2f} ms "
                    f"fairness {res['fairness']:.2f}")
    _results[id(b)] = found
    return found


def _rates(runs: list[dict]) -> list[float]:
    return [r["rate"] for r in runs]


def measure_vs_sqlite(b: Bench, spec: Spec) -> Figure:
    """Rows for 4 and 8 processes: walogs shared writers against SQLite (target on 4 processes)."""
    fig = Figure(spec)
    found = _measure_all(b)
    for n in PROCESSES:
        fig.add_ratio(f"{spec.name} {n} procs", _rates(found[n]["walogs"]), _rates(found[n]["sqlite"]),
                      key=f"{n}_procs", report_only=n != 4)
    return fig


def measure_vs_socket(b: Bench, spec: Spec) -> Figure:
    """Rows for 4 and 8 processes: walogs shared writers against a user-side socket writer."""
    fig = Figure(spec)
    found = _measure_all(b)
    for n in PROCESSES:
        fig.add_ratio(f"{spec.name} {n} procs", _rates(found[n]["walogs"]), _rates(found[n]["socket"]),
                      key=f"{n}_procs")
    return fig


def measure_latency(b: Bench, spec: Spec) -> Figure:
    """p50 and p99 append latency of walogs shared writers with 4 processes (the median round's)."""
    fig = Figure(spec)
    found = _measure_all(b)
    runs = found[4]["walogs"]
    fig.add_below("p50", median([r["p50"] for r in runs]), 3)
    fig.add_below("p99", median([r["p99"] for r in runs]), 3)
    for n in PROCESSES:
        for way in WAYS:
            rs = found[n][way]
            fig.notes.append(f"{n} procs {way}: p50 {median([r['p50'] for r in rs]):.3f} ms, "
                             f"p99 {median([r['p99'] for r in rs]):.3f} ms, max {max(r['max'] for r in rs):.1f} ms")
    fig.data = {str(n): {way: found[n][way] for way in WAYS} for n in PROCESSES}
    return fig


def measure_fairness(b: Bench, spec: Spec) -> Figure:
    """Fewest over most appends per producer, walogs shared writers (the worst round), 4 and 8 processes."""
    fig = Figure(spec)
    found = _measure_all(b)
    for n in PROCESSES:
        worst = min(r["fairness"] for r in found[n]["walogs"])
        fig.rows.append(Row(
            label=f"{spec.name} {n} procs", subject=f"{worst:.2f}", baseline="—", ratio=worst / 0.8,
            target=">= 0.8", target_ratio=1.0, met=worst >= 0.8, headroom=True,
        ))
        others = ", ".join(f"{way} {min(r['fairness'] for r in found[n][way]):.2f}" for way in WAYS[1:])
        fig.notes.append(f"{n} procs, worst round: walogs {worst:.2f}, {others}")
    fig.data = {str(n): [r["fairness"] for r in found[n]["walogs"]] for n in PROCESSES}
    return fig
