"""Measurements that must run in a process of their own, started by the figures and probe.py.

Usage: ``python benchmarks/_worker.py TASK JSON_ARGS``. The worker prints one
line ``RESULT <json>`` on stdout when it is done (other lines are protocol
messages such as ``READY``). The codec is chosen when walogs is imported, so
the caller picks it with the environment (WALOGS_PURE_PYTHON=1 or not); each
result names the implementation that actually ran.

Tasks:

iter     time one WalReader.iter (or Wal.iter) pass over a log
rss      peak RSS growth while iterating a log
follow   follow a live log, timestamp each yield (for follow_latency)
scale    wait for "go" on stdin, then iterate (for reader_scaling)
layers   ns per entry at each layer of iteration, from the codec up (for probe.py iter)
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _result(payload: dict) -> None:
    sys.stdout.write("RESULT " + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def task_iter(args: dict) -> None:
    import walogs

    path = args["path"]
    api = args.get("api", "reader")
    repeats = int(args.get("repeats", 1))
    runs = []
    count = 0
    for _ in range(repeats):
        count = 0
        t0 = time.perf_counter()
        if api == "wal":
            wal = walogs.Wal.open(path, walogs.WalConfig(sync="none"))
            try:
                for _lsn, _data in wal.iter():
                    count += 1
            finally:
                wal.close()
        else:
            reader = walogs.WalReader(path)
            for _lsn, _data in reader.iter():
                count += 1
            reader.close()
        runs.append(time.perf_counter() - t0)
    _result({"implementation": walogs.IMPLEMENTATION, "count": count, "seconds": runs})


def task_rss(args: dict) -> None:
    import walogs

    path = args["path"]
    after_import_rss = _vm_rss_kib()
    after_import_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count = 0
    nbytes = 0
    t0 = time.perf_counter()
    reader = walogs.WalReader(path)
    for _lsn, data in reader.iter():
        count += 1
        nbytes += len(data)
    reader.close()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    _result({
        "implementation": walogs.IMPLEMENTATION,
        "count": count,
        "payload_bytes": nbytes,
        "seconds": seconds,
        "rss_after_import_kib": after_import_rss,
        "maxrss_after_import_kib": after_import_max,
        "maxrss_peak_kib": peak,
        "rss_end_kib": _vm_rss_kib(),
    })


def task_follow(args: dict) -> None:
    import walogs

    path = args["path"]
    stop = args.get("stop", "STOP").encode()
    timeout = float(args.get("timeout", 60.0))
    clock = time.perf_counter_ns
    lsns: list[int] = []
    stamps: list[int] = []
    ready = False
    reader = walogs.WalReader(path)
    for lsn, data in reader.follow(start=1, timeout=timeout):
        now = clock()
        if data == stop:
            break
        if not ready:
            # The writer's warm-up entry: from now on the writer may start its samples.
            ready = True
            sys.stdout.write("READY\n")
            sys.stdout.flush()
            continue
        lsns.append(lsn)
        stamps.append(now)
    reader.close()
    _result({"implementation": walogs.IMPLEMENTATION, "lsns": lsns, "t_ns": stamps})


def task_scale(args: dict) -> None:
    import walogs

    path = args["path"]
    reader = walogs.WalReader(path)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if line.strip() != "go":
        return
    count = 0
    t0 = time.perf_counter_ns()
    for _lsn, _data in reader.iter():
        count += 1
    t1 = time.perf_counter_ns()
    reader.close()
    _result({"implementation": walogs.IMPLEMENTATION, "count": count, "t0_ns": t0, "t1_ns": t1})


def task_layers(args: dict) -> None:
    import os

    import walogs
    from walogs._impl import codec

    path = args["path"]
    entries = int(args["entries"])
    first = min(n for n in os.listdir(path) if n.startswith("wal-"))
    with open(os.path.join(path, first), "rb") as f:
        # one warm chunk (_segments.CHUNK), as Wal.open's scan reads one; it may end mid-frame (the scan stops there)
        view = memoryview(bytearray(f.read(4 << 20)))
    per_chunk = codec.scan(view, 0, 0)[1]
    rounds = max(1, entries // per_chunk)
    ready = [(i, b"x" * 100) for i in range(per_chunk)]

    def loop_only() -> int:
        c = 0
        for _ in range(rounds):
            for _lsn, _data in ready:
                c += 1
        return c

    def scan_only() -> int:
        return sum(codec.scan(view, 0, 0)[1] for _ in range(rounds))

    def frame_reader() -> int:
        c = 0
        for _ in range(rounds):
            for _lsn, _data in codec.FrameReader(view, 0, 0, 0):
                c += 1
        return c

    def reader() -> int:
        c = 0
        with walogs.WalReader(path) as r:
            for _lsn, _data in r.iter():
                c += 1
        return c

    out: dict = {"implementation": walogs.IMPLEMENTATION}
    for name, fn in (("for-loop over ready (lsn, bytes) tuples", loop_only),
                     ("codec.scan (validate only, no objects)", scan_only),
                     ("codec.FrameReader over one warm chunk", frame_reader),
                     ("WalReader.iter of the whole log", reader)):
        best = None
        for _ in range(5):
            t = time.perf_counter()
            count = fn()
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        out[name] = best / count * 1e9
    _result(out)


TASKS = {"iter": task_iter, "rss": task_rss, "follow": task_follow, "scale": task_scale, "layers": task_layers}


def main() -> None:
    task = sys.argv[1]
    args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    TASKS[task](args)


if __name__ == "__main__":
    main()
