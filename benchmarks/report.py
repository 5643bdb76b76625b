"""What a run reports: the machine it ran on, the Markdown table, the notes, results.json and the chart."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path

from harness import ROOT, Figure, MiB, Row

import walogs

RESULTS = ROOT / "benchmarks" / "results"  # written by every run, never committed (.gitignore)


# --------------------------------------------------------------------------- machine info


def _command_output(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def fs_type(path: str) -> dict:
    """The mount point, filesystem type and device holding ``path``."""
    real = os.path.realpath(path)
    best = ("", "?", "?")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                    best = (mnt, parts[2], parts[0])
    except OSError:
        pass
    stat_f = _command_output(["stat", "-f", "-c", "%T", real]) or "?"
    return {"mount_point": best[0], "type": best[1], "device": best[2], "stat_f": stat_f}


def machine_info(workdir: str) -> dict:
    """CPU, memory, kernel, Python, walogs build, git commit and filesystem of this run."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    try:
        nproc = int(_command_output(["nproc"]) or "")
    except ValueError:
        nproc = len(os.sched_getaffinity(0))
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
            mem = f"{kib / MiB:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": nproc, "cpu_count": os.cpu_count(), "cpu": cpu, "memory": mem,
        "kernel": platform.release(), "python": platform.python_version(),
        "python_impl": platform.python_implementation(), "executable": sys.executable,
        "walogs_version": walogs.__version__, "walogs_implementation": walogs.IMPLEMENTATION,
        "crc_backend": getattr(getattr(walogs._impl, "codec", None), "_CRC_BACKEND", "n/a (pure Python: zlib)"),
        "sqlite": sqlite3.sqlite_version,
        "git_commit": _command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "?",
        "bench_dir": workdir, "filesystem": fs_type(workdir), "loadavg_start": os.getloadavg(),
    }


# --------------------------------------------------------------------------- text


def fmt_ratio(row: Row) -> str:
    """The ratio column: "0.98x [0.96–1.02]", or "(1.90x headroom)"."""
    if row.ratio is None:
        return "—"
    text = f"{row.ratio:.2f}x"
    if row.headroom:
        return f"({text} headroom)"
    if row.spread:
        text += f" [{row.spread[0]:.2f}–{row.spread[1]:.2f}]"
    return text


def fmt_met(met: bool | None) -> str:
    """The met column: yes, **NO**, or — for report-only rows."""
    return "—" if met is None else ("yes" if met else "**NO**")


def table(figures: list[Figure]) -> str:
    """The Markdown table: one line per row, one ERROR line per figure that failed."""
    lines = ["| figure | walogs | baseline | ratio [min–max of repeats] | target | met |",
             "| --- | ---: | ---: | ---: | --- | --- |"]
    for fig in figures:
        if fig.error:
            lines.append(f"| {fig.name} | error | | | {fig.spec.target_text} | **ERROR** |")
            continue
        for row in fig.rows:
            lines.append(f"| {row.label} | {row.subject} | {row.baseline} | {fmt_ratio(row)} | {row.target} "
                         f"| {fmt_met(row.met)} |")
    return "\n".join(lines)


def notes(figures: list[Figure]) -> str:
    """The lines under the table: each figure's notes and errors."""
    lines = []
    for fig in figures:
        lines += [f"- {fig.name}: {note}" for note in fig.notes]
        if fig.error:
            lines.append(f"- {fig.name}: ERROR {fig.error}")
    return "\n".join(lines)


def summary(info: dict, quick: bool, elapsed: float) -> str:
    """One line: when, how long, on what."""
    fs = info["filesystem"]
    return (f"{info['date']}: {'quick' if quick else 'full'} run, {elapsed:.0f} s; "
            f"{info['nproc']} CPUs ({info['cpu']}), python {info['python']}, walogs "
            f"{info['walogs_implementation']} (crc {info['crc_backend']}), {fs['type']} "
            f"({fs['stat_f']}), load {info['loadavg_start'][0]:.2f} -> {info['loadavg_end'][0]:.2f}")


# --------------------------------------------------------------------------- files


def write_json(path: Path, results: dict) -> None:
    """Write results.json (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def draw(figures: list[Figure], png: Path, info: dict, quick: bool) -> str | None:
    """Draw the ratios as a bar chart into ``png``; None, or why nothing was drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return "matplotlib is not importable: skipped the PNG (pip install matplotlib to get it)"
    rows = [r for f in figures if not f.error for r in f.rows if r.ratio is not None and math.isfinite(r.ratio)]
    if not rows:
        return "nothing to draw"
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(rows) + 2), 5.5))
    xs = range(len(rows))
    colors = ["#9e9e9e" if r.met is None else ("#2e7d32" if r.met else "#c62828") for r in rows]
    ax.bar(xs, [r.ratio for r in rows], color=colors, width=0.6)
    for x, r in zip(xs, rows):
        if r.target_ratio is not None:
            ax.hlines(r.target_ratio, x - 0.4, x + 0.4, colors="black", linestyles="--", linewidth=1.5)
        ax.annotate(f"{r.ratio:.2f}x", (x, r.ratio), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x" if f"{v:g}"[0] in "25" else ""))
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r.label.replace(" ", "\n", 1) + ("\n(headroom)" if r.headroom else "") for r in rows],
                       fontsize=8)
    ax.set_ylabel("ratio vs baseline (headroom = target / measured)")
    ax.set_title(f"walogs benchmarks{' (--quick)' if quick else ''}: {info['date']}, "
                 f"{info['walogs_implementation']}, {info['nproc']} CPUs, {info['filesystem']['type']}\n"
                 "bar: measured ratio; dashed: target; green met, red missed, grey report only", fontsize=9)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return None
