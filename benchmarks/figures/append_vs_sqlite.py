"""append_vs_sqlite: a durable append from one thread, against SQLite WAL synchronous=FULL autocommit inserts.

SQLite's ``-wal`` file stops growing after its first checkpoint and is then
overwritten in place: the comparison issue #16 was opened for.
"""

from __future__ import annotations

import sqlite3

from harness import Bench, Figure, Side, Spec, figure_in_slices, median, open_sqlite, remove_sqlite, timed_loop, wal_side

from walogs import WalConfig


def sqlite_autocommit_side(b: Bench) -> Side:
    """SQLite, journal_mode=WAL, synchronous=FULL; each insert of one row is its own transaction."""

    def open_() -> tuple[str, sqlite3.Connection]:
        path = b.fresh("sqlite-autocommit") + ".db"
        return path, open_sqlite(path, "FULL")

    def run(state: tuple[str, sqlite3.Connection], seconds: float) -> tuple[int, float]:
        execute = state[1].execute

        def op(row: tuple) -> None:
            execute("INSERT INTO t (data) VALUES (?)", row)
        return timed_loop(op, (b.payload,), seconds)

    def close(state: tuple[str, sqlite3.Connection]) -> None:
        state[1].close()
        remove_sqlite(state[0])

    return Side(open_, run, close)


def measure(b: Bench, spec: Spec) -> Figure:
    """Both sides alternate in slices, each on fresh files of the same filesystem."""
    fig, base, subj = figure_in_slices(
        b, spec, baseline=sqlite_autocommit_side(b),
        subject=wal_side(b, "append-vs-sqlite", WalConfig(sync="always"), "append", b.payload, steady=True),
        seconds=b.sizes.durable_seconds)
    fig.notes.append(f"per durable append: walogs {1e6 / median(subj):.0f} us, "
                     f"SQLite autocommit insert {1e6 / median(base):.0f} us")
    return fig
