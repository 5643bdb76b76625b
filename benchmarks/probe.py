#!/usr/bin/env python3
"""Where the time goes: breakdowns behind the figures that run.py compares.

Usage::

    python3 benchmarks/probe.py [always] [none] [group] [batch] [iter] [--dir DIR]

Nothing here changes walogs. ``always`` and ``group`` read the writer's own
fdatasync count and time (``Wal._writer.syncs`` / ``sync_seconds``): wrapping
``walogs._io.fdatasync`` would switch the compiled writer to its test seam.
Numbers from a shared machine are noisy: read them as proportions, and
compare within one run.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import io
import os
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import walogs
from walogs import _codec, _io, _lock, _visible


def ns_per_call(stmt: str, env: dict, number: int = 100_000) -> float:
    """Best of 5 repeats, in ns per call."""
    return min(timeit.repeat(stmt, globals=env, number=number, repeat=5)) / number * 1e9


def top_profile(fn, lines: int = 12) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(lines)
    text = out.getvalue()
    return text[text.index("ncalls"):] if "ncalls" in text else text


# --------------------------------------------------------------------------- append sync="none"


class _MinimalWriter:
    """The least Python an append with walogs' duties can be: the lower bound for a pure-Python writer path."""

    def __init__(self, work: str) -> None:
        import mmap
        import struct
        import zlib
        self._fd = os.open(os.path.join(work, "sketch.log"), os.O_WRONLY | os.O_CREAT, 0o644)
        vfd = os.open(os.path.join(work, "sketch.visible"), os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(vfd, 32)
        self._map = mmap.mmap(vfd, 32)
        os.close(vfd)
        self._lock = threading.RLock()
        self._pack = struct.Struct("<IIQQ").pack
        self._crc = zlib.crc32
        self._closed = False
        self._poison = None
        self._lsn = 1
        self._end = 0

    def append(self, data: bytes, publish: bool = True) -> int:
        with self._lock:
            if self._closed or self._poison is not None:
                raise RuntimeError("closed")
            lsn = self._lsn
            frame = _codec.encode(lsn, data)
            n = os.pwrite(self._fd, frame, self._end)
            if n != len(frame):
                raise OSError("short write")
            self._end += n
            self._lsn = lsn + 1
            if publish:
                body = self._pack(2, 1, lsn, self._end)
                self._map[:32] = b"WLVE" + self._crc(body).to_bytes(4, "little") + body
        return lsn

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


def probe_none(work: str) -> None:
    print("== append sync=\"none\": cost of each step of Wal.append (ns per call, best of 5) ==")
    # One segment of any size: a full one would make the writer answer FULL without writing.
    wal = walogs.Wal.open(os.path.join(work, "none"), walogs.WalConfig(sync="none", max_segment_size=None))
    data = os.urandom(100)
    fd = os.open(os.path.join(work, "raw"), os.O_WRONLY | os.O_CREAT, 0o644)
    env = {"wal": wal, "data": data, "frame": os.urandom(116), "fd": fd, "os": os, "_codec": _codec,
           "_io": _io, "_visible": _visible, "_lock": _lock, "pub": wal._publisher, "writer": wal._writer}
    steps = [
        ("Wal.append (whole call)", "wal.append(data)"),
        (f"  the writer's append alone ({type(wal._writer).__module__})", "writer.append(data)"),
        ("os.write(fd, 116 B) (the baseline)", "os.write(fd, frame)"),
        ("os.pwrite(fd, 116 B, off)", "os.pwrite(fd, frame, 0)"),
        ("_codec.encode(lsn, data)", "_codec.encode(1, data)"),
        ("_codec.pack_visible into the mapping", "_codec.pack_visible(pub._map, 2, 1, 5, 100)"),
        ("wal._check_writable()", "wal._check_writable()"),
    ]
    results = {}
    for label, stmt in steps:
        results[label] = ns_per_call(stmt, env)
        print(f"  {results[label]:8.0f}  {label}")
    whole = results["Wal.append (whole call)"]
    alone = results[steps[1][0]]
    print(f"  -> append = the writer's {alone:.0f} (pwrite ~{results['os.pwrite(fd, 116 B, off)']:.0f}, encode and "
          f"publish inside it) + Wal.append's own {whole - alone:.0f} ns; "
          f"os.write alone {results['os.write(fd, 116 B) (the baseline)']:.0f} ns")
    # What a leaner Python append could reach: one function doing the same work (a sketch, not walogs).
    sketch = _MinimalWriter(work)
    env.update(sketch=sketch)
    lean = ns_per_call("sketch.append(data)", env)
    print(f"  a minimal one-function Python append (RLock, checks, encode, pwrite, 32-byte mmap publish): "
          f"{lean:.0f} ns -> {results['os.write(fd, 116 B) (the baseline)'] / lean:.2f}x of os.write; "
          f"without the per-append publish: {ns_per_call('sketch.append(data, False)', env):.0f} ns")
    sketch.close()
    append = wal.append
    print("  cProfile of 100k appends (profiler overhead inflates small functions):")

    def loop() -> None:
        for _ in range(100_000):
            append(data)
    print("    " + top_profile(loop).replace("\n", "\n    "))
    wal.close()
    os.close(fd)


# --------------------------------------------------------------------------- durable append


def probe_always(work: str, rounds: int = 6, seconds: float = 0.5) -> None:
    print("== durable append, 1 thread: fdatasync vs the rest (us per append; walogs and os.write+fdatasync "
          f"alternate in {seconds} s runs, as in run.py) ==")
    # The writer times its own fdatasync calls: wrapping _io.fdatasync would send the compiled
    # writer through its test seam (every system call from Python, with the GIL).
    rows = []
    wal = walogs.Wal.open(os.path.join(work, "always"))
    fd = os.open(os.path.join(work, "always-raw"), os.O_WRONLY | os.O_CREAT, 0o644)
    data, frame = os.urandom(100), os.urandom(116)
    for _ in range(rounds):
        syncs, busy = wal._writer.syncs, wal._writer.sync_seconds
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() < t0 + seconds:
            wal.append(data)
            n += 1
        w_op = (time.perf_counter() - t0) / n * 1e6
        w_sync = (wal._writer.sync_seconds - busy) / max(wal._writer.syncs - syncs, 1) * 1e6
        n, busy, t0 = 0, 0.0, time.perf_counter()
        while time.perf_counter() < t0 + seconds:
            os.write(fd, frame)
            t1 = time.perf_counter()
            os.fdatasync(fd)
            busy += time.perf_counter() - t1
            n += 1
        r_op, r_sync = (time.perf_counter() - t0) / n * 1e6, busy / n * 1e6
        rows.append((w_op, w_sync, r_op, r_sync))
        print(f"  walogs {w_op:6.1f} (fdatasync {w_sync:6.1f} + rest {w_op - w_sync:5.1f}) | "
              f"raw {r_op:6.1f} (fdatasync {r_sync:6.1f} + rest {r_op - r_sync:5.1f})  -> {r_op / w_op:.2f}x")
    wal.close()
    os.close(fd)
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"  -> medians: walogs spends {med[0] - med[1]:.1f} us per append outside fdatasync, the raw loop "
          f"{med[2] - med[3]:.1f} us; fdatasync {med[1]:.1f} vs {med[3]:.1f} us. 0.9x of the raw loop "
          f"allows walogs {med[2] / 0.9 - med[2]:.1f} us more per append than the raw loop")


