"""rotation_latency: the worst durable append across 50 rotations, against the median append.

Small segments (ROTATE_BYTES) so that 50 rotations happen in a few seconds;
each rotation renames a prepared segment in (or, when the background
preparer is still zeroing the next one, creates an empty one: never waits),
trims and syncs the finished segment, and the preparer's zeroing (and the
LSN_FLOOR high-water update) runs beside the appends. Every append's latency
is timed.

The target row is the worst append of all over the median, as the issue
states it. On a shared disk that worst is often an append that rotates
nothing, stalled by other I/O; so two report-only rows say, from the same
run, the worst append that rotated and the worst that did not (each over the
same median): what rotation itself costs, beside the noise.
"""

from __future__ import annotations

import os
import shutil
import time

from harness import Bench, Figure, Row, Spec, percentile, steady_wal

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
        rotating: list[int] = []  # the latencies of the appends that rotated
        prepared = 0  # rotations that renamed a prepared segment in (the rest created an empty one)
        try:
            while wal.segment_count - start_segments < ROTATIONS:
                before = wal.segment_count
                t0 = clock()
                append(b.payload)
                lat.append(clock() - t0)
                if wal.segment_count != before:
                    rotating.append(lat[-1])
                    seq = wal._writer.snapshot()[0]
                    prepared += os.path.getsize(os.path.join(path, segment_name(seq))) == ROTATE_BYTES
        finally:
            wal.close()
            shutil.rmtree(path)
        plain = sorted(lat)
        for t in rotating:
            plain.remove(t)
        lat.sort()
        rotating.sort()
        med = percentile(lat, 50)
        runs.append({"appends": len(lat), "median_us": med / 1e3, "p99_us": percentile(lat, 99) / 1e3,
                     "max_us": lat[-1] / 1e3, "worst_over_median": lat[-1] / med,
                     "rotating_median_us": percentile(rotating, 50) / 1e3, "rotating_max_us": rotating[-1] / 1e3,
                     "worst_rotating_over_median": rotating[-1] / med,
                     "plain_max_us": plain[-1] / 1e3, "worst_plain_over_median": plain[-1] / med,
                     "rotations_into_prepared": prepared})
    fig.data = {"runs": runs, "rotations": ROTATIONS, "segment_bytes": ROTATE_BYTES}
    ratios = sorted(r["worst_over_median"] for r in runs)
    fig.add_below("", ratios[len(ratios) // 2], digits=2)
    for key, what in (("worst_rotating_over_median", "worst rotating append"),
                      ("worst_plain_over_median", "worst non-rotating append")):
        per_run = sorted(r[key] for r in runs)
        mid = per_run[len(per_run) // 2]
        spread = f" [{per_run[0]:.2f}–{per_run[-1]:.2f}]" if len(per_run) > 1 else ""
        fig.rows.append(Row(label=f"{fig.name} {what}", subject=f"{mid:.2f} {spec.unit}{spread}", baseline="—",
                            ratio=None, target="report only", target_ratio=None, met=None))
    fig.notes.append("worst/median per run: " + ", ".join(f"{r:.2f}x" for r in ratios) + "; "
                     + "; ".join(f"median {r['median_us']:.0f} us, p99 {r['p99_us']:.0f} us, max {r['max_us']:.0f} us "
                                 f"(rotating: median {r['rotating_median_us']:.0f} us, max {r['rotating_max_us']:.0f} us "
                                 f"= {r['worst_rotating_over_median']:.1f}x; not rotating: max {r['plain_max_us']:.0f} us "
                                 f"= {r['worst_plain_over_median']:.1f}x), "
                                 f"{r['rotations_into_prepared']}/{ROTATIONS} rotations into a prepared segment"
                                 for r in runs))
    return fig
