"""batch_1000: append_batch of 1000 entries, sync="always", against one SQLite transaction of 1000 inserts."""

from __future__ import annotations

import sqlite3

from harness import (Bench, Figure, Side, Spec, compare_interleaved, figure_in_slices, median, open_sqlite,
                     remove_sqlite, timed_loop, wal_side)

from walogs import WalConfig

BATCH = 1000


def sqlite_side(b: Bench, rows: list, synchronous: str = "FULL") -> Side:
    """SQLite, journal_mode=WAL; each slice commits transactions of len(rows) inserts (executemany)."""

    def open_() -> tuple[str, sqlite3.Connection]:
        path = b.fresh("sqlite-batch") + ".db"
        return path, open_sqlite(path, synchronous)

    def run(state: tuple[str, sqlite3.Connection], seconds: float) -> tuple[int, float]:
        execute, executemany = state[1].execute, state[1].executemany

        def op(batch: list) -> None:
            execute("BEGIN")
            executemany("INSERT INTO t (data) VALUES (?)", batch)
            execute("COMMIT")
        n, t = timed_loop(op, rows, seconds)
        return n * len(rows), t

    def close(state: tuple[str, sqlite3.Connection]) -> None:
        state[1].close()
        remove_sqlite(state[0])

    return Side(open_, run, close)


def batch_side(b: Bench, sync: str, preallocate: bool | None = None) -> Side:
    """walogs: each slice appends batches of 1000 of the bench's payloads with ``sync``."""
    items = b.pool[:BATCH]
    return wal_side(b, f"batch-{sync}", WalConfig(sync=sync, preallocate=preallocate), "append_batch", items,
                    per_call=len(items))


def measure(b: Bench, spec: Spec) -> Figure:
    """Both sides alternate in slices, each on fresh files of the same filesystem.

    A report-only row runs the same batches with ``preallocate=False``
    against the same baseline: at ~2M entries/s a 64 MiB segment fills
    several times a second, so the preparer's zeros double what reaches the
    disk (and mostly miss: the rotation falls back to an empty segment).
    """
    sqlite = sqlite_side(b, [(x,) for x in b.pool[:BATCH]], "FULL")
    fig, base, subj = figure_in_slices(b, spec, baseline=sqlite, subject=batch_side(b, "always"),
                                       seconds=b.sizes.durable_seconds)
    base2, grown = compare_interleaved(b.sizes, sqlite, batch_side(b, "always", preallocate=False),
                                       b.sizes.durable_seconds)
    fig.add_ratio(f"{spec.name} preallocate=False", grown, base2, key="preallocate_false", report_only=True)
    fig.notes.append(f"per batch of {BATCH}: walogs {1e3 * BATCH / median(subj):.2f} ms "
                     f"({1e3 * BATCH / median(grown):.2f} ms with preallocate=False), "
                     f"SQLite transaction {1e3 * BATCH / median(base):.2f} ms")
    return fig
