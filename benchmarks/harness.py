"""The measuring kit every figure uses: sizes, data sets, side-by-side comparison, rows, child processes.

Machines are shared and noisy, so no figure is compared with a number from
another day: a subject is measured side by side with its baseline, the two
alternating (B S S B ...), and the medians of several repeats are compared.
Figures without a baseline are compared with absolute limits; their "ratio" is
the headroom limit / measured.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Union

import walogs
from walogs import Wal, WalConfig

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ENTRY_SIZE = 100
FRAME_SIZE = ENTRY_SIZE + walogs.FRAME_HEADER_SIZE  # 116
MiB = 1 << 20
WORKER = BENCH / "_worker.py"


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """How long and how big: the full run's sizes or --quick's."""

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
    idle_seconds: float = 10.0  # follow_idle_cpu: how long the followers sit idle while their CPU time is read
    fanout_samples: int = 1000  # follow_fanout: paced appends per follower count


FULL = Sizes(
    durable_seconds=2.0, fast_seconds=1.0, slice_seconds=0.1, repeats=5,
    iter_entries=1_000_000, scan_bytes=512 * MiB, rss_bytes=1024 * MiB,
    follow_samples=2000, follow_interval=0.002, scaling_readers=(1, 4, 8),
)
QUICK = Sizes(
    durable_seconds=0.3, fast_seconds=0.2, slice_seconds=0.05, repeats=3,
    iter_entries=100_000, scan_bytes=64 * MiB, rss_bytes=256 * MiB,
    follow_samples=300, follow_interval=0.002, scaling_readers=(1, 4, 8), idle_seconds=3.0, fanout_samples=200,
)


# --------------------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    """A progress line on stderr, with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def si(value: float, digits: int = 3) -> str:
    """3 significant digits with a k/M/G suffix: 5.91k, 1.23M."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    return statistics.median(values)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def dir_bytes(path: str) -> int:
    """Total size of a log directory's segment files."""
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.startswith("wal-"))


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


