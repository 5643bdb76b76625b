"""append_interval: append with sync="interval" (background fdatasync), against a bare os.write loop."""

from __future__ import annotations

from harness import Bench, Figure, Spec

from figures.append_none import measure_write_only


def measure(b: Bench, spec: Spec) -> Figure:
    """As append_none, with walogs' background sync thread running."""
    return measure_write_only(
        b, spec, "interval",
        " (walogs' background fdatasync every 0.05 s runs without the GIL, also during baseline slices)")
