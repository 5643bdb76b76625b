#!/usr/bin/env python3
"""walogs benchmarks: every figure as a ratio against a baseline measured in the same run.

Usage::

    python3 benchmarks/run.py                 # everything (< 10 min on 2 cores)
    python3 benchmarks/run.py --quick         # small sizes, a smoke test (~1 min)
    python3 benchmarks/run.py --only append_always,batch_1000
    python3 benchmarks/run.py --list          # the figures and their targets

Prints a Markdown table, writes benchmarks/results/results.json and, when
matplotlib is importable, benchmarks/results/results.png (neither is
committed). Works in a temporary directory (on the filesystem of /tmp unless
--dir says otherwise) and removes it. The figures are registered in
benchmarks/figures/__init__.py; how they measure is in harness.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

# Measure the walogs built in place by `make build`, whatever PYTHONPATH says.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import report
from figures import FIGURES
from harness import FULL, QUICK, Bench, Figure, Spec, log

import walogs


def run_figure(spec: Spec, bench: Bench) -> Figure:
    """Measure one figure; a figure that raises comes back with its error, so the others still run."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        fig = spec.measure(bench, spec)
    except Exception as exc:  # noqa: BLE001  (one broken figure must not hide the others)
        traceback.print_exc()
        fig = Figure(spec, error=f"{type(exc).__name__}: {exc}")
    fig.seconds = time.perf_counter() - t0
    fig.data["loadavg_1min_before"] = load
    for row in fig.rows:
        log(f"  {row.label}: {row.subject} vs {row.baseline} -> {report.fmt_ratio(row)} "
            f"(target {row.target}: {report.fmt_met(row.met)})")
    log(f"  ({fig.seconds:.1f} s)")
    return fig


def main(argv: list[str] | None = None) -> int:
    """The command line: run the chosen figures, print the table, write results.json and the chart."""
    by_name = {spec.name: spec for spec in FIGURES}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test (~1 minute)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these figures")
    parser.add_argument("--dir", help="parent of the temporary work directory (default: the system temp dir)")
    parser.add_argument("--repeats", type=int, help="timed runs per side (default 5, --quick 3)")
    parser.add_argument("--json", default=str(report.RESULTS / "results.json"), help="where to write the results")
    parser.add_argument("--png", default=str(report.RESULTS / "results.png"), help="where to draw the chart")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    args = parser.parse_args(argv)

    if args.list:
        for spec in FIGURES:
            print(f"{spec.name:16} {spec.target_text}")
        return 0
    chosen = FIGURES
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in by_name]
        if unknown:
            parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(by_name)}")
        chosen = [by_name[n] for n in names]
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    if walogs.IMPLEMENTATION != "cython":
        log("warning: walogs.IMPLEMENTATION is 'python' in this process (extension missing or "
            "WALOGS_PURE_PYTHON set): the in-process figures measure the fallback")

    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="walogs-bench-", dir=args.dir)
    figures: list[Figure] = []
    try:
        info = report.machine_info(workdir)
        log(f"walogs {walogs.__version__} ({walogs.IMPLEMENTATION}, crc {info['crc_backend']}), "
            f"python {info['python']}, {info['nproc']} CPUs, {info['filesystem']['type']} at {workdir}")
        bench = Bench(sizes, workdir)
        for spec in chosen:
            log(f"{spec.name} ...")
            figures.append(run_figure(spec, bench))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    info["loadavg_end"] = os.getloadavg()

    out = report.table(figures)
    print(f"\n{out}\n")
    if any(fig.notes or fig.error for fig in figures):
        print(report.notes(figures))
    print(f"\n{report.summary(info, args.quick, elapsed)}")
    results = {
        "machine": info, "quick": args.quick, "only": args.only, "sizes": dataclasses.asdict(sizes),
        "elapsed_s": round(elapsed, 1), "figures": [f.as_json() for f in figures], "table_markdown": out,
    }
    report.write_json(Path(args.json), results)
    print(f"wrote {args.json}")
    problem = report.draw(figures, Path(args.png), info, args.quick)
    print(problem if problem else f"wrote {args.png}")
    return 1 if any(f.error for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
