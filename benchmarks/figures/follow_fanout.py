"""follow_fanout: append return -> yield in every one of 1 and 16 following processes."""

from __future__ import annotations

import shutil
import subprocess
import time

from harness import Bench, Figure, Spec, kill_all, parse_result, percentile, spawn_followers

from walogs import Wal

COUNTS = (1, 16)
INTERVAL = 0.005  # between appends: every follower has yielded the last one well before the next


def measure(b: Bench, spec: Spec) -> Figure:
    """Paced appends (sync="always") here; each follower timestamps its yields; one clock (CLOCK_MONOTONIC), ns."""
    fig = Figure(spec)
    samples = b.sizes.fanout_samples
    clock = time.perf_counter_ns
    for count in COUNTS:
        path = b.fresh(f"fanout{count}")
        wal = Wal.open(path)
        procs: list[subprocess.Popen] = []
        returned: dict[int, int] = {}
        try:
            wal.append(b"warm-up")
            procs = spawn_followers(path, count)
            start = time.perf_counter()
            for i in range(samples):
                wait = start + (i + 1) * INTERVAL - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                lsn = wal.append(b.payload)
                returned[lsn] = clock()
            wal.append(b"STOP")
            results = []
            for proc in procs:
                out, err = proc.communicate(timeout=120)
                if proc.returncode != 0:
                    raise RuntimeError(f"follow worker exited {proc.returncode}: {err[-2000:]}")
                results.append(parse_result(out, "follow worker"))
        finally:
            kill_all(procs)
            wal.close()
            shutil.rmtree(path, ignore_errors=True)
        lat = []
        for res in results:
            seen = dict(zip(res["lsns"], res["t_ns"]))
            missing = set(returned) - set(seen)
            if missing:
                raise RuntimeError(f"a follower never yielded {len(missing)} of {len(returned)} entries")
            lat += [(seen[lsn] - t) / 1e6 for lsn, t in returned.items()]
        lat.sort()
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        fig.data[f"{count}_followers"] = {"samples": len(lat), "p50_ms": p50, "p99_ms": p99, "max_ms": lat[-1],
                                          "interval_ms": INTERVAL * 1e3}
        fig.add_below(f"{count} p50", p50, digits=3)
        fig.add_below(f"{count} p99", p99, digits=3)
        fig.notes.append(f"{count} follower(s): {len(lat)} yields, p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
                         f"max {lat[-1]:.3f} ms")
    return fig
