"""rotation_latency: the worst durable append across 50 rotations, against the median append.

Small segments (ROTATE_BYTES) so that 50 rotations happen in a few seconds;
each rotation renames a prepared segment in (or, when the background
preparer is still zeroing the next one, creates an empty one: never waits),
trims and syncs the finished segment, and the preparer's zeroing runs
beside the appends. Every append's latency is timed.
"""

from __future__ import annotations

import os
import shutil
import time

from harness import Bench, Figure, Spec, percentile, steady_wal

from walogs import WalConfig
from walogs._format import segment_name

ROTATIONS = 50
ROTATE_BYTES = 64 * 1024


def measure(b: Bench, spec: Spec) -> Figure:
    """One log, durable appends until it has rotated ROTATIONS times; per-append latency."""
    fig = Figure(spec)
    runs = []
    for _ in range(b.sizes.repeats):
        path = b.fresh("rotation-latency")
        wal = steady_wal(path, WalConfig(sync="always", max_segment_size=ROTATE_BYTES))
        start_segments = wal.segment_count
        append, clock = wal.append, time.perf_counter_ns
        lat: list[int] = []
        prepared = 0  # rotations that renamed a prepared segment in (the rest created an empty one)
        try:
            while wal.segment_count - start_segments < ROTATIONS:
                before = wal.segment_count
                t0 = clock()
                append(b.payload)
                lat.append(clock() - t0)
                if wal.segment_count != before:
                    seq = wal._writer.snapshot()[0]
                    prepared += os.path.getsize(os.path.join(path, segment_name(seq))) == ROTATE_BYTES
        finally:
            wal.close()
            shutil.rmtree(path)
        lat.sort()
        runs.append({"appends": len(lat), "median_us": percentile(lat, 50) / 1e3, "p99_us": percentile(lat, 99) / 1e3,
                     "max_us": lat[-1] / 1e3, "worst_over_median": lat[-1] / percentile(lat, 50),
                     "rotations_into_prepared": prepared})
    ratios = sorted(r["worst_over_median"] for r in runs)
    fig.data = {"runs": runs, "rotations": ROTATIONS, "segment_bytes": ROTATE_BYTES}
    fig.add_below("", ratios[len(ratios) // 2], digits=2)
    fig.notes.append("worst/median per run: " + ", ".join(f"{r:.2f}x" for r in ratios) + "; "
                     + "; ".join(f"median {r['median_us']:.0f} us, p99 {r['p99_us']:.0f} us, max {r['max_us']:.0f} us, "
                                 f"{r['rotations_into_prepared']}/{ROTATIONS} rotations into a prepared segment"
                                 for r in runs))
    return fig