def run_threads(nthreads: int, op: Callable[[Any], Any], arg: Any, seconds: float) -> tuple[int, float]:
    """``nthreads`` threads released together call ``op(arg)`` in a loop for ``seconds``: (calls, elapsed).

    The first exception a thread raises is raised here once all have stopped.
    """
    counts = [0] * nthreads
    errors: list[BaseException] = []
    barrier = threading.Barrier(nthreads + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        call, clock = op, time.perf_counter
        barrier.wait()
        stop, c = deadline[0], 0
        try:
            while clock() < stop:
                call(arg)
                c += 1
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
            errors.append(exc)
        counts[i] = c

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(counts), elapsed


def alternate(repeats: int, baseline: Callable[[], float], subject: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Run baseline and subject ``repeats`` times each, alternating B S, S B, B S, ..."""
    base: list[float] = []
    subj: list[float] = []
    for i in range(repeats):
        order = ((base, baseline), (subj, subject)) if i % 2 == 0 else ((subj, subject), (base, baseline))
        for bucket, fn in order:
            bucket.append(fn())
    return base, subj


# --------------------------------------------------------------------------- child processes (_worker.py)


def _worker_env(pure: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("WALOGS_PURE_PYTHON", None)
    if pure:
        env["WALOGS_PURE_PYTHON"] = "1"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def parse_result(stdout: str, what: str) -> dict:
    """The JSON of a worker's ``RESULT`` line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{what}: worker printed no RESULT line; stdout tail: {stdout[-500:]!r}")


def run_worker(task: str, args: dict, *, pure: bool = False, timeout: float = 300.0) -> dict:
    """Run one task of _worker.py in a fresh interpreter and return its RESULT.

    ``pure`` selects the pure-Python fallback there (WALOGS_PURE_PYTHON=1).
    """
    proc = subprocess.run(
        [sys.executable, str(WORKER), task, json.dumps(args)],
        cwd=ROOT, env=_worker_env(pure), capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {task} (pure={pure}) exited {proc.returncode}: {proc.stderr[-2000:]}")
    return parse_result(proc.stdout, f"worker {task}")


def spawn_worker(task: str, args: dict, *, stdin: bool = False) -> subprocess.Popen:
    """Start one task of _worker.py and return at once; text pipes for stdout, stderr and (if asked) stdin."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), task, json.dumps(args)],
        cwd=ROOT, env=_worker_env(False), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True, bufsize=1,
    )


def expect_ready(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait for the worker's ``READY`` line; RuntimeError on another line, at EOF or after ``timeout`` s."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"worker {proc.args[2]} said nothing for {timeout} s")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"worker {proc.args[2]} ended early: {err[-2000:]}")
    if line.strip() != "READY":
        raise RuntimeError(f"worker {proc.args[2]} said {line.strip()!r}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used, from /proc (schedstat: ns; else stat: clock ticks)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn_followers(path: str, count: int) -> list[subprocess.Popen]:
    """Start ``count`` follow workers on the live log ``path`` and wait until each has yielded its first entry."""
    procs = [spawn_worker("follow", {"path": path, "stop": "STOP", "timeout": 600}) for _ in range(count)]
    try:
        for proc in procs:
            expect_ready(proc)
    except BaseException:
        kill_all(procs)
        raise
    return procs


def kill_all(procs: list[subprocess.Popen]) -> None:
    """Kill the workers still running and reap them all."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


# --------------------------------------------------------------------------- what a figure is and reports


@dataclass(frozen=True)
class AtLeast:
    """Target of a ratio figure: subject / baseline of at least ``ratio``."""

    ratio: float

    def __str__(self) -> str:
        return f">= {self.ratio:g}x"


@dataclass(frozen=True)
class Below:
    """Target of an absolute figure: each named measurement below its limit, in the figure's unit."""

    limits: dict[str, float]  # row name suffix ("" for the figure's only row) -> limit

    def text(self, unit: str, suffix: str | None = None) -> str:
        """One row's target ("< 1 ms"), or all of them ("p50 < 1 ms, p99 < 10 ms")."""
        if suffix is not None:
            return f"< {self.limits[suffix]:g} {unit}"
        return ", ".join(f"{name} {self.text(unit, name)}".strip() for name in self.limits)


Target = Union[AtLeast, Below, None]  # None: report only


@dataclass(frozen=True)
class Spec:
    """A registered figure: how to measure it, what it compares, and what it must reach."""

    name: str
    measure: Callable[[Bench, Spec], Figure]
    description: str
    baseline: str  # "—" for figures compared with absolute limits
    unit: str
    target: Target
    versus: str = ""  # the baseline in a few words, for --list

    @property
    def target_text(self) -> str:
        """The target as --list and an ERROR row show it: ">= 0.9x os.write+fdatasync"."""
        if self.target is None:
            return "report only"
        if isinstance(self.target, Below):
            return self.target.text(self.unit)
        return f"{self.target} {self.versus}".strip()


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
    """The result of one figure: its rows, raw data for results.json, notes, and how it went."""

    spec: Spec
    rows: list[Row] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def name(self) -> str:
        """The registered name."""
        return self.spec.name

    def add_ratio(self, label: str, subj_runs: list[float], base_runs: list[float], *,
                  key: str | None = None, report_only: bool = False) -> dict:
        """Add a row comparing the medians of paired runs; return its raw data.

        The data goes into ``self.data`` (under ``key`` when given). The row
        meets the figure's target unless ``report_only`` or the figure has none.
        """
        unit = self.spec.unit
        target = None if report_only or not isinstance(self.spec.target, AtLeast) else self.spec.target
        s, b = median(subj_runs), median(base_runs)
        ratio = s / b if b else math.inf
        paired = [x / y for x, y in zip(subj_runs, base_runs) if y]
        self.rows.append(Row(
            label=label, subject=f"{si(s)} {unit}", baseline=f"{si(b)} {unit}", ratio=ratio,
            target=str(target) if target else "report only", target_ratio=target.ratio if target else None,
            met=ratio >= target.ratio if target else None,
            spread=(min(paired), max(paired)) if paired else None,
        ))
        data = {
            "unit": unit, "subject_runs": subj_runs, "baseline_runs": base_runs,
            "subject_median": s, "baseline_median": b, "ratio": ratio,
            "paired_ratios": paired, "paired_ratio_min": min(paired) if paired else None,
            "paired_ratio_max": max(paired) if paired else None,
        }
        if key is None:
            self.data.update(data)
        else:
            self.data[key] = data
        return data

    def add_below(self, suffix: str, value: float, digits: int) -> None:
        """Add a row for a measurement with an upper limit (the spec's Below target); ratio = headroom."""
        target = self.spec.target
        assert isinstance(target, Below), target
        limit = target.limits[suffix]
        self.rows.append(Row(
            label=f"{self.name} {suffix}".strip(), subject=f"{value:.{digits}f} {self.spec.unit}", baseline="—",
            ratio=limit / value if value > 0 else math.inf, target=target.text(self.spec.unit, suffix), target_ratio=1.0,
            met=value < limit, headroom=True,
        ))

    def as_json(self) -> dict:
        """Everything about this figure, for results.json."""
        return {
            "name": self.name, "description": self.spec.description, "baseline": self.spec.baseline,
            "target": self.spec.target_text, "unit": self.spec.unit, "seconds": round(self.seconds, 2),
            "error": self.error, "rows": [r.__dict__ for r in self.rows], "data": self.data, "notes": self.notes,
        }


# --------------------------------------------------------------------------- the bench: work directory, data sets


class Bench:
    """One run's work directory, sizes, payloads, and the logs and databases built once on first use."""

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
        """A path in the work directory that nothing has used yet."""
        self._n += 1
        return os.path.join(self.dir, f"{prefix}-{self._n}")

    def log_with(self, entries: int) -> str:
        """A log of ``entries`` 100-byte entries (default segment size), built once per run."""
        key = f"log-{entries}"
        if key not in self._datasets:
            path = os.path.join(self.dir, key)
            t0 = time.perf_counter()
            wal = Wal.open(path, WalConfig(sync="none"))
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
        """A log of at least ``nbytes`` of frames: (path, entries)."""
        entries = -(-nbytes // FRAME_SIZE)
        return self.log_with(entries), entries

    def sqlite_with(self, entries: int) -> str:
        """An SQLite database of the same ``entries`` rows (id, data), built once per run."""
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


def open_sqlite(path: str, synchronous: str = "FULL") -> sqlite3.Connection:
    """A new SQLite database at ``path``: journal_mode=WAL, ``synchronous``, table t (id, data), autocommit."""
    conn = sqlite3.connect(path, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    assert mode == "wal", mode
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    return conn


def remove_sqlite(path: str) -> None:
    """Delete the database at ``path`` with its -wal and -shm files."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


# --------------------------------------------------------------------------- side by side, in slices


@dataclass
class Side:
    """One side of an interleaved comparison: open a resource, run it for a slice, close it."""

    open: Callable[[], Any]
    run: Callable[[Any, float], tuple[int, float]]  # (state, seconds) -> (units done, seconds taken)
    close: Callable[[Any], None]

    def rate(self, seconds: float) -> float:
        """Units per second of one run of ``seconds`` on a fresh resource (no baseline beside it)."""
        state = self.open()
        try:
            n, t = self.run(state, seconds)
        finally:
            self.close(state)
        return n / t


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


def warm_up(sizes: Sizes, baseline: Side, subject: Side) -> None:
    """Two untimed slices of each side: files created, code paths and caches warm."""
    interleaved(baseline, subject, sizes.slice_seconds * 2, sizes.slice_seconds)


def compare_interleaved(sizes: Sizes, baseline: Side, subject: Side, seconds: float) -> tuple[list[float], list[float]]:
    """``sizes.repeats`` interleaved repeats, each with fresh files: (baseline rates, subject rates)."""
    base: list[float] = []
    subj: list[float] = []
    for _ in range(sizes.repeats):
        b_rate, s_rate = interleaved(baseline, subject, seconds, sizes.slice_seconds)
        base.append(b_rate)
        subj.append(s_rate)
    return base, subj


def figure_in_slices(b: Bench, spec: Spec, baseline: Side, subject: Side,
                     seconds: float) -> tuple[Figure, list[float], list[float]]:
    """The usual append figure: warm up, compare in slices, one row: (figure, baseline rates, subject rates)."""
    fig = Figure(spec)
    warm_up(b.sizes, baseline, subject)
    base, subj = compare_interleaved(b.sizes, baseline, subject, seconds)
    fig.add_ratio(spec.name, subj, base)
    return fig, base, subj


def wait_prepared(wal: Wal, timeout: float = 120.0) -> None:
    """Until ``wal``'s next segment is prepared (preallocate; at once when it does not preallocate)."""
    preparer = wal._preparer
    deadline = time.monotonic() + timeout
    while preparer is not None and not preparer.ready:
        if time.monotonic() > deadline:
            raise RuntimeError("the next segment was never prepared")
        time.sleep(0.005)


def steady_wal(path: str, config: WalConfig) -> Wal:
    """A Wal as a long-running log has it: writing into a prepared segment (when it preallocates).

    A new log's first segment grows (nothing was prepared before it): one
    entry, then a rotation into the prepared segment, then until the next
    one is prepared (its zeros written), so no zeroing runs during the timing.
    """
    wal = Wal.open(path, config)
    if wal._preparer is not None:
        wal.append(b"warm")
        wait_prepared(wal)
        wal.rotate()
        wait_prepared(wal)
    return wal


def wal_side(b: Bench, prefix: str, config: WalConfig, op: str, arg: Any, chunk: int = 1, per_call: int = 1,
             steady: bool = False) -> Side:
    """A Wal in a fresh directory; each slice calls ``wal.<op>(arg)`` in a loop (``per_call`` entries a call).

    ``steady``: opened with :func:`steady_wal` (into a prepared segment).
    """

    def open_() -> dict:
        path = b.fresh(prefix)
        wal = steady_wal(path, config) if steady else Wal.open(path, config)
        return {"path": path, "wal": wal, "calls": 0, "before": wal.next_lsn - 1}

    def run(state: dict, seconds: float) -> tuple[int, float]:
        n, t = timed_loop(getattr(state["wal"], op), arg, seconds, chunk)
        state["calls"] += n
        return n * per_call, t

    def close(state: dict) -> None:
        wal = state["wal"]
        try:
            # every call appended its entries: nothing was skipped or double counted
            assert wal.next_lsn == state["before"] + state["calls"] * per_call + 1, (wal.next_lsn, state["calls"])
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