# --------------------------------------------------------------------------- group commit


class _SketchGroupCommit:
    """The least Python a group commit can be (a sketch, not walogs): the floor walogs is compared with.

    One os.pwrite per append under a lock; the first thread to find no sync
    running leads one os.fdatasync for everything written before it; others
    wait on a lock of their own, woken once (walogs' scheme, without its
    checks, publishing, rotation or error handling).
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.mutex, self.state = threading.Lock(), threading.Lock()
        self.next_lsn, self.end, self.target, self.durable = 1, 0, 0, 0
        self.syncing, self.waiters = False, []

    def append(self, frame: bytes) -> int:
        with self.mutex:
            lsn = self.next_lsn
            os.pwrite(self.fd, frame, self.end)
            self.end += len(frame)
            self.next_lsn, self.target = lsn + 1, lsn
        while True:
            with self.state:
                if self.durable >= lsn:
                    return lsn
                if self.syncing:
                    waiter = threading.Lock()
                    waiter.acquire()
                    self.waiters.append((lsn, waiter))
                else:
                    self.syncing, waiter = True, None
            if waiter is not None:
                waiter.acquire()
                continue
            target = self.target
            os.fdatasync(self.fd)
            with self.state:
                self.syncing, self.durable = False, max(self.durable, target)
                still = []
                for w_lsn, w in self.waiters:
                    if w_lsn <= self.durable:
                        w.release()
                    else:
                        still.append((w_lsn, w))
                if still:
                    still.pop(0)[1].release()
                self.waiters = still

    def close(self) -> None:
        os.close(self.fd)


def _run_threads(append, arg, nthreads: int, seconds: float) -> tuple[int, float]:
    stop = time.perf_counter() + seconds
    counts = [0] * nthreads

    def worker(i: int) -> None:
        c = 0
        while time.perf_counter() < stop:
            append(arg)
            c += 1
        counts[i] = c

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - t0


def _handoff_rate(nthreads: int, seconds: float = 1.0) -> float:
    """Thread-to-thread wake-ups per second in this interpreter: a ring of threads passing one lock.

    Each hand-off is a lock release, a futex wake and the woken thread taking
    the GIL: the least a group commit pays per follower it wakes.
    """
    locks = [threading.Lock() for _ in range(nthreads)]
    for lock in locks:
        lock.acquire()
    passes, stop = [0], [False]

    def worker(i: int) -> None:
        mine, nxt = locks[i], locks[(i + 1) % nthreads]
        while True:
            mine.acquire()
            if stop[0]:
                nxt.release()
                return
            passes[0] += 1
            nxt.release()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    locks[0].release()
    time.sleep(seconds)
    stop[0] = True
    for t in threads:
        t.join()
    return passes[0] / (time.perf_counter() - t0)


def _c_wait_sketch(work: str, seconds: float, rounds: int) -> None:
    """Writes in Python, the group-commit wait (gathering leader, fdatasync) in C without the GIL.

    The smaller design for a compiled durable append: group_commit_ceiling.c's
    gc_wait_durable, called through ctypes (GIL released), after an os.pwrite
    under a Python lock and gc_mark_written (called with the GIL held: it only
    takes a mutex). Not walogs: a sketch to size that design.
    """
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        print("  (no C compiler: the C-wait sketch was not run)")
        return
    lib_path = os.path.join(work, "libgroup_commit_ceiling.so")
    subprocess.run([cc, "-O2", "-pthread", "-shared", "-fPIC", "-o", lib_path,
                    str(BENCH / "group_commit_ceiling.c")], check=True)
    released, held = ctypes.CDLL(lib_path, use_errno=True), ctypes.PyDLL(lib_path)
    released.gc_reset.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    released.gc_wait_durable.argtypes = [ctypes.c_long]
    released.gc_sync_calls.restype = ctypes.c_long
    held.gc_mark_written.argtypes = [ctypes.c_long]
    frame = os.urandom(116)
    for gather in (0, 1):
        rates: dict[int, list[float]] = {1: [], 8: []}
        per_sync: list[float] = []
        for rep in range(rounds):
            for nthreads in ((1, 8) if rep % 2 == 0 else (8, 1)):
                path = os.path.join(work, f"cwait-{gather}-{rep}-{nthreads}")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                released.gc_reset(fd, nthreads, gather)
                lock, state = threading.Lock(), {"next": 1, "end": 0}

                def append(_: object, fd: int = fd, lock=lock, state=state) -> None:
                    with lock:
                        lsn = state["next"]
                        os.pwrite(fd, frame, state["end"])
                        state["end"] += len(frame)
                        state["next"] = lsn + 1
                        held.gc_mark_written(lsn)
                    if released.gc_wait_durable(lsn) != 0:
                        raise OSError(ctypes.get_errno(), "fdatasync failed")

                total, elapsed = _run_threads(append, None, nthreads, seconds)
                os.close(fd)
                os.unlink(path)
                rates[nthreads].append(total / elapsed)
                if nthreads == 8:
                    per_sync.append(total / max(released.gc_sync_calls(), 1))
        one, eight = statistics.median(rates[1]), statistics.median(rates[8])
        print(f"  sketch, Python writes + C wait{' (gathering leader)' if gather else ''}: 1 thread {one:.0f}/s, "
              f"8 threads {eight:.0f}/s = {eight / one:.2f}x, {statistics.median(per_sync):.1f} appends per fdatasync")


def probe_group(work: str, seconds: float = 1.0, rounds: int = 6) -> None:
    print("== group commit: fdatasync calls and appends per sync (1 and 8 threads, alternated), "
          "and the minimal Python sketch beside it ==")
    data, frame = os.urandom(100), os.urandom(116)
    rates: dict[str, list[float]] = {"walogs 1": [], "walogs 8": [], "sketch 1": [], "sketch 8": []}
    # The writer counts its own syncs (wrapping _io would select the compiled writer's test seam).
    for rep in range(rounds):
        for nthreads in ((1, 8) if rep % 2 == 0 else (8, 1)):
            path = os.path.join(work, f"group-{rep}-{nthreads}")
            wal = walogs.Wal.open(path)
            total, elapsed = _run_threads(wal.append, data, nthreads, seconds)
            stats = {"n": wal._writer.syncs, "busy": wal._writer.sync_seconds}
            syncs = max(stats["n"], 1)
            rates[f"walogs {nthreads}"].append(total / elapsed)
            print(f"  walogs {nthreads} thread(s): {total / elapsed:7.0f} appends/s, {syncs / elapsed:6.0f} fdatasync/s, "
                  f"{total / syncs:4.2f} appends per fdatasync, fdatasync {stats['busy'] / syncs * 1e6:5.0f} us, "
                  f"disk busy {stats['busy'] / elapsed * 100:3.0f}% of the time, "
                  f"{(elapsed - stats['busy']) / syncs * 1e6:4.0f} us between syncs")
            wal.close()
            shutil.rmtree(path)
            sketch = _SketchGroupCommit(path + ".sketch")
            total, elapsed = _run_threads(sketch.append, frame, nthreads, seconds)
            sketch.close()
            os.unlink(path + ".sketch")
            rates[f"sketch {nthreads}"].append(total / elapsed)
            print(f"  sketch {nthreads} thread(s): {total / elapsed:7.0f} appends/s")
    med = {k: statistics.median(v) for k, v in rates.items()}
    _c_wait_sketch(work, seconds / 2, rounds)
    handoffs = statistics.median(_handoff_rate(8) for _ in range(3))
    print(f"  a ring of 8 Python threads passing a lock: {handoffs:.0f} hand-offs/s ({1e6 / handoffs:.0f} us each)")
    print(f"  medians: walogs 8 threads {med['walogs 8']:.0f}/s = {med['walogs 8'] / med['walogs 1']:.2f}x its 1 thread; "
          f"the minimal Python sketch {med['sketch 8']:.0f}/s = {med['sketch 8'] / med['sketch 1']:.2f}x its 1 thread "
          f"and {med['sketch 8'] / med['walogs 1']:.2f}x walogs' 1 thread")


# --------------------------------------------------------------------------- batch of 1000


def probe_batch(work: str) -> None:
    print("== append_batch(1000) vs SQLite transaction: CPU part and sync part (ms per batch, median of 30) ==")
    items = [os.urandom(100) for _ in range(1000)]
    rows = [(x,) for x in items]

    def wal_batch(sync: str) -> float:
        path = os.path.join(work, f"batch-{sync}-{time.perf_counter_ns()}")
        wal = walogs.Wal.open(path, walogs.WalConfig(sync=sync))
        times = []
        for _ in range(30):
            t = time.perf_counter()
            wal.append_batch(items)
            times.append(time.perf_counter() - t)
        wal.close()
        shutil.rmtree(path)
        return statistics.median(times) * 1e3

    def sqlite_batch(sync: str) -> float:
        path = os.path.join(work, f"sq-{sync}-{time.perf_counter_ns()}.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={sync}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        times = []
        for _ in range(30):
            t = time.perf_counter()
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t (data) VALUES (?)", rows)
            conn.execute("COMMIT")
            times.append(time.perf_counter() - t)
        conn.close()
        return statistics.median(times) * 1e3

    env = {"_codec": _codec, "items": items}
    enc = ns_per_call("_codec.encode_batch(1, items)", env, number=200) / 1e6
    for rnd in range(2):
        w_none, w_always = wal_batch("none"), wal_batch("always")
        s_off, s_full = sqlite_batch("OFF"), sqlite_batch("FULL")
        print(f"  round {rnd + 1}: walogs sync=none {w_none:.3f} ms (encode_batch alone {enc:.3f} ms), "
              f"sync=always {w_always:.3f} ms -> sync part {w_always - w_none:.3f} ms")
        print(f"           SQLite synchronous=OFF {s_off:.3f} ms, FULL {s_full:.3f} ms -> sync part {s_full - s_off:.3f} ms; "
              f"ratio FULL/always {s_full / w_always:.2f}x")


# --------------------------------------------------------------------------- iteration layers


_LAYERS = r'''
import json, os, sys, time
import walogs
from walogs import _segments
from walogs._codec import codec
path, entries = sys.argv[1], int(sys.argv[2])
names = sorted(n for n in os.listdir(path) if n.startswith("wal-"))
with open(os.path.join(path, names[0]), "rb") as f:
    chunk = bytearray(f.read(_segments.CHUNK))  # one warm chunk, as SegmentCursor reuses one
view = memoryview(chunk)
per_chunk = codec.scan(view, 0, 0)[1]
rounds = max(1, entries // per_chunk)
tuples = [(i, b"x" * 100) for i in range(per_chunk)]
def loop_only():
    c = 0
    for _ in range(rounds):
        for _lsn, _data in tuples:
            c += 1
    return c
def scan_only():
    c = 0
    for _ in range(rounds):
        c += codec.scan(view, 0, 0)[1]
    return c
def frame_reader():
    c = 0
    for _ in range(rounds):
        for _lsn, _data in codec.FrameReader(view, 0, 0, 0):
            c += 1
    return c
def _one_layer():
    for _ in range(rounds):
        yield from codec.FrameReader(view, 0, 0, 0)
def one_generator():
    c = 0
    for _lsn, _data in _one_layer():
        c += 1
    return c
def _readers():
    for _ in range(rounds):
        reader = codec.FrameReader(view, 0, 0, 0)
        yield reader
        # here a stream would check reader.status / reader.offset and pick the next chunk
def chained():
    import itertools
    c = 0
    for _lsn, _data in itertools.chain.from_iterable(_readers()):
        c += 1
    return c
def _three():
    yield from _two()
def _two():
    yield from _one_layer()
def three_generators():
    c = 0
    for _lsn, _data in _three():
        c += 1
    return c
def cursor():
    c = 0
    for seq, n in enumerate(names, 1):
        cur = _segments.SegmentCursor(path, seq, n, 0, 0)
        for _lsn, _data in cur.frames(None):
            c += 1
        cur.close()
    return c
def reader():
    c = 0
    for _lsn, _data in walogs.WalReader(path).iter():
        c += 1
    return c
out = {"implementation": walogs.IMPLEMENTATION}
for name, fn in (("for-loop over ready (lsn, bytes) tuples", loop_only),
                 ("codec.scan (validate only, no objects)", scan_only),
                 ("FrameReader over one warm 4 MiB buffer", frame_reader),
                 ("  + 1 generator (yield from FrameReader)", one_generator),
                 ("  + 3 nested generators", three_generators),
                 ("  chain.from_iterable(one FrameReader per chunk)", chained),
                 ("SegmentCursor.frames (preads + 1 generator)", cursor),
                 ("WalReader.iter (run/_available/frames)", reader)):
    best = None
    for _ in range(5):
        t = time.perf_counter(); c = fn(); dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    out[name] = [c, best / c * 1e9]
print(json.dumps(out))
'''


def probe_iter(work: str, entries: int = 1_000_000) -> None:
    import json
    print(f"== iteration of {entries:,} entries: ns per entry at each layer (best of 5, fresh process each) ==")
    path = os.path.join(work, "iter")
    pool = [os.urandom(100) for _ in range(10_000)]
    with walogs.Wal.open(path, walogs.WalConfig(sync="none")) as wal:
        for _ in range(entries // len(pool)):
            wal.append_batch(pool)
    db = os.path.join(work, "iter.db")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    conn.execute("BEGIN")
    for _ in range(entries // len(pool)):
        conn.executemany("INSERT INTO t (data) VALUES (?)", [(x,) for x in pool])
    conn.execute("COMMIT")
    conn.close()
    results = {}
    for pure in (False, True):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("WALOGS_PURE_PYTHON", None)
        if pure:
            env["WALOGS_PURE_PYTHON"] = "1"
        proc = subprocess.run([sys.executable, "-c", _LAYERS, path, str(entries)], env=env, capture_output=True, text=True,
                              check=True, cwd=ROOT)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results[res.pop("implementation")] = res
    conn = sqlite3.connect(db)
    best = None
    for _ in range(3):
        t = time.perf_counter()
        c = sum(1 for _ in conn.execute("SELECT id, data FROM t"))
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    conn.close()
    layers = list(results["cython"])
    print(f"  {'layer':45} {'cython':>8} {'python':>8}  (ns/entry)")
    for layer in layers:
        print(f"  {layer:45} {results['cython'][layer][1]:8.0f} {results['python'][layer][1]:8.0f}")
    print(f"  {'SQLite SELECT id, data (cursor iteration)':45} {best / c * 1e9:8.0f}")
    cy, py = results["cython"], results["python"]
    top, fr = "WalReader.iter (run/_available/frames)", "FrameReader over one warm 4 MiB buffer"
    print(f"  -> compiled/pure: FrameReader alone {py[fr][1] / cy[fr][1]:.1f}x, through WalReader.iter "
          f"{py[top][1] / cy[top][1]:.1f}x; compiled, the layers above FrameReader add "
          f"{cy[top][1] - cy[fr][1]:.0f} ns/entry (as much in both implementations); "
          f"SQLite / WalReader.iter = {best / c * 1e9 / cy[top][1]:.2f}x, SQLite / bare FrameReader = "
          f"{best / c * 1e9 / cy[fr][1]:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="*", help="always, none, group, batch, iter (default: all)")
    parser.add_argument("--dir", help="parent of the temporary work directory")
    args = parser.parse_args()
    probes = {"always": probe_always, "none": probe_none, "group": probe_group, "batch": probe_batch, "iter": probe_iter}
    args.what = args.what or list(probes)
    bad = [w for w in args.what if w not in probes]
    if bad:
        parser.error(f"unknown probe(s): {', '.join(bad)}")
    work = tempfile.mkdtemp(prefix="walogs-probe-", dir=args.dir)
    try:
        print(f"walogs {walogs.IMPLEMENTATION}, python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}")
        for what in args.what:
            probes[what](work)
            print()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
