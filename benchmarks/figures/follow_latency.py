"""follow_latency: from a writer's append returning to a reader process yielding the entry via follow."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time

from harness import Bench, Figure, Spec, expect_ready, kill_all, parse_result, percentile, spawn_worker

from walogs import Wal


def measure(b: Bench, spec: Spec) -> Figure:
    """Paced appends (sync="always") here, timestamps in a follower (_worker.py follow); one clock, ns."""
    fig = Figure(spec)
    samples, interval = b.sizes.follow_samples, b.sizes.follow_interval
    path = b.fresh("follow")
    wal = Wal.open(path)  # default config: sync="always"
    procs: list[subprocess.Popen] = []
    clock = time.perf_counter_ns  # CLOCK_MONOTONIC: comparable across processes
    returned: dict[int, int] = {}
    append_ns: list[int] = []
    try:
        wal.append(b"warm-up")
        proc = spawn_worker("follow", {"path": path, "stop": "STOP", "timeout": 60})
        procs.append(proc)
        expect_ready(proc)
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
    fig.add_below("p50", p50, digits=3)
    fig.add_below("p99", p99, digits=3)
    fig.notes.append(f"latency min {lat[0]:.3f} ms, p90 {p90:.3f} ms, p99.9 {p999:.3f} ms, max {lat[-1]:.3f} ms; "
                     f"append itself (fdatasync) p50 {percentile(appends, 50):.3f} ms, "
                     f"p99 {percentile(appends, 99):.3f} ms")
    if fig.data["negative"]:
        fig.notes.append(f"{fig.data['negative']} samples were yielded before append() returned "
                         "(the end is published before the writer wakes up)")
    return fig
