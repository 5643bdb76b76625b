"""append_none: append with sync="none" (write only), against a bare os.write loop."""

from __future__ import annotations

from harness import Bench, Figure, Spec, figure_in_slices, median, raw_file_side, wal_side

from walogs import WalConfig


def measure_write_only(b: Bench, spec: Spec, sync: str, note: str = "") -> Figure:
    """An append figure whose appends do not wait for a sync: walogs with ``sync`` against os.write."""
    fig, base, subj = figure_in_slices(
        b, spec, baseline=raw_file_side(b, f"raw-write-{sync}", durable=False),
        subject=wal_side(b, f"append-{sync}", WalConfig(sync=sync), "append", b.payload, chunk=64),
        seconds=b.sizes.fast_seconds)
    fig.notes.append(f"per append: walogs {1e9 / median(subj):.0f} ns, os.write {1e9 / median(base):.0f} ns{note}")
    return fig


def measure(b: Bench, spec: Spec) -> Figure:
    """Both sides alternate in slices of 64-call chunks, each on a fresh file."""
    return measure_write_only(b, spec, "none")
