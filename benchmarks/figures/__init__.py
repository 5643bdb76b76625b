"""The figures ``make bench`` measures: which exist, in what order, against what, and what each must reach.

Each figure is one module here with one ``measure(bench, spec) -> Figure``.
To add a figure, write its module and add its Spec to FIGURES: nothing else
lists figures (run.py's --only and --list, the table and the chart all read
this list). benchmarks/README.md describes the method behind each figure.
"""

from __future__ import annotations

from harness import AtLeast, Below, Spec

from figures import (
    append_always,
    append_interval,
    append_none,
    append_vs_sqlite,
    batch_1000,
    compiled_iter,
    follow_latency,
    group_commit,
    iter_rss,
    open_scan,
    reader_iter,
    reader_scaling,
    rotation_latency,
    shared_writers,
)

FIGURES: list[Spec] = [
    Spec("append_always", append_always.measure,
         "durable append (sync=\"always\"), 1 thread, 100-byte entries, into a prepared segment (preallocate)",
         "os.write + os.fdatasync loop of 116-byte frames (the file grows), same filesystem",
         "appends/s", AtLeast(1.3), "os.write+fdatasync"),
    Spec("append_vs_sqlite", append_vs_sqlite.measure,
         "durable append (sync=\"always\"), 1 thread, 100-byte entries, into a prepared segment",
         "SQLite journal_mode=WAL, synchronous=FULL: one autocommit INSERT of one row per call",
         "appends/s", AtLeast(1.1), "SQLite WAL/FULL autocommit"),
    Spec("rotation_latency", rotation_latency.measure,
         "worst durable append latency across 50 rotations of 64 KiB segments, over the median append "
         "(median of repeats)",
         "—",
         "x median", Below({"": 5.0})),
    Spec("group_commit", group_commit.measure,
         "durable append, 8 threads, total throughput; with the C ceiling of group_commit_ceiling.c (report only)",
         "same walogs, 1 thread",
         "appends/s", AtLeast(4.0), "1 thread"),
    Spec("batch_1000", batch_1000.measure,
         "append_batch of 1000 x 100 B, sync=\"always\"",
         "SQLite journal_mode=WAL, synchronous=FULL: one transaction of 1000 inserts (executemany)",
         "entries/s", AtLeast(4.0), "SQLite WAL/FULL transaction"),
    Spec("append_none", append_none.measure,
         "append with sync=\"none\" (write only), 1 thread",
         "bare os.write loop of 116-byte frames",
         "appends/s", AtLeast(0.5), "bare os.write"),
    Spec("append_interval", append_interval.measure,
         "append with sync=\"interval\" (0.05 s background sync), 1 thread",
         "bare os.write loop of 116-byte frames",
         "appends/s", None),
    Spec("reader_iter", reader_iter.measure,
         "WalReader.iter of the iter_entries log (compiled codec, in process)",
         "SQLite SELECT id, data over the same rows, cursor iteration",
         "entries/s", AtLeast(3.5), "SQLite SELECT"),
    Spec("compiled_iter", compiled_iter.measure,
         "compiled WalReader.iter of the iter_entries log (fresh process)",
         "pure-Python fallback (WALOGS_PURE_PYTHON=1), same log, fresh process",
         "entries/s", AtLeast(8.0), "pure-Python fallback"),
    Spec("open_scan", open_scan.measure,
         "Wal.open of a scan_bytes log (recovery scan), warm cache",
         "read (readinto 4 MiB) + zlib.crc32 of the same files, warm cache",
         "MB/s", AtLeast(1.0), "read + zlib.crc32"),
    Spec("follow_latency", follow_latency.measure,
         "writer append return -> reader-process yield via WalReader.follow, sync=\"always\", "
         "follow_samples samples follow_interval apart",
         "—",
         "ms", Below({"p50": 1.0, "p99": 10.0})),
    Spec("iter_rss", iter_rss.measure,
         "peak RSS growth while WalReader.iter reads an rss_bytes log "
         "(fresh process, getrusage maxrss minus VmRSS after import)",
         "—",
         "MiB", Below({"": 64.0})),
    Spec("shared_vs_sqlite", shared_writers.measure_vs_sqlite,
         "shared writers: N processes each Wal.open(shared=True), durable append of 100 B (target on 4 processes)",
         "SQLite WAL, synchronous=FULL, the same N processes each inserting one row per transaction",
         "entries/s", AtLeast(2.5), "SQLite WAL/FULL, same processes"),
    Spec("shared_vs_socket", shared_writers.measure_vs_socket,
         "shared writers: N processes, durable append of 100 B",
         "a user-side writer process: producers send over a Unix socket, it append_batches what is queued",
         "entries/s", AtLeast(1.0), "socket writer"),
    Spec("shared_latency", shared_writers.measure_latency,
         "shared writers, 4 processes: latency of each durable append call",
         "—",
         "ms", Below({"p50": 1.0, "p99": 1.0})),
    Spec("shared_fairness", shared_writers.measure_fairness,
         "shared writers: fewest / most appends of one producer over a round (the worst round)",
         "—",
         "", None),
    Spec("reader_scaling", reader_scaling.measure,
         "total entries/s of N concurrent reader processes iterating the same iter_entries log",
         "1 reader process",
         "entries/s", None),
]
