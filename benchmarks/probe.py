#!/usr/bin/env python3
"""Where the time goes: breakdowns of walogs' own code behind the figures that run.py compares.

Usage::

    python3 benchmarks/probe.py [always] [none] [batch] [iter] [--quick] [--dir DIR]

Every probe measures walogs itself (no sketches of other designs: what those
taught is in benchmarks/README.md, "What the probes taught"). ``always`` reads
the writer's own fdatasync count and time (``Wal._writer.syncs`` /
``sync_seconds``): wrapping ``walogs._io.fdatasync`` would switch the compiled
writer to its test seam. Numbers from a shared machine are noisy: read them as
proportions, and compare within one run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
import timeit
from pathlib import Path

# Measure the walogs built in place by `make build`, whatever PYTHONPATH says.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from figures.batch_1000 import BATCH, batch_side, sqlite_side
from harness import FULL, QUICK, Bench, median, run_worker, timed_loop

import walogs
from walogs import _format, _impl


def ns_per_call(stmt: str, env: dict, number: int = 100_000) -> float:
    """Best of 5 repeats, in ns per call."""
    return min(timeit.repeat(stmt, globals=env, number=number, repeat=5)) / number * 1e9


def top_profile(fn, lines: int = 12) -> str:
    """The ``lines`` functions ``fn`` spent the most own time in, as cProfile prints them."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(lines)
    text = out.getvalue()
    return text[text.index("ncalls"):] if "ncalls" in text else text


def probe_none(b: Bench) -> None:
    """The cost of each step of Wal.append with sync="none", and a profile of 100k appends."""
    print("== append sync=\"none\": cost of each step of Wal.append (ns per call, best of 5) ==")
    # One segment of any size: writer.append alone would otherwise rotate (and sync) now and then.
    wal = walogs.Wal.open(b.fresh("none"), walogs.WalConfig(sync="none", max_segment_size=None))
    fd = os.open(b.fresh("raw"), os.O_WRONLY | os.O_CREAT, 0o644)
    env = {"wal": wal, "data": b.payload, "frame": b.frame, "fd": fd, "os": os, "codec": _impl.codec,
           "PUBLISHED": _format.VISIBLE_PUBLISHED,
           "pub": wal._publisher, "writer": wal._writer}
    writer_alone = f"  the writer's append alone ({type(wal._writer).__module__})"
    steps = {
        "Wal.append (whole call)": "wal.append(data)",
        writer_alone: "writer.append(data)",
        "os.write(fd, 116 B) (the baseline)": "os.write(fd, frame)",
        "os.pwrite(fd, 116 B, off)": "os.pwrite(fd, frame, 0)",
        "codec.encode(lsn, data)": "codec.encode(1, data)",
        "codec.pack_visible into the mapping": "codec.pack_visible(pub._map, PUBLISHED, 1, 5, 100)",
    }
    ns = {}
    for label, stmt in steps.items():
        ns[label] = ns_per_call(stmt, env)
        print(f"  {ns[label]:8.0f}  {label}")
    whole, alone = ns["Wal.append (whole call)"], ns[writer_alone]
    print(f"  -> append = the writer's {alone:.0f} (pwrite ~{ns['os.pwrite(fd, 116 B, off)']:.0f}, encode and "
          f"publish inside it) + Wal.append's own {whole - alone:.0f} ns; "
          f"os.write alone {ns['os.write(fd, 116 B) (the baseline)']:.0f} ns")
    append, data = wal.append, b.payload

    def loop() -> None:
        for _ in range(100_000):
            append(data)
    print("  cProfile of 100k appends (profiler overhead inflates small functions):")
    print("    " + top_profile(loop).rstrip().replace("\n", "\n    "))
    wal.close()
    os.close(fd)


