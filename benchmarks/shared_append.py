"""Shared durable appends: N forked processes x M 100-byte appends, sync="always", started together.

Usage: python benchmarks/shared_append.py [--procs 1 4 8] [--appends 1500] [--repeat 3] [--impl both]

For each implementation (the compiled ``walogs._shared_writer`` and the Python
twin, chosen with WALOGS_PURE_PYTHON in a process of its own) and process count,
prints entries/s (all appends over the wall time from "go" to the last
return), p50/p99 append latency, the fdatasync calls of all processes, the
mean time one took, and the wall time per fdatasync (the group-commit cycle:
with N single-threaded producers at most N appends per sync, so entries/s is
at most N over it). The
machine may be shared: every configuration runs ``--repeat`` times, each on a
fresh log, and the table shows the median and the range.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(procs: int, appends: int, directory: str) -> dict:
    """In this process (the implementation chosen at import): one run on a fresh log."""
    from array import array

    from walogs import BUILD_INFO, Wal, WalConfig

    config = WalConfig(sync="always")
    Wal.open(directory, config).close()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pids = []
    for _ in range(procs):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(go_w)
                wal = Wal.open(directory, config, shared=True, lock_timeout=30)
                data = b"x" * 100
                lat = array("q", bytes(8 * appends))
                os.write(ready_w, b"r")
                os.read(go_r, 1)
                clock = time.perf_counter_ns
                for i in range(appends):
                    t = clock()
                    wal.append(data)
                    lat[i] = clock() - t
                syncs, sync_s = wal._writer.syncs, wal._writer.sync_seconds
                wal.close()
                payload = json.dumps({"syncs": syncs, "sync_s": sync_s, "lat": lat.tolist()}).encode()
                os.write(out_w, len(payload).to_bytes(8, "little") + payload)
            except BaseException as exc:  # report and leave without running the parent's code
                sys.stderr.write(f"child failed: {exc!r}\n")
                code = 3
            os._exit(code)
        pids.append(pid)
    os.close(go_r)
    os.close(out_w)
    for _ in range(procs):
        os.read(ready_r, 1)
    started = time.perf_counter()
    os.write(go_w, b"g" * procs)
    chunks = []
    got = b""
    with os.fdopen(out_r, "rb") as f:
        got = f.read()
    elapsed = time.perf_counter() - started
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit("a producer failed")
    while got:
        size = int.from_bytes(got[:8], "little")
        chunks.append(json.loads(got[8:8 + size]))
        got = got[8 + size:]
    lat = sorted(x for c in chunks for x in c["lat"])
    return {
        "impl": BUILD_INFO.shared_writer,
        "procs": procs,
        "rate": procs * appends / elapsed,
        "p50_ms": lat[len(lat) // 2] / 1e6,
        "p99_ms": lat[int(len(lat) * 0.99)] / 1e6,
        "syncs": sum(c["syncs"] for c in chunks),
        "sync_ms": 1e3 * sum(c["sync_s"] for c in chunks) / max(1, sum(c["syncs"] for c in chunks)),
        "cycle_ms": 1e3 * elapsed / max(1, sum(c["syncs"] for c in chunks)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--appends", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--impl", choices=["both", "python", "cython"], default="both")
    parser.add_argument("--once", nargs=2, metavar=("PROCS", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        print("RESULT " + json.dumps(run_once(int(args.once[0]), args.appends, args.once[1])))
        return 0
    impls = ["python", "cython"] if args.impl == "both" else [args.impl]
    results: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.repeat):  # interleaved, so a noisy minute hits every configuration alike
        for procs in args.procs:
            for impl in impls:
                env = {k: v for k, v in os.environ.items() if k != "WALOGS_PURE_PYTHON"}
                env["PYTHONPATH"] = ROOT
                if impl == "python":
                    env["WALOGS_PURE_PYTHON"] = "1"
                with tempfile.TemporaryDirectory(prefix="walogs-shared-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
                    done = subprocess.run([sys.executable, __file__, "--appends", str(args.appends), "--once",
                                           str(procs), os.path.join(tmp, "log")], env=env, capture_output=True,
                                          text=True, check=True, timeout=600)
                line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
                results.setdefault((impl, procs), []).append(json.loads(line[7:]))
    print(f"{'impl':8} {'procs':>5} {'entries/s (median, range)':>28} {'p50 ms':>7} {'p99 ms':>7} {'fdatasyncs':>10} "
          f"{'ms/fdatasync':>12} {'ms/sync cycle':>13}")
    for (impl, procs), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rates = [r["rate"] for r in runs]
        med = statistics.median(rates)
        mid = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
        print(f"{impl:8} {procs:>5} {med:>10.0f} ({min(rates):>6.0f}-{max(rates):>6.0f}) {mid['p50_ms']:>7.3f} "
              f"{mid['p99_ms']:>7.3f} {mid['syncs']:>10} {mid['sync_ms']:>12.3f} {mid['cycle_ms']:>13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
