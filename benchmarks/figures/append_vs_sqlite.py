"""append_vs_sqlite: a durable append from one thread, against SQLite WAL synchronous=FULL autocommit inserts.

SQLite's ``-wal`` file stops growing after its first checkpoint and is then
overwritten in place: the comparison issue #16 was opened for.
"""

from __future__ import annotations

import os
import sqlite3

from harness import Bench, Figure, Side, Spec, figure_in_slices, median, timed_loop, wal_side

from walogs import WalConfig


def sqlite_autocommit_side(b: Bench) -> Side:
    """SQLite, journal_mode=WAL, synchronous=FULL; each insert of one row is its own transaction."""

    def open_() -> tuple[str, sqlite3.Connection]:
        path = b.fresh("sqlite-autocommit") + ".db"
        conn = sqlite3.connect(path, isolation_level=None)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        assert mode == "wal", mode
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        return path, conn

    def run(state: tuple[str, sqlite3.Connection], seconds: float) -> tuple[int, float]:
        execute = state[1].execute

        def op(row: tuple) -> None:
            execute("INSERT INTO t (data) VALUES (?)", row)
        return timed_loop(op, (b.payload,), seconds)

    def close(state: tuple[str, sqlite3.Connection]) -> None:
        path, conn = state
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)

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
