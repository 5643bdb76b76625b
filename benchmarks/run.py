#!/usr/bin/env python3
"""walogs benchmarks: every figure as a ratio against a baseline measured in the same run.

Usage::

    python3 benchmarks/run.py                 # everything (< 10 min on 2 cores)
    python3 benchmarks/run.py --quick         # small sizes, a smoke test (~1 min)
    python3 benchmarks/run.py --only append_always,batch_1000
    python3 benchmarks/run.py --list          # the figures and their targets

Machines are shared and noisy, so no figure is compared with a number from
another day: each subject is measured side by side with its baseline, the two
alternating (A B B A ...), and the medians of several repeats are compared.
Figures without a baseline (follow_latency, iter_rss) are compared with their
absolute target; their "ratio" is the headroom target / measured.

Prints a Markdown table, writes benchmarks/results.json and, when matplotlib
is importable, benchmarks/results.png. Works in a temporary directory (on
the filesystem of /tmp unless --dir says otherwise) and removes it.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import math
import os
import platform
import select
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import walogs
from walogs import Wal, WalConfig, WalReader, _io

ENTRY_SIZE = 100
FRAME_SIZE = ENTRY_SIZE + walogs.FRAME_HEADER_SIZE  # 116
MiB = 1 << 20
WORKER = BENCH / "_worker.py"


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    durable_seconds: float  # one timed run of a durable-append loop
    fast_seconds: float  # one timed run of a non-durable loop
    slice_seconds: float  # appends: baseline and subject alternate in slices this long
    repeats: int  # timed runs per side, alternated
    iter_entries: int  # entries in the reader_iter / compiled_iter / reader_scaling log
    scan_bytes: int  # size of the open_scan log
    rss_bytes: int  # size of the iter_rss log
    follow_samples: int
    follow_interval: float
    scaling_readers: tuple[int, ...]


FULL = Sizes(
    durable_seconds=2.0, fast_seconds=1.0, slice_seconds=0.1, repeats=5,
    iter_entries=1_000_000, scan_bytes=512 * MiB, rss_bytes=1024 * MiB,
    follow_samples=2000, follow_interval=0.002, scaling_readers=(1, 4, 8),
)
QUICK = Sizes(
    durable_seconds=0.3, fast_seconds=0.2, slice_seconds=0.05, repeats=3,
    iter_entries=100_000, scan_bytes=64 * MiB, rss_bytes=256 * MiB,
    follow_samples=300, follow_interval=0.002, scaling_readers=(1, 4, 8),
)


# --------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def si(value: float, digits: int = 3) -> str:
    """3 significant digits with a k/M/G suffix: 5.91k, 1.23M."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def alternate(repeats: int, baseline: Callable[[], float], subject: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Run baseline and subject ``repeats`` times each, alternating B S, S B, B S, ..."""
    base: list[float] = []
    subj: list[float] = []
    for i in range(repeats):
        order = ((base, baseline), (subj, subject)) if i % 2 == 0 else ((subj, subject), (base, baseline))
        for bucket, fn in order:
            bucket.append(fn())
    return base, subj


def timed_loop(op: Callable[[Any], Any], arg: Any, seconds: float, chunk: int = 1) -> tuple[int, float]:
    """Call ``op(arg)`` in chunks of ``chunk`` calls until ``seconds`` have passed: (calls, elapsed)."""
    clock = time.perf_counter
    calls = 0
    steps = range(chunk)
    t0 = clock()
    deadline = t0 + seconds
    while True:
        for _ in steps:
            op(arg)
        calls += chunk
        now = clock()
        if now >= deadline:
            return calls, now - t0


