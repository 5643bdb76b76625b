"""append_always: a durable append from one thread, against an os.write + os.fdatasync loop."""

from __future__ import annotations

from harness import Bench, Figure, Spec, figure_in_slices, median, raw_file_side, wal_side

from walogs import WalConfig


def measure(b: Bench, spec: Spec) -> Figure:
    """Both sides alternate in slices, each on a fresh file of the same filesystem."""
    fig, base, subj = figure_in_slices(
        b, spec, baseline=raw_file_side(b, "raw-fdatasync", durable=True),
        subject=wal_side(b, "append-always", WalConfig(sync="always"), "append", b.payload),
        seconds=b.sizes.durable_seconds)
    fig.notes.append(f"per durable append: walogs {1e6 / median(subj):.0f} us, "
                     f"os.write+fdatasync {1e6 / median(base):.0f} us")
    return fig
