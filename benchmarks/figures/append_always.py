"""append_always: a durable append from one thread, against an os.write + os.fdatasync loop.

The log is in its steady state: writing into a prepared segment (preallocate,
the default where it pays). A second, report-only row runs the same appends
with ``preallocate=False`` (the file grows with every append, as before issue
#16), side by side in the same slices.
"""

from __future__ import annotations

from harness import Bench, Figure, Spec, compare_interleaved, median, raw_file_side, wal_side, warm_up

from walogs import WalConfig


def measure(b: Bench, spec: Spec) -> Figure:
    """Both sides alternate in slices, each on a fresh file of the same filesystem."""
    fig = Figure(spec)
    raw = raw_file_side(b, "raw-fdatasync", durable=True)
    into = wal_side(b, "append-always", WalConfig(sync="always"), "append", b.payload, steady=True)
    grown = wal_side(b, "append-always-grown", WalConfig(sync="always", preallocate=False), "append", b.payload)
    warm_up(b.sizes, raw, into)
    base, subj = compare_interleaved(b.sizes, raw, into, b.sizes.durable_seconds)
    fig.add_ratio(spec.name, subj, base)
    base2, old = compare_interleaved(b.sizes, raw, grown, b.sizes.durable_seconds)
    fig.add_ratio(f"{spec.name} preallocate=False", old, base2, key="preallocate_false", report_only=True)
    fig.notes.append(f"per durable append: walogs {1e6 / median(subj):.0f} us (written into zeros), "
                     f"{1e6 / median(old):.0f} us (growing the file), "
                     f"os.write+fdatasync {1e6 / median(base):.0f} us")
    return fig