def worker_env(pure: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("WALOGS_PURE_PYTHON", None)
    if pure:
        env["WALOGS_PURE_PYTHON"] = "1"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def parse_result(stdout: str, what: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{what}: worker printed no RESULT line; stdout tail: {stdout[-500:]!r}")


def run_worker(task: str, args: dict, *, pure: bool = False, timeout: float = 300.0) -> dict:
    """Run one task of _worker.py in a fresh interpreter and return its RESULT."""
    proc = subprocess.run(
        [sys.executable, str(WORKER), task, json.dumps(args)],
        cwd=ROOT, env=worker_env(pure), capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {task} (pure={pure}) exited {proc.returncode}: {proc.stderr[-2000:]}")
    return parse_result(proc.stdout, f"worker {task}")


def spawn_worker(task: str, args: dict, *, pure: bool = False, stdin: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), task, json.dumps(args)],
        cwd=ROOT, env=worker_env(pure), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True, bufsize=1,
    )


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line of a worker's stdout, or RuntimeError after ``timeout`` seconds / at EOF."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"worker {proc.args[2]} said nothing for {timeout} s")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"worker {proc.args[2]} ended early: {err[-2000:]}")
    return line.strip()


def kill_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.startswith("wal-"))


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table (and one bar of the chart)."""

    label: str
    subject: str  # absolute measured value, formatted
    baseline: str  # absolute baseline value, formatted ("—" if none)
    ratio: float | None  # subject / baseline, or target / measured (headroom) without a baseline
    target: str  # e.g. ">= 0.9x", "< 1 ms", "report only"
    target_ratio: float | None  # the ratio that meets the target (None: report only)
    met: bool | None
    headroom: bool = False  # True: ratio is target / measured, not subject / baseline
    spread: tuple[float, float] | None = None  # min and max of the per-repeat paired ratios


@dataclass
class Figure:
    name: str
    description: str
    baseline_desc: str
    unit: str
    rows: list[Row] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def as_json(self) -> dict:
        return {
            "name": self.name, "description": self.description, "baseline": self.baseline_desc,
            "unit": self.unit, "seconds": round(self.seconds, 2), "error": self.error,
            "rows": [r.__dict__ for r in self.rows], "data": self.data, "notes": self.notes,
        }


def ratio_row(label: str, subj_runs: list[float], base_runs: list[float], unit: str,
              target: float | None, fmt: Callable[[float], str] = si) -> tuple[Row, dict]:
    """A row comparing medians, and the raw data for results.json."""
    s, b = median(subj_runs), median(base_runs)
    ratio = s / b if b else math.inf
    paired = [x / y for x, y in zip(subj_runs, base_runs) if y]
    row = Row(
        label=label, subject=f"{fmt(s)} {unit}", baseline=f"{fmt(b)} {unit}", ratio=ratio,
        target=f">= {target:g}x" if target is not None else "report only", target_ratio=target,
        met=(ratio >= target) if target is not None else None,
        spread=(min(paired), max(paired)) if paired else None,
    )
    data = {
        "unit": unit, "subject_runs": subj_runs, "baseline_runs": base_runs,
        "subject_median": s, "baseline_median": b, "ratio": ratio,
        "paired_ratios": paired, "paired_ratio_min": min(paired) if paired else None,
        "paired_ratio_max": max(paired) if paired else None,
    }
    return row, data


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, sizes: Sizes, workdir: str) -> None:
        self.sizes = sizes
        self.dir = workdir
        self._n = 0
        self._datasets: dict[str, Any] = {}
        rnd = os.urandom(ENTRY_SIZE * 10_000)
        # 10,000 distinct 100-byte payloads, reused batch after batch (content does not change speed).
        self.pool = [rnd[i * ENTRY_SIZE:(i + 1) * ENTRY_SIZE] for i in range(10_000)]
        self.payload = self.pool[0]
        self.frame = os.urandom(FRAME_SIZE)  # the baselines write frames of the same size

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return os.path.join(self.dir, f"{prefix}-{self._n}")

    # ---- data sets, built once per run on first use

    def log_with(self, entries: int) -> str:
        key = f"log-{entries}"
        if key not in self._datasets:
            path = os.path.join(self.dir, key)
            t0 = time.perf_counter()
            wal = Wal.open(path, WalConfig(sync="none"))  # default max_segment_size: 64 MiB
            try:
                left = entries
                while left:
                    k = min(left, len(self.pool))
                    wal.append_batch(self.pool[:k])
                    left -= k
                assert wal.next_lsn == entries + 1
            finally:
                wal.close()
            size = dir_bytes(path)
            log(f"  built {key}: {entries:,} entries, {size / MiB:.0f} MiB in {time.perf_counter() - t0:.1f} s")
            self._datasets[key] = path
        return self._datasets[key]

    def log_of_bytes(self, nbytes: int) -> tuple[str, int]:
        entries = -(-nbytes // FRAME_SIZE)
        return self.log_with(entries), entries

    def sqlite_with(self, entries: int) -> str:
        key = f"sqlite-{entries}"
        if key not in self._datasets:
            path = os.path.join(self.dir, key + ".db")
            t0 = time.perf_counter()
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=OFF")  # building only; reads do not depend on it
                conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
                conn.execute("BEGIN")
                left = entries
                while left:
                    k = min(left, len(self.pool))
                    conn.executemany("INSERT INTO t (data) VALUES (?)", [(x,) for x in self.pool[:k]])
                    left -= k
                conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            log(f"  built {key}: {os.path.getsize(path) / MiB:.0f} MiB in {time.perf_counter() - t0:.1f} s")
            self._datasets[key] = path
        return self._datasets[key]


# --------------------------------------------------------------------------- figures


@dataclass
class Side:
    """One side of an interleaved comparison: open a resource, run it for a slice, close it."""

    open: Callable[[], Any]
    run: Callable[[Any, float], tuple[int, float]]  # (state, seconds) -> (units done, seconds taken)
    close: Callable[[Any], None]


def interleaved(baseline: Side, subject: Side, seconds: float, slice_s: float) -> tuple[float, float]:
    """One repeat: both sides open at once, alternating short slices (B S S B ...) until each ran ``seconds``.

    Disk latency on a shared machine drifts within seconds; slices of ~0.1 s
    let both sides see the same conditions. Returns (baseline rate, subject rate).
    """
    states = {}
    totals = {"b": [0, 0.0], "s": [0, 0.0]}
    sides = {"b": baseline, "s": subject}
    try:
        for key, side in sides.items():
            states[key] = side.open()
        k = 0
        while totals["b"][1] < seconds or totals["s"][1] < seconds:
            for key in (("b", "s") if k % 2 == 0 else ("s", "b")):
                n, t = sides[key].run(states[key], slice_s)
                totals[key][0] += n
                totals[key][1] += t
            k += 1
    finally:
        for key, state in states.items():
            sides[key].close(state)
    return totals["b"][0] / totals["b"][1], totals["s"][0] / totals["s"][1]


def compare_interleaved(repeats: int, baseline: Side, subject: Side, seconds: float,
                        slice_s: float) -> tuple[list[float], list[float]]:
    """``repeats`` interleaved repeats, each with fresh files: (baseline rates, subject rates)."""
    base: list[float] = []
    subj: list[float] = []
    for _ in range(repeats):
        b_rate, s_rate = interleaved(baseline, subject, seconds, slice_s)
        base.append(b_rate)
        subj.append(s_rate)
    return base, subj


def wal_side(b: Bench, prefix: str, config: WalConfig, op: str, arg: Any, chunk: int = 1, per_call: int = 1) -> Side:
    """A Wal in a fresh directory; each slice calls ``wal.<op>(arg)`` in a loop."""

    def open_() -> dict:
        path = b.fresh(prefix)
        return {"path": path, "wal": Wal.open(path, config), "calls": 0}

    def run(state: dict, seconds: float) -> tuple[int, float]:
        n, t = timed_loop(getattr(state["wal"], op), arg, seconds, chunk)
        state["calls"] += n
        return n * per_call, t

    def close(state: dict) -> None:
        wal = state["wal"]
        try:
            # every call appended its entries: nothing was skipped or double counted
            assert wal.next_lsn == state["calls"] * per_call + 1, (wal.next_lsn, state["calls"])
        finally:
            wal.close()
            shutil.rmtree(state["path"])

    return Side(open_, run, close)


def raw_file_side(b: Bench, prefix: str, durable: bool) -> Side:
    """A fresh file on the same filesystem; each slice writes 116-byte frames (and fdatasyncs each)."""

    def open_() -> tuple[str, int]:
        path = b.fresh(prefix) + ".log"
        return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def run(state: tuple[str, int], seconds: float) -> tuple[int, float]:
        fd = state[1]
        if not durable:
            return timed_loop(partial(os.write, fd), b.frame, seconds, chunk=64)
        write, fdatasync = os.write, os.fdatasync

        def op(frame: bytes) -> None:
            write(fd, frame)
            fdatasync(fd)
        return timed_loop(op, b.frame, seconds)

    def close(state: tuple[str, int]) -> None:
        os.close(state[1])
        os.unlink(state[0])

    return Side(open_, run, close)


def fig_append_always(b: Bench) -> Figure:
    fig = Figure("append_always", "durable append (sync=\"always\"), 1 thread, 100-byte entries",
                 "os.write + os.fdatasync loop of 116-byte frames, same filesystem", "appends/s")
    s = b.sizes
    subject = wal_side(b, "append-always", WalConfig(sync="always"), "append", b.payload)
    baseline = raw_file_side(b, "raw-fdatasync", durable=True)
    interleaved(baseline, subject, s.slice_seconds * 2, s.slice_seconds)  # warm-up
    base, subj = compare_interleaved(s.repeats, baseline, subject, s.durable_seconds, s.slice_seconds)
    row, data = ratio_row("append_always", subj, base, "appends/s", 0.9)
    fig.rows.append(row)
    fig.data = data
    fig.notes.append(f"per durable append: walogs {1e6 / median(subj):.0f} us, "
                     f"os.write+fdatasync {1e6 / median(base):.0f} us")
    return fig


def threads_side(b: Bench, nthreads: int, tally: dict | None = None) -> Side:
    """A Wal (default config, sync="always"); each slice runs ``nthreads`` threads appending in a loop.

    With ``tally``, adds this side's appends, fdatasync calls and their wall time to it. They
    come from the writer's own counters: wrapping ``walogs._io.fdatasync`` would switch the
    compiled writer to its test seam (every system call through ``_io``, with the GIL).
    """

    def open_() -> tuple[str, Wal]:
        path = b.fresh(f"group-{nthreads}")
        return path, Wal.open(path)

    def run(state: tuple[str, Wal], seconds: float) -> tuple[int, float]:
        wal = state[1]
        counts = [0] * nthreads
        barrier = threading.Barrier(nthreads + 1)
        deadline = [0.0]

        def worker(i: int) -> None:
            append, clock, data = wal.append, time.perf_counter, b.payload
            barrier.wait()
            stop, c = deadline[0], 0
            while clock() < stop:
                append(data)
                c += 1
            counts[i] = c

        before = wal.next_lsn
        writer = wal._writer
        calls_before, seconds_before = writer.syncs, writer.sync_seconds
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
        for t in threads:
            t.start()
        deadline[0] = time.perf_counter() + seconds
        t0 = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        assert wal.next_lsn - before == sum(counts)
        if tally is not None:
            tally["appends"] += sum(counts)
            tally["syncs"] += writer.syncs - calls_before
            tally["sync_seconds"] += writer.sync_seconds - seconds_before
        return sum(counts), elapsed

    def close(state: tuple[str, Wal]) -> None:
        state[1].close()
        shutil.rmtree(state[0])

    return Side(open_, run, close)


def c_group_commit_ceiling(b: Bench, seconds: float, rounds: int, gather: bool) -> dict | str:
    """Build and run benchmarks/group_commit_ceiling.c (C, pthreads) on the bench filesystem.

    Returns its results, or why it could not run (no C compiler, a failed build).
    It runs after walogs' side, not interleaved with it: compare each side's
    ratio to its own single thread; the rates only roughly.
    """
    exe = os.path.join(b.dir, "group_commit_ceiling")
    if not os.path.exists(exe):
        cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if cc is None:
            return "no C compiler (cc, gcc)"
        built = subprocess.run([cc, "-O2", "-pthread", "-o", exe, str(BENCH / "group_commit_ceiling.c")],
                               capture_output=True, text=True)
        if built.returncode != 0:
            return f"{cc} could not build it: {built.stderr.strip()[:300]}"
    where = b.fresh("ceiling")
    os.makedirs(where)
    argv = [exe, where, str(seconds), str(min(rounds, 64))] + (["gather"] if gather else [])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"group_commit_ceiling exited {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def ctypes_group_commit(b: Bench, seconds: float, rounds: int) -> dict | str:
    """Python threads calling the C append of group_commit_ceiling.c through ctypes, gathering.

    ctypes releases the GIL for the whole call (write, wait, gather, fdatasync),
    so this is what Python threads reach when nothing of a durable append needs
    the GIL. Returns rates per round for 1 and 8 threads, or why it could not run.
    """
    lib_path = os.path.join(b.dir, "libgroup_commit_ceiling.so")
    if not os.path.exists(lib_path):
        cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if cc is None:
            return "no C compiler (cc, gcc)"
        built = subprocess.run([cc, "-O2", "-pthread", "-shared", "-fPIC", "-o", lib_path,
                                str(BENCH / "group_commit_ceiling.c")], capture_output=True, text=True)
        if built.returncode != 0:
            return f"{cc} could not build it: {built.stderr.strip()[:300]}"
    lib = ctypes.CDLL(lib_path, use_errno=True)
    lib.gc_reset.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.gc_append.restype = ctypes.c_int
    lib.gc_sync_calls.restype = ctypes.c_long
    result: dict = {"one_thread": [], "eight_threads": [], "appends_per_sync": []}
    for r in range(rounds):
        for nthreads in ((1, 8) if r % 2 == 0 else (8, 1)):
            path = b.fresh("ctypes") + ".log"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            lib.gc_reset(fd, nthreads, 1)
            counts, errors = [0] * nthreads, []
            deadline = time.perf_counter() + seconds

            def worker(i: int) -> None:
                append, clock, c = lib.gc_append, time.perf_counter, 0
                while clock() < deadline:
                    if append() != 0:
                        errors.append(ctypes.get_errno())
                        break
                    c += 1
                counts[i] = c

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            os.close(fd)
            os.unlink(path)
            if errors:
                raise OSError(errors[0], f"gc_append failed: {os.strerror(errors[0])}")
            total = sum(counts)
            result["one_thread" if nthreads == 1 else "eight_threads"].append(total / elapsed)
            if nthreads == 8:
                result["appends_per_sync"].append(total / max(lib.gc_sync_calls(), 1))
    return result


def fig_group_commit(b: Bench) -> Figure:
    fig = Figure("group_commit", "durable append, 8 threads, total throughput",
                 "same walogs, 1 thread", "appends/s")
    s = b.sizes
    tallies = {k: {"appends": 0, "syncs": 0, "sync_seconds": 0.0} for k in (1, 8)}
    subject, baseline = threads_side(b, 8, tallies[8]), threads_side(b, 1, tallies[1])
    interleaved(baseline, subject, s.slice_seconds * 2, s.slice_seconds)  # warm-up
    for tally in tallies.values():
        tally.update(appends=0, syncs=0, sync_seconds=0.0)
    base, subj = compare_interleaved(s.repeats, baseline, subject, s.durable_seconds, s.slice_seconds)
    row, data = ratio_row("group_commit", subj, base, "appends/s", 4.0)
    fig.rows.append(row)
    fig.data = data
    for k, tally in tallies.items():
        per_sync = tally["appends"] / max(tally["syncs"], 1)
        mean_us = 1e6 * tally["sync_seconds"] / max(tally["syncs"], 1)
        fig.data[f"{k}_thread_fdatasync"] = {**tally, "appends_per_sync": per_sync, "mean_sync_us": mean_us}
        fig.notes.append(f"walogs, {k} thread{'s' if k > 1 else ''}: {per_sync:.1f} appends per fdatasync, "
                         f"fdatasync {mean_us:.0f} us on average (wall time around the system call)")
    for gather in (False, True):
        ceiling = c_group_commit_ceiling(b, s.durable_seconds / 2, s.repeats, gather)
        if isinstance(ceiling, str):
            fig.notes.append(f"the C ceiling (group_commit_ceiling.c) was not measured: {ceiling}")
            return fig
        scheme = "C pthreads, leader gathers one frame per thread" if gather else "C pthreads, same scheme"
        c_row, c_data = ratio_row(scheme, ceiling["eight_threads"], ceiling["one_thread"], "appends/s", None)
        c_row.label = "group_commit C ceiling" + (", gather" if gather else "")
        fig.rows.append(c_row)
        fig.data["c_gather_ceiling" if gather else "c_ceiling"] = c_data | {
            "appends_per_sync": ceiling["appends_per_sync"]}
        fig.notes.append(
            f"{scheme} (benchmarks/group_commit_ceiling.c{' gather' if gather else ''}, no Python): "
            f"8 threads {si(median(ceiling['eight_threads']))} appends/s = {c_data['ratio']:.2f}x its 1 thread, "
            f"{median(ceiling['appends_per_sync']):.1f} appends per fdatasync; walogs with 8 threads "
            f"reaches {median(subj) / median(ceiling['eight_threads']):.0%} of that rate (measured after it, not interleaved)"
        )
    called = ctypes_group_commit(b, s.durable_seconds / 2, s.repeats)
    if isinstance(called, str):
        fig.notes.append(f"the C append from Python threads was not measured: {called}")
        return fig
    py_row, py_data = ratio_row("ctypes", called["eight_threads"], called["one_thread"], "appends/s", None)
    py_row.label = "group_commit C append via ctypes, gather"
    fig.rows.append(py_row)
    fig.data["ctypes_gather"] = py_data | {"appends_per_sync": called["appends_per_sync"]}
    fig.notes.append(
        f"Python threads calling that C append (gather) through ctypes, the GIL released for the whole "
        f"call: 8 threads {si(median(called['eight_threads']))} appends/s = {py_data['ratio']:.2f}x its 1 thread, "
        f"{median(called['appends_per_sync']):.1f} appends per fdatasync"
    )
    return fig


def sqlite_side(b: Bench, rows: list) -> Side:
    """SQLite, journal_mode=WAL, synchronous=FULL; each slice commits transactions of len(rows) inserts."""

    def open_() -> tuple[str, sqlite3.Connection]:
        path = b.fresh("sqlite-batch") + ".db"
        conn = sqlite3.connect(path, isolation_level=None)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        assert mode == "wal", mode
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        return path, conn

    def run(state: tuple[str, sqlite3.Connection], seconds: float) -> tuple[int, float]:
        execute, executemany = state[1].execute, state[1].executemany

        def op(batch: list) -> None:
            execute("BEGIN")
            executemany("INSERT INTO t (data) VALUES (?)", batch)
            execute("COMMIT")
        n, t = timed_loop(op, rows, seconds)
        return n * len(rows), t

    def close(state: tuple[str, sqlite3.Connection]) -> None:
        path, conn = state
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)

    return Side(open_, run, close)


def fig_batch_1000(b: Bench) -> Figure:
    fig = Figure("batch_1000", "append_batch of 1000 x 100 B, sync=\"always\"",
                 "SQLite journal_mode=WAL, synchronous=FULL: one transaction of 1000 inserts (executemany)",
                 "entries/s")
    s = b.sizes
    items = b.pool[:1000]
    subject = wal_side(b, "batch", WalConfig(sync="always"), "append_batch", items, per_call=len(items))
    baseline = sqlite_side(b, [(x,) for x in items])
    interleaved(baseline, subject, s.slice_seconds * 2, s.slice_seconds)  # warm-up
    base, subj = compare_interleaved(s.repeats, baseline, subject, s.durable_seconds, s.slice_seconds)
    row, data = ratio_row("batch_1000", subj, base, "entries/s", 4.0)
    fig.rows.append(row)
    fig.data = data
    fig.notes.append(f"per batch of 1000: walogs {1e3 * 1000 / median(subj):.2f} ms, "
                     f"SQLite transaction {1e3 * 1000 / median(base):.2f} ms")
    return fig


def _append_without_sync(b: Bench, sync: str, description: str, target: float | None, note: str = "") -> Figure:
    """An append figure whose appends do not wait for a sync: walogs against a bare os.write loop."""
    name = f"append_{sync}"
    fig = Figure(name, description, "bare os.write loop of 116-byte frames", "appends/s")
    s = b.sizes
    subject = wal_side(b, f"append-{sync}", WalConfig(sync=sync), "append", b.payload, chunk=64)
    baseline = raw_file_side(b, f"raw-write-{sync}", durable=False)
    interleaved(baseline, subject, s.slice_seconds * 2, s.slice_seconds)  # warm-up
    base, subj = compare_interleaved(s.repeats, baseline, subject, s.fast_seconds, s.slice_seconds)
    row, data = ratio_row(name, subj, base, "appends/s", target)
    fig.rows.append(row)
    fig.data = data
    fig.notes.append(f"per append: walogs {1e9 / median(subj):.0f} ns, os.write {1e9 / median(base):.0f} ns{note}")
    return fig


def fig_append_none(b: Bench) -> Figure:
    return _append_without_sync(b, "none", "append with sync=\"none\" (write only), 1 thread", 0.5)


def fig_append_interval(b: Bench) -> Figure:
    return _append_without_sync(
        b, "interval", "append with sync=\"interval\" (0.05 s background sync), 1 thread", None,
        " (walogs' background fdatasync every 0.05 s runs without the GIL, also during baseline slices)")


def fig_reader_iter(b: Bench) -> Figure:
    n = b.sizes.iter_entries
    fig = Figure("reader_iter", f"WalReader.iter of {n:,} entries (compiled codec, in process)",
                 f"SQLite SELECT id, data over the same {n:,} rows, cursor iteration", "entries/s")
    path = b.log_with(n)
    db = b.sqlite_with(n)

    def subject() -> float:
        count = 0
        t0 = time.perf_counter()
        reader = WalReader(path)
        for _lsn, _data in reader.iter():
            count += 1
        t = time.perf_counter() - t0
        reader.close()
        assert count == n, count
        return n / t

    def baseline() -> float:
        count = 0
        t0 = time.perf_counter()
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        for _id, _data in conn.execute("SELECT id, data FROM t"):
            count += 1
        t = time.perf_counter() - t0
        conn.close()
        assert count == n, count
        return n / t

    baseline(), subject()  # warm page cache and code paths
    base, subj = alternate(b.sizes.repeats, baseline, subject)
    row, data = ratio_row("reader_iter", subj, base, "entries/s", 3.5)
    fig.rows.append(row)
    fig.data = data
    fig.notes.append(f"per entry: walogs {1e9 / median(subj):.0f} ns, SQLite {1e9 / median(base):.0f} ns")
    return fig


def fig_compiled_iter(b: Bench) -> Figure:
    n = b.sizes.iter_entries
    fig = Figure("compiled_iter", f"compiled WalReader.iter of {n:,} entries (fresh process)",
                 "pure-Python fallback (WALOGS_PURE_PYTHON=1), same log, fresh process", "entries/s")
    path = b.log_with(n)
    impls: dict[str, set] = {"subject": set(), "baseline": set()}

    passes: dict[str, list] = {"subject": [], "baseline": []}

    def one(pure: bool) -> float:
        # Two passes per fresh process; the second (warm: buffers allocated, code paths hot) counts.
        res = run_worker("iter", {"path": path, "repeats": 2}, pure=pure)
        side = "baseline" if pure else "subject"
        impls[side].add(res["implementation"])
        passes[side].append(res["seconds"])
        assert res["count"] == n, res["count"]
        return n / res["seconds"][-1]

    base, subj = alternate(b.sizes.repeats, lambda: one(True), lambda: one(False))
    if impls["subject"] != {"cython"} or impls["baseline"] != {"python"}:
        raise RuntimeError(f"wrong implementations ran: {impls} (build the extension: make build)")
    row, data = ratio_row("compiled_iter", subj, base, "entries/s", 8.0)
    fig.rows.append(row)
    fig.data = dict(data, pass_seconds=passes)
    fig.notes.append(f"per entry: compiled {1e9 / median(subj):.0f} ns, pure Python {1e9 / median(base):.0f} ns")
    return fig


def fig_open_scan(b: Bench) -> Figure:
    path, entries = b.log_of_bytes(b.sizes.scan_bytes)
    size = dir_bytes(path)
    segs = sorted(n for n in os.listdir(path) if n.startswith("wal-"))
    fig = Figure("open_scan", f"Wal.open of a {size / MiB:.0f} MiB log ({len(segs)} segments, recovery scan), warm cache",
                 "read (readinto 4 MiB) + zlib.crc32 of the same files, warm cache", "MB/s")

    def subject() -> float:
        t0 = time.perf_counter()
        wal = Wal.open(path)
        t = time.perf_counter() - t0
        try:
            assert wal.next_lsn == entries + 1 and wal.tail_state.clean
        finally:
            wal.close()
        return size / t / 1e6

    def baseline() -> float:
        buf = bytearray(4 * MiB)
        view = memoryview(buf)
        crc32 = zlib.crc32
        total = 0
        t0 = time.perf_counter()
        for name in segs:
            crc = 0
            with open(os.path.join(path, name), "rb", buffering=0) as f:
                while True:
                    got = f.readinto(buf)
                    if not got:
                        break
                    crc = crc32(view[:got], crc)
                    total += got
        t = time.perf_counter() - t0
        assert total == size
        return size / t / 1e6

    baseline(), subject()  # both warm: nothing is dropped from the page cache
    base, subj = alternate(b.sizes.repeats, baseline, subject)
    row, data = ratio_row("open_scan", subj, base, "MB/s", 1.0)
    fig.rows.append(row)
    fig.data = dict(data, log_bytes=size, segments=len(segs), entries=entries)
    return fig


def fig_follow_latency(b: Bench) -> Figure:
    samples, interval = b.sizes.follow_samples, b.sizes.follow_interval
    fig = Figure("follow_latency",
                 f"writer append return -> reader-process yield via WalReader.follow, sync=\"always\", "
                 f"{samples} samples {interval * 1e3:g} ms apart",
                 "—", "ms")
    path = b.fresh("follow")
    wal = Wal.open(path)  # default config: sync="always"
    procs: list[subprocess.Popen] = []
    clock = time.perf_counter_ns
    returned: dict[int, int] = {}
    append_ns: list[int] = []
    try:
        wal.append(b"warm-up")
        proc = spawn_worker("follow", {"path": path, "stop": "STOP", "timeout": 60})
        procs.append(proc)
        line = read_line(proc, 60)
        if line != "READY":
            raise RuntimeError(f"follow worker said {line!r}")
        data = b.payload
        start = time.perf_counter()
        for i in range(samples):
            wait = start + (i + 1) * interval - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            t_call = clock()
            lsn = wal.append(data)
            t_ret = clock()
            returned[lsn] = t_ret
            append_ns.append(t_ret - t_call)
        wal.append(b"STOP")
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"follow worker exited {proc.returncode}: {err[-2000:]}")
        res = parse_result(out, "follow worker")
    finally:
        kill_all(procs)
        wal.close()
        shutil.rmtree(path, ignore_errors=True)
    seen = dict(zip(res["lsns"], res["t_ns"]))
    missing = set(returned) - set(seen)
    if missing:
        raise RuntimeError(f"the follower never yielded {len(missing)} of {len(returned)} entries")
    lat = sorted((seen[lsn] - t) / 1e6 for lsn, t in returned.items())  # ms
    p50, p90, p99, p999 = (percentile(lat, p) for p in (50, 90, 99, 99.9))
    appends = sorted(x / 1e6 for x in append_ns)
    fig.data = {
        "samples": len(lat), "interval_ms": interval * 1e3, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
        "p999_ms": p999, "min_ms": lat[0], "max_ms": lat[-1], "mean_ms": statistics.fmean(lat),
        "negative": sum(1 for x in lat if x < 0), "append_p50_ms": percentile(appends, 50),
        "append_p99_ms": percentile(appends, 99), "reader_implementation": res["implementation"],
    }
    for label, value, limit in (("follow_latency p50", p50, 1.0), ("follow_latency p99", p99, 10.0)):
        fig.rows.append(Row(
            label=label, subject=f"{value:.3f} ms", baseline="—", ratio=limit / value if value > 0 else math.inf,
            target=f"< {limit:g} ms", target_ratio=1.0, met=value < limit, headroom=True,
        ))
    fig.notes.append(f"latency min {lat[0]:.3f} ms, p90 {p90:.3f} ms, p99.9 {p999:.3f} ms, max {lat[-1]:.3f} ms; "
                     f"append itself (fdatasync) p50 {percentile(appends, 50):.3f} ms, "
                     f"p99 {percentile(appends, 99):.3f} ms")
    if fig.data["negative"]:
        fig.notes.append(f"{fig.data['negative']} samples were yielded before append() returned "
                         "(the end is published before the writer wakes up)")
    return fig


def fig_iter_rss(b: Bench) -> Figure:
    path, entries = b.log_of_bytes(b.sizes.rss_bytes)
    size = dir_bytes(path)
    fig = Figure("iter_rss", f"peak RSS growth while WalReader.iter reads a {size / MiB:.0f} MiB log "
                 "(fresh process, getrusage maxrss minus VmRSS after import)", "—", "MiB")
    res = run_worker("rss", {"path": path}, timeout=600)
    if res["count"] != entries:
        raise RuntimeError(f"iterated {res['count']} entries, expected {entries}")
    growth = (res["maxrss_peak_kib"] - res["rss_after_import_kib"]) / 1024
    fig.data = dict(res, log_bytes=size, growth_mib=growth, entries_per_s=entries / res["seconds"])
    fig.rows.append(Row(
        label="iter_rss", subject=f"{growth:.1f} MiB", baseline="—", ratio=64.0 / growth if growth > 0 else math.inf,
        target="< 64 MiB", target_ratio=1.0, met=growth < 64.0, headroom=True,
    ))
    fig.notes.append(f"RSS after import {res['rss_after_import_kib'] / 1024:.1f} MiB, peak "
                     f"{res['maxrss_peak_kib'] / 1024:.1f} MiB; read {entries:,} entries at "
                     f"{si(entries / res['seconds'])} entries/s ({res['implementation']})")
    return fig


def _scaling_round(path: str, nreaders: int, entries: int) -> float:
    procs = [spawn_worker("scale", {"path": path}, stdin=True) for _ in range(nreaders)]
    try:
        for proc in procs:
            line = read_line(proc, 60)
            if line != "READY":
                raise RuntimeError(f"scale worker said {line!r}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"scale worker exited {proc.returncode}: {err[-2000:]}")
            results.append(parse_result(out, "scale worker"))
    finally:
        kill_all(procs)
    for res in results:
        assert res["count"] == entries, res["count"]
    wall = (max(r["t1_ns"] for r in results) - min(r["t0_ns"] for r in results)) / 1e9
    return nreaders * entries / wall


def fig_reader_scaling(b: Bench) -> Figure:
    n = b.sizes.iter_entries
    counts = b.sizes.scaling_readers
    fig = Figure("reader_scaling", f"total entries/s of N concurrent reader processes iterating the same "
                 f"{n:,}-entry log", "1 reader process", "entries/s")
    path = b.log_with(n)
    runs: dict[int, list[float]] = {k: [] for k in counts}
    _scaling_round(path, 1, n)  # warm-up
    for i in range(b.sizes.repeats):
        for k in (counts if i % 2 == 0 else tuple(reversed(counts))):
            runs[k].append(_scaling_round(path, k, n))
    base = runs[counts[0]]
    fig.data = {"runs": {str(k): v for k, v in runs.items()}, "cpus": len(os.sched_getaffinity(0))}
    for k in counts[1:]:
        row, data = ratio_row(f"reader_scaling {k} readers", runs[k], base, "entries/s", None)
        fig.rows.append(row)
        fig.data[f"{k}_readers"] = data
    fig.notes.append(f"1 reader: {si(median(base))} entries/s; {len(os.sched_getaffinity(0))} CPUs "
                     "available, so more than 2x is not possible here")
    return fig


FIGURES: dict[str, tuple[Callable[[Bench], Figure], str]] = {
    "append_always": (fig_append_always, ">= 0.9x os.write+fdatasync"),
    "group_commit": (fig_group_commit, ">= 4x 1 thread"),
    "batch_1000": (fig_batch_1000, ">= 4x SQLite WAL/FULL transaction"),
    "append_none": (fig_append_none, ">= 0.5x bare os.write"),
    "append_interval": (fig_append_interval, "report only"),
    "reader_iter": (fig_reader_iter, ">= 3.5x SQLite SELECT"),
    "compiled_iter": (fig_compiled_iter, ">= 8x pure-Python fallback"),
    "open_scan": (fig_open_scan, ">= 1.0x read + zlib.crc32"),
    "follow_latency": (fig_follow_latency, "p50 < 1 ms, p99 < 10 ms"),
    "iter_rss": (fig_iter_rss, "< 64 MiB"),
    "reader_scaling": (fig_reader_scaling, "report only"),
}


# --------------------------------------------------------------------------- machine info


def fs_type(path: str) -> dict:
    real = os.path.realpath(path)
    best = ("", "?", "?")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                    best = (mnt, parts[2], parts[0])
    except OSError:
        pass
    try:
        stat_f = subprocess.run(["stat", "-f", "-c", "%T", real], capture_output=True, text=True, timeout=10,
                                check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        stat_f = "?"
    return {"mount_point": best[0], "type": best[1], "device": best[2], "stat_f": stat_f}


def machine_info(workdir: str) -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, timeout=10, check=False).stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        nproc = len(os.sched_getaffinity(0))
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
            mem = f"{kib / MiB:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": nproc, "cpu_count": os.cpu_count(), "cpu": cpu, "memory": mem,
        "kernel": platform.release(), "python": platform.python_version(),
        "python_impl": platform.python_implementation(), "executable": sys.executable,
        "walogs_version": walogs.__version__, "walogs_implementation": walogs.IMPLEMENTATION,
        "crc_backend": getattr(getattr(walogs._codec, "codec", None), "_CRC_BACKEND", "n/a (pure Python: zlib)"),
        "sqlite": sqlite3.sqlite_version, "git_commit": commit, "bench_dir": workdir,
        "filesystem": fs_type(workdir), "loadavg_start": os.getloadavg(),
    }


# --------------------------------------------------------------------------- output


def fmt_ratio(row: Row) -> str:
    if row.ratio is None:
        return "—"
    text = f"{row.ratio:.2f}x"
    if row.headroom:
        return f"({text} headroom)"
    if row.spread:
        text += f" [{row.spread[0]:.2f}–{row.spread[1]:.2f}]"
    return text


def fmt_met(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**NO**")


def table(figures: list[Figure]) -> str:
    lines = ["| figure | walogs | baseline | ratio [min–max of repeats] | target | met |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for fig in figures:
        if fig.error:
            lines.append(f"| {fig.name} | error | | | {FIGURES[fig.name][1]} | **ERROR** |")
            continue
        for row in fig.rows:
            lines.append(f"| {row.label} | {row.subject} | {row.baseline} | {fmt_ratio(row)} | {row.target} | {fmt_met(row.met)} |")
    return "\n".join(lines)


def draw(figures: list[Figure], png: Path, info: dict, quick: bool) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable: skipped the PNG (pip install matplotlib to get it)"
    rows = [r for f in figures if not f.error for r in f.rows if r.ratio is not None and math.isfinite(r.ratio)]
    if not rows:
        return "nothing to draw"
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(rows) + 2), 5.5))
    xs = range(len(rows))
    colors = ["#9e9e9e" if r.met is None else ("#2e7d32" if r.met else "#c62828") for r in rows]
    ax.bar(xs, [r.ratio for r in rows], color=colors, width=0.6)
    for x, r in zip(xs, rows):
        if r.target_ratio is not None:
            ax.hlines(r.target_ratio, x - 0.4, x + 0.4, colors="black", linestyles="--", linewidth=1.5)
        ax.annotate(f"{r.ratio:.2f}x", (x, r.ratio), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x" if f"{v:g}"[0] in "25" else ""))
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r.label.replace(" ", "\n", 1) + ("\n(headroom)" if r.headroom else "") for r in rows],
                       fontsize=8)
    ax.set_ylabel("ratio vs baseline (headroom = target / measured)")
    ax.set_title(f"walogs benchmarks{' (--quick)' if quick else ''}: {info['date']}, "
                 f"{info['walogs_implementation']}, {info['nproc']} CPUs, {info['filesystem']['type']}\n"
                 "bar: measured ratio; dashed: target; green met, red missed, grey report only", fontsize=9)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test (~1 minute)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these figures")
    parser.add_argument("--dir", help="parent of the temporary work directory (default: the system temp dir)")
    parser.add_argument("--repeats", type=int, help="timed runs per side (default 3)")
    parser.add_argument("--json", default=str(BENCH / "results.json"), help="where to write the results")
    parser.add_argument("--png", default=str(BENCH / "results.png"), help="where to draw the chart")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    args = parser.parse_args(argv)

    if args.list:
        for name, (_, target) in FIGURES.items():
            print(f"{name:16} {target}")
        return 0
    names = list(FIGURES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in FIGURES]
        if unknown:
            parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = Sizes(**{**sizes.__dict__, "repeats": args.repeats})
    if walogs.IMPLEMENTATION != "cython":
        log("warning: walogs.IMPLEMENTATION is 'python' in this process (extension missing or "
            "WALOGS_PURE_PYTHON set): the in-process figures measure the fallback")

    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="walogs-bench-", dir=args.dir)
    figures: list[Figure] = []
    try:
        info = machine_info(workdir)
        log(f"walogs {walogs.__version__} ({walogs.IMPLEMENTATION}, crc {info['crc_backend']}), "
            f"python {info['python']}, {info['nproc']} CPUs, {info['filesystem']['type']} at {workdir}")
        bench = Bench(sizes, workdir)
        for name in names:
            log(f"{name} ...")
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            try:
                fig = FIGURES[name][0](bench)
            except Exception as exc:  # noqa: BLE001  (one broken figure must not hide the others)
                traceback.print_exc()
                fig = Figure(name, "", "", "", error=f"{type(exc).__name__}: {exc}")
            fig.seconds = time.perf_counter() - t0
            fig.data["loadavg_1min_before"] = load
            figures.append(fig)
            for row in fig.rows:
                log(f"  {row.label}: {row.subject} vs {row.baseline} -> {fmt_ratio(row)} "
                    f"(target {row.target}: {fmt_met(row.met)})")
            log(f"  ({fig.seconds:.1f} s)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    info["loadavg_end"] = os.getloadavg()

    out = table(figures)
    print()
    print(out)
    print()
    for fig in figures:
        for note in fig.notes:
            print(f"- {fig.name}: {note}")
        if fig.error:
            print(f"- {fig.name}: ERROR {fig.error}")
    print(f"\n{info['date']}: {'quick' if args.quick else 'full'} run, {elapsed:.0f} s; "
          f"{info['nproc']} CPUs ({info['cpu']}), python {info['python']}, walogs "
          f"{info['walogs_implementation']} (crc {info['crc_backend']}), {info['filesystem']['type']} "
          f"({info['filesystem']['stat_f']}), load {info['loadavg_start'][0]:.2f} -> {info['loadavg_end'][0]:.2f}")

    results = {
        "machine": info, "quick": args.quick, "only": args.only, "sizes": sizes.__dict__,
        "elapsed_s": round(elapsed, 1), "figures": [f.as_json() for f in figures], "table_markdown": out,
    }
    Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")
    problem = draw(figures, Path(args.png), info, args.quick)
    print(problem if problem else f"wrote {args.png}")
    return 1 if any(f.error for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
