"""Check a built walogs wheel: manylinux tag, compiled module, stubs, no build junk.

Usage: python tools/check_wheel.py dist/walogs-*.whl
Exits non-zero with one line per problem.
"""

from __future__ import annotations

import os
import sys
import zipfile

REQUIRED = ("walogs/__init__.py", "walogs/_frame_py.py", "walogs/_frame.pyi", "walogs/py.typed")
JUNK_SUFFIXES = (".pyx", ".pxd", ".c", ".h", ".html", ".o", ".pyc")


def problems(path: str) -> list[str]:
    """Everything wrong with the wheel at ``path`` (empty when it is fine)."""
    found = []
    name = os.path.basename(path)
    if "manylinux" not in name:
        found.append(f"{name}: no manylinux platform tag (was it repaired with auditwheel?)")
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
    for required in REQUIRED:
        if required not in names:
            found.append(f"{name}: missing {required}")
    if not any(n.startswith("walogs/_frame.") and n.endswith(".so") for n in names):
        found.append(f"{name}: no compiled walogs/_frame*.so")
    for member in names:
        if member.endswith(JUNK_SUFFIXES) or member.startswith(("tests/", "build/", "benchmarks/")) or "__pycache__" in member:
            found.append(f"{name}: build junk {member}")
    return found


def main() -> int:
    wheels = sys.argv[1:]
    if not wheels:
        print("usage: check_wheel.py WHEEL...", file=sys.stderr)
        return 2
    failed = [p for w in wheels for p in problems(w)]
    for problem in failed:
        print(problem, file=sys.stderr)
    if not failed:
        for w in wheels:
            print(f"ok: {os.path.basename(w)} ({os.path.getsize(w) // 1024} KiB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
