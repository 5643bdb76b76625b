"""group_commit: durable appends from 8 threads against 1, and the machine's ceiling for it in C.

The walogs row compares the same Wal with 8 threads and with 1, alternating
in slices. Three report-only rows follow: group_commit_ceiling.c (the same
leader/follower scheme in C with pthreads, no Python), the same with a leader
that gathers one frame per thread first, and that gathering C append called
from Python threads through ctypes (the GIL released for the whole call).
They run after walogs' side, not interleaved with it: compare each one's ratio
to its own single thread, and the rates only roughly.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess

from harness import BENCH, Bench, Figure, Side, Spec, compare_interleaved, median, run_threads, si, warm_up

from walogs import Wal

THREADS = 8
CEILING_SOURCE = BENCH / "group_commit_ceiling.c"


class NotMeasured(Exception):
    """The C ceiling could not run here (no C compiler, a failed build); the reason goes into the notes."""


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
        before, writer = wal.next_lsn, wal._writer
        calls_before, seconds_before = writer.syncs, writer.sync_seconds
        appends, elapsed = run_threads(nthreads, wal.append, b.payload, seconds)
        assert wal.next_lsn - before == appends
        if tally is not None:
            tally["appends"] += appends
            tally["syncs"] += writer.syncs - calls_before
            tally["sync_seconds"] += writer.sync_seconds - seconds_before
        return appends, elapsed

    def close(state: tuple[str, Wal]) -> None:
        state[1].close()
        shutil.rmtree(state[0])

    return Side(open_, run, close)


def build_ceiling(b: Bench, shared: bool) -> str:
    """group_commit_ceiling.c built once per run into the work directory, as a program or a shared library."""
    target = os.path.join(b.dir, "libgroup_commit_ceiling.so" if shared else "group_commit_ceiling")
    if not os.path.exists(target):
        cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if cc is None:
            raise NotMeasured("no C compiler (cc, gcc)")
        flags = ["-shared", "-fPIC"] if shared else []
        built = subprocess.run([cc, "-O2", "-pthread", *flags, "-o", target, str(CEILING_SOURCE)],
                               capture_output=True, text=True, check=False)
        if built.returncode != 0:
            raise NotMeasured(f"{cc} could not build it: {built.stderr.strip()[:300]}")
    return target


def c_ceiling(b: Bench, seconds: float, rounds: int, gather: bool) -> dict:
    """Run the C program on the bench filesystem: appends/s of 1 and 8 threads per round, appends per sync."""
    where = b.fresh("ceiling")
    os.makedirs(where)
    argv = [build_ceiling(b, shared=False), where, str(seconds), str(min(rounds, 64))] + (["gather"] if gather else [])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"group_commit_ceiling exited {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def ctypes_ceiling(b: Bench, seconds: float, rounds: int) -> dict:
    """Python threads calling the C program's gathering append through ctypes; same result shape as c_ceiling.

    ctypes releases the GIL for the whole call (write, wait, gather, fdatasync),
    so this is what Python threads reach when nothing of a durable append needs
    the GIL.
    """
    lib = ctypes.CDLL(build_ceiling(b, shared=True), use_errno=True)
    lib.gc_reset.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.gc_append.restype = ctypes.c_int
    lib.gc_sync_calls.restype = ctypes.c_long

    def append(_: object) -> None:
        if lib.gc_append() != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"gc_append failed: {os.strerror(errno)}")

    result: dict = {"one_thread": [], "eight_threads": [], "appends_per_sync": []}
    for r in range(rounds):
        for nthreads in ((1, THREADS) if r % 2 == 0 else (THREADS, 1)):
            path = b.fresh("ctypes") + ".log"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                lib.gc_reset(fd, nthreads, 1)
                total, elapsed = run_threads(nthreads, append, None, seconds)
            finally:
                os.close(fd)
                os.unlink(path)
            result["one_thread" if nthreads == 1 else "eight_threads"].append(total / elapsed)
            if nthreads == THREADS:
                result["appends_per_sync"].append(total / max(lib.gc_sync_calls(), 1))
    return result


def _add_ceiling_rows(fig: Figure, b: Bench, walogs_rate: float) -> None:
    """The report-only C rows; raises NotMeasured where this machine cannot build the C program."""
    s = b.sizes
    for gather in (False, True):
        ceiling = c_ceiling(b, s.durable_seconds / 2, s.repeats, gather)
        scheme = "C pthreads, leader gathers one frame per thread" if gather else "C pthreads, same scheme"
        data = fig.add_ratio("group_commit C ceiling" + (", gather" if gather else ""), ceiling["eight_threads"],
                             ceiling["one_thread"], key="c_gather_ceiling" if gather else "c_ceiling",
                             report_only=True)
        data["appends_per_sync"] = ceiling["appends_per_sync"]
        fig.notes.append(
            f"{scheme} (benchmarks/group_commit_ceiling.c{' gather' if gather else ''}, no Python): "
            f"8 threads {si(median(ceiling['eight_threads']))} appends/s = {data['ratio']:.2f}x its 1 thread, "
            f"{median(ceiling['appends_per_sync']):.1f} appends per fdatasync; walogs with 8 threads "
            f"reaches {walogs_rate / median(ceiling['eight_threads']):.0%} of that rate (measured after it, not interleaved)"
        )
    called = ctypes_ceiling(b, s.durable_seconds / 2, s.repeats)
    data = fig.add_ratio("group_commit C append via ctypes, gather", called["eight_threads"], called["one_thread"],
                         key="ctypes_gather", report_only=True)
    data["appends_per_sync"] = called["appends_per_sync"]
    fig.notes.append(
        f"Python threads calling that C append (gather) through ctypes, the GIL released for the whole "
        f"call: 8 threads {si(median(called['eight_threads']))} appends/s = {data['ratio']:.2f}x its 1 thread, "
        f"{median(called['appends_per_sync']):.1f} appends per fdatasync"
    )


def measure(b: Bench, spec: Spec) -> Figure:
    """8 threads against 1 on the same Wal configuration, alternating in slices; then the C rows."""
    fig = Figure(spec)
    s = b.sizes
    tallies = {k: {"appends": 0, "syncs": 0, "sync_seconds": 0.0} for k in (1, THREADS)}
    warm_up(s, threads_side(b, 1), threads_side(b, THREADS))
    subject, baseline = threads_side(b, THREADS, tallies[THREADS]), threads_side(b, 1, tallies[1])
    base, subj = compare_interleaved(s, baseline, subject, s.durable_seconds)
    fig.add_ratio(spec.name, subj, base)
    for k, tally in tallies.items():
        per_sync = tally["appends"] / max(tally["syncs"], 1)
        mean_us = 1e6 * tally["sync_seconds"] / max(tally["syncs"], 1)
        fig.data[f"{k}_thread_fdatasync"] = {**tally, "appends_per_sync": per_sync, "mean_sync_us": mean_us}
        fig.notes.append(f"walogs, {k} thread{'s' if k > 1 else ''}: {per_sync:.1f} appends per fdatasync, "
                         f"fdatasync {mean_us:.0f} us on average (wall time around the system call)")
    try:
        _add_ceiling_rows(fig, b, median(subj))
    except NotMeasured as why:
        fig.notes.append(f"the C ceiling (group_commit_ceiling.c) was not measured: {why}")
    return fig
