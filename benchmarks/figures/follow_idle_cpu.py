"""follow_idle_cpu: CPU a follower uses while the log it follows is idle, with 1 and 16 following processes."""

from __future__ import annotations

import shutil
import time

from harness import Bench, Figure, Spec, cpu_seconds, kill_all, spawn_followers

from walogs import Wal

COUNTS = (1, 16)


def measure(b: Bench, spec: Spec) -> Figure:
    """Followers (_worker.py follow) wait on a live, idle writer; each one's CPU time over idle_seconds, from /proc."""
    fig = Figure(spec)
    seconds = b.sizes.idle_seconds
    for count in COUNTS:
        path = b.fresh(f"idle{count}")
        wal = Wal.open(path)
        procs = []
        try:
            wal.append(b"warm-up")
            procs = spawn_followers(path, count)
            time.sleep(0.5)  # past the followers' first sleeps
            before = [cpu_seconds(p.pid) for p in procs]
            started = time.perf_counter()
            time.sleep(seconds)
            used = [cpu_seconds(p.pid) - t for p, t in zip(procs, before)]
            elapsed = time.perf_counter() - started
        finally:
            kill_all(procs)
            wal.close()
            shutil.rmtree(path, ignore_errors=True)
        share = [100 * u / elapsed for u in used]  # % of one core
        mean, worst = sum(share) / len(share), max(share)
        fig.data[f"{count}_followers"] = {"seconds": elapsed, "percent_of_a_core": share}
        fig.add_below(f"{count} worst", worst, digits=3)
        fig.notes.append(f"{count} follower(s) idle {elapsed:.1f} s: mean {mean:.3f}%, worst {worst:.3f}% of a core, "
                         f"all together {sum(share):.3f}%")
    return fig