def probe_always(b: Bench, rounds: int = 6) -> None:
    """A durable append from one thread: its fdatasync against everything else, beside a raw loop's."""
    seconds = b.sizes.durable_seconds / 4
    print("== durable append, 1 thread: fdatasync vs the rest (us per append; walogs and os.write+fdatasync "
          f"alternate in {seconds:g} s runs) ==")
    wal = walogs.Wal.open(b.fresh("always"))
    fd = os.open(b.fresh("always-raw"), os.O_WRONLY | os.O_CREAT, 0o644)
    writer = wal._writer
    busy = [0.0]

    def raw_append(frame: bytes) -> None:
        os.write(fd, frame)
        t = time.perf_counter()
        os.fdatasync(fd)
        busy[0] += time.perf_counter() - t

    rows = []
    for _ in range(rounds):
        syncs, synced = writer.syncs, writer.sync_seconds
        n, t = timed_loop(wal.append, b.payload, seconds)
        w_op, w_sync = t / n * 1e6, (writer.sync_seconds - synced) / max(writer.syncs - syncs, 1) * 1e6
        busy[0] = 0.0
        n, t = timed_loop(raw_append, b.frame, seconds)
        r_op, r_sync = t / n * 1e6, busy[0] / n * 1e6
        rows.append((w_op, w_sync, r_op, r_sync))
        print(f"  walogs {w_op:6.1f} (fdatasync {w_sync:6.1f} + rest {w_op - w_sync:5.1f}) | "
              f"raw {r_op:6.1f} (fdatasync {r_sync:6.1f} + rest {r_op - r_sync:5.1f})  -> {r_op / w_op:.2f}x")
    wal.close()
    os.close(fd)
    w_op, w_sync, r_op, r_sync = (median(list(col)) for col in zip(*rows))
    print(f"  -> medians: walogs spends {w_op - w_sync:.1f} us per append outside fdatasync, the raw loop "
          f"{r_op - r_sync:.1f} us; fdatasync {w_sync:.1f} vs {r_sync:.1f} us. 0.9x of the raw loop "
          f"allows walogs {r_op / 0.9 - r_op:.1f} us more per append than the raw loop")


def probe_batch(b: Bench, rounds: int = 2) -> None:
    """append_batch(1000) and an SQLite transaction of 1000, each without and with its sync."""
    seconds = b.sizes.durable_seconds / 4
    print(f"== append_batch({BATCH}) vs SQLite transaction: CPU part and sync part "
          f"(ms per batch, {seconds:g} s each) ==")
    rows = [(x,) for x in b.pool[:BATCH]]
    encode = ns_per_call("codec.encode_batch(1, items)", {"codec": _impl.codec, "items": b.pool[:BATCH]}, 200) / 1e6

    def ms_per_batch(side) -> float:
        return 1e3 * BATCH / side.rate(seconds)

    for rnd in range(rounds):
        w_none, w_always = ms_per_batch(batch_side(b, "none")), ms_per_batch(batch_side(b, "always"))
        s_off, s_full = ms_per_batch(sqlite_side(b, rows, "OFF")), ms_per_batch(sqlite_side(b, rows, "FULL"))
        print(f"  round {rnd + 1}: walogs sync=none {w_none:.3f} ms (encode_batch alone {encode:.3f} ms), "
              f"sync=always {w_always:.3f} ms -> sync part {w_always - w_none:.3f} ms")
        print(f"           SQLite synchronous=OFF {s_off:.3f} ms, FULL {s_full:.3f} ms -> sync part "
              f"{s_full - s_off:.3f} ms; ratio FULL/always {s_full / w_always:.2f}x")


def probe_iter(b: Bench) -> None:
    """ns per entry at each layer of iteration, compiled and pure Python (fresh process each)."""
    entries = b.sizes.iter_entries
    print(f"== iteration of {entries:,} entries: ns per entry at each layer (best of 5, fresh process each) ==")
    path = b.log_with(entries)
    results = {}
    for pure in (False, True):
        res = run_worker("layers", {"path": path, "entries": entries}, pure=pure)
        results[res.pop("implementation")] = res
    cy, py = results["cython"], results["python"]
    print(f"  {'layer':48} {'cython':>8} {'python':>8}  (ns/entry)")
    for layer in cy:
        print(f"  {layer:48} {cy[layer]:8.0f} {py[layer]:8.0f}")
    top, fr = "WalReader.iter of the whole log", "codec.FrameReader over one warm chunk"
    print(f"  -> compiled/pure: FrameReader alone {py[fr] / cy[fr]:.1f}x, through WalReader.iter "
          f"{py[top] / cy[top]:.1f}x; compiled, the layers above FrameReader add {cy[top] - cy[fr]:.0f} ns/entry")


PROBES = {"always": probe_always, "none": probe_none, "batch": probe_batch, "iter": probe_iter}


def main() -> int:
    """The command line: run the chosen probes (default all) in a temporary directory."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="*", help=f"{', '.join(PROBES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="run.py --quick's sizes: shorter runs, a smaller log")
    parser.add_argument("--dir", help="parent of the temporary work directory")
    args = parser.parse_args()
    what = args.what or list(PROBES)
    bad = [w for w in what if w not in PROBES]
    if bad:
        parser.error(f"unknown probe(s): {', '.join(bad)}; choose from {', '.join(PROBES)}")
    work = tempfile.mkdtemp(prefix="walogs-probe-", dir=args.dir)
    try:
        print(f"walogs {walogs.IMPLEMENTATION}, python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}")
        bench = Bench(QUICK if args.quick else FULL, work)
        for name in what:
            PROBES[name](bench)
            print()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
