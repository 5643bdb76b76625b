"""reader_iter: WalReader.iter in process, against SQLite SELECT over the same rows."""

from __future__ import annotations

import sqlite3
import time

from harness import Bench, Figure, Spec, alternate, median

from walogs import WalReader


def measure(b: Bench, spec: Spec) -> Figure:
    """Whole runs alternate (B S, S B, ...) after one untimed run of each; page caches warm for both."""
    fig = Figure(spec)
    n = b.sizes.iter_entries
    path = b.log_with(n)
    db = b.sqlite_with(n)

    def subject() -> float:
        count = 0
        t0 = time.perf_counter()
        reader = WalReader(path)
        for _lsn, _data in reader.iter():
            count += 1
        t = time.perf_counter() - t0
        reader.close()
        assert count == n, count
        return n / t

    def baseline() -> float:
        count = 0
        t0 = time.perf_counter()
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        for _id, _data in conn.execute("SELECT id, data FROM t"):
            count += 1
        t = time.perf_counter() - t0
        conn.close()
        assert count == n, count
        return n / t

    baseline(), subject()  # warm page cache and code paths
    base, subj = alternate(b.sizes.repeats, baseline, subject)
    fig.add_ratio(spec.name, subj, base)
    fig.data["entries"] = n
    fig.notes.append(f"per entry: walogs {1e9 / median(subj):.0f} ns, SQLite {1e9 / median(base):.0f} ns")
    return fig
