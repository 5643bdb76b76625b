#!/usr/bin/env python3
"""What one abi3 wheel would cost: the limited-API build against the full one.

Usage::

    .venv/bin/python benchmarks/abi3_cost.py [--rounds 5] [--seconds 1.0]

Builds the compiled modules twice with the same compiler and flags, once
against the full C API and once with ``Py_LIMITED_API`` (3.11, the first
version whose limited API has the buffer protocol the codec needs), into
``build/abi3-cost/``; then times scans and appends of each in child
processes, alternating the two builds round by round, and prints the medians
and their ratio. The limited build needs ``benchmarks/abi3/limited_shim.h``
for three macros the codec uses that the limited API lacks (a real port would
replace them the same way: a function call instead of a struct access).

This decided that walogs ships one wheel per Python version, not one abi3
wheel: see the "Wheels" section of README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "abi3-cost"
SHIM = ROOT / "benchmarks" / "abi3" / "limited_shim.h"

BUILD = r"""
import sys
from setuptools import Extension, setup
from Cython.Build import cythonize
limited = sys.argv.pop(1) == "abi3"
macros = [("WALOGS_HAVE_LIBDEFLATE", "1")] + ([("Py_LIMITED_API", "0x030B0000")] if limited else [])
flags = ["-O2"] + (["-include", sys.argv.pop(1)] if limited else [])
codec = Extension("walogs._frame", ["walogs/_frame.pyx"], include_dirs=["walogs"], define_macros=macros,
                  libraries=["deflate"], extra_compile_args=flags, py_limited_api=limited)
writer = Extension("walogs._writer", ["walogs/_writer.pyx"], define_macros=macros, extra_compile_args=flags,
                   extra_link_args=["-pthread"], py_limited_api=limited)
directives = {"language_level": 3, "binding": True, "cdivision": True, "annotation_typing": False}
setup(name="walogs-abi3-cost", packages=[], script_args=sys.argv[1:],
      ext_modules=cythonize([codec, writer], compiler_directives=directives, build_dir=sys.argv[-1] + "/c", force=True, quiet=True))
"""

# Runs in a child whose sys.path starts with one build; prints one JSON line.
MEASURE = r"""
import json, os, sys, tempfile, time
import walogs
from walogs import Wal, WalConfig, WalReader
assert walogs.IMPLEMENTATION == "cython", walogs.IMPLEMENTATION
seconds = float(sys.argv[1])
entry = b"x" * 100
batch = [entry] * 1000
out = {}
with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
    with Wal.open(tmp + "/a", WalConfig(sync="none")) as wal:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(1000):
                wal.append(entry)
            n += 1000
        out["append_none"] = n / (time.perf_counter() - t0)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            wal.append_batch(batch)
            n += 1000
        out["batch_1000"] = n / (time.perf_counter() - t0)
    reader = WalReader(tmp + "/a")
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        n = sum(1 for _ in reader.iter())
        best = max(best, n / (time.perf_counter() - t0))
    reader.close()
    out["reader_iter"] = best
    t0 = time.perf_counter()
    with Wal.open(tmp + "/a", WalConfig(sync="none")) as wal:
        pass
    size = sum(os.path.getsize(os.path.join(tmp + "/a", f)) for f in os.listdir(tmp + "/a"))
    out["open_scan_MBps"] = size / (time.perf_counter() - t0) / 1e6
print(json.dumps(out))
"""


def build(kind: str) -> Path:
    """Build the compiled modules of ``kind`` ("full" or "abi3"); return the tree to import."""
    tree = OUT / kind
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "walogs").mkdir(parents=True)
    for source in (ROOT / "walogs").glob("*.py"):
        shutil.copy(source, tree / "walogs" / source.name)
    args = [kind] + ([str(SHIM)] if kind == "abi3" else [])
    args += ["-q", "build_ext", "-b", str(tree), "-t", str(OUT / f"{kind}-tmp"), str(OUT / f"{kind}-c")]
    # build_ext takes no positional argument: the last one only names Cython's output folder.
    script = BUILD.replace('script_args=sys.argv[1:]', 'script_args=sys.argv[1:-1]')
    subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    built = sorted(p.name for p in (tree / "walogs").glob("*.so"))
    print(f"{kind}: {', '.join(built)}", file=sys.stderr)
    return tree


def measure(tree: Path, seconds: float) -> dict[str, float]:
    """One round of every figure with the build in ``tree``, in a fresh child process."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("WALOGS_PURE_PYTHON", None)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(seconds)], env=env, cwd=tempfile.gettempdir(),
                          check=True, capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    trees = {kind: build(kind) for kind in ("full", "abi3")}
    runs: dict[str, list[dict[str, float]]] = {"full": [], "abi3": []}
    for r in range(args.rounds):
        order = ("full", "abi3") if r % 2 == 0 else ("abi3", "full")
        for kind in order:
            runs[kind].append(measure(trees[kind], args.seconds))
    print("| figure | full C API | limited API (abi3) | abi3 / full |")
    print("| --- | ---: | ---: | ---: |")
    for name in runs["full"][0]:
        full = statistics.median(run[name] for run in runs["full"])
        abi3 = statistics.median(run[name] for run in runs["abi3"])
        print(f"| {name} | {full:,.0f} | {abi3:,.0f} | {abi3 / full:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
