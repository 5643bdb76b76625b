"""reader_scaling: total entries/s of N reader processes iterating one log at once, against 1 reader."""

from __future__ import annotations

import os

from harness import Bench, Figure, Spec, expect_ready, kill_all, median, parse_result, si, spawn_worker


def _round(path: str, nreaders: int, entries: int) -> float:
    """Start ``nreaders`` scale workers, release them together, and return their total entries/s."""
    procs = [spawn_worker("scale", {"path": path}, stdin=True) for _ in range(nreaders)]
    try:
        for proc in procs:
            expect_ready(proc)
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


def measure(b: Bench, spec: Spec) -> Figure:
    """Rounds of 1, 4, 8 readers alternate in order (1 4 8, 8 4 1, ...) after one warm-up round."""
    fig = Figure(spec)
    n = b.sizes.iter_entries
    counts = b.sizes.scaling_readers
    path = b.log_with(n)
    runs: dict[int, list[float]] = {k: [] for k in counts}
    _round(path, 1, n)  # warm-up
    for i in range(b.sizes.repeats):
        for k in (counts if i % 2 == 0 else tuple(reversed(counts))):
            runs[k].append(_round(path, k, n))
    base = runs[counts[0]]
    cpus = len(os.sched_getaffinity(0))
    fig.data = {"runs": {str(k): v for k, v in runs.items()}, "cpus": cpus, "entries": n}
    for k in counts[1:]:
        fig.add_ratio(f"{spec.name} {k} readers", runs[k], base, key=f"{k}_readers")
    fig.notes.append(f"1 reader: {si(median(base))} entries/s; {cpus} CPUs available, "
                     f"so more than {cpus}x is not possible here")
    return fig
