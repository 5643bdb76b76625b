"""iter_rss: how much a fresh process's RSS grows while WalReader.iter reads a large log."""

from __future__ import annotations

from harness import Bench, Figure, MiB, Spec, dir_bytes, run_worker, si


def measure(b: Bench, spec: Spec) -> Figure:
    """Peak RSS (getrusage maxrss) minus VmRSS after import, in a fresh process (_worker.py rss)."""
    fig = Figure(spec)
    path, entries = b.log_of_bytes(b.sizes.rss_bytes)
    size = dir_bytes(path)
    res = run_worker("rss", {"path": path}, timeout=600)
    if res["count"] != entries:
        raise RuntimeError(f"iterated {res['count']} entries, expected {entries}")
    growth = (res["maxrss_peak_kib"] - res["rss_after_import_kib"]) / 1024
    fig.data = dict(res, log_bytes=size, growth_mib=growth, entries_per_s=entries / res["seconds"])
    fig.add_below("", growth, digits=1)
    fig.notes.append(f"{size / MiB:.0f} MiB log; RSS after import {res['rss_after_import_kib'] / 1024:.1f} MiB, "
                     f"peak {res['maxrss_peak_kib'] / 1024:.1f} MiB; read {entries:,} entries at "
                     f"{si(entries / res['seconds'])} entries/s ({res['implementation']})")
    return fig
