"""Check a built walogs wheel: platform tag, compiled modules, stripped, stubs, no build junk.

Usage: python tools/check_wheel.py [--tag manylinux_2_17_x86_64] dist/walogs-*.whl
Exits non-zero with one line per problem.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile

REQUIRED = ("walogs/__init__.py", "walogs/_frame_py.py", "walogs/_frame.pyi", "walogs/py.typed")
JUNK_SUFFIXES = (".pyx", ".pxd", ".c", ".h", ".html", ".o", ".pyc")
COMPILED = ("walogs/_frame.", "walogs/_writer.", "walogs/_shared_writer.")
# Section names that only an unstripped ELF file carries.
UNSTRIPPED_SECTIONS = (b".symtab\x00", b".debug_info\x00")


def problems(path: str, tag: str | None = None) -> list[str]:
    """Everything wrong with the wheel at ``path`` (empty when it is fine).

    ``tag``: the platform tag the wheel must carry (else any manylinux one).
    """
    found = []
    name = os.path.basename(path)
    if tag is not None and tag not in name:
        found.append(f"{name}: not tagged {tag}")
    if "manylinux" not in name:
        found.append(f"{name}: no manylinux platform tag (was it repaired with auditwheel?)")
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        for module in COMPILED:
            shared = [n for n in names if n.startswith(module) and n.endswith(".so")]
            if not shared:
                found.append(f"{name}: no compiled {module[:-1]}*.so")
            for member in shared:
                body = wheel.read(member)
                if any(section in body for section in UNSTRIPPED_SECTIONS):
                    found.append(f"{name}: {member} is not stripped ({len(body) // 1024} KiB)")
    for required in REQUIRED:
        if required not in names:
            found.append(f"{name}: missing {required}")
    for member in names:
        if member.endswith(JUNK_SUFFIXES) or member.startswith(("tests/", "build/", "benchmarks/")) or "__pycache__" in member:
            found.append(f"{name}: build junk {member}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description="Check built walogs wheels.")
    parser.add_argument("--tag", help="the platform tag every wheel must carry")
    parser.add_argument("wheels", nargs="+", metavar="WHEEL")
    args = parser.parse_args()
    wheels = args.wheels
    failed = [p for w in wheels for p in problems(w, args.tag)]
    for problem in failed:
        print(problem, file=sys.stderr)
    if not failed:
        for w in wheels:
            print(f"ok: {os.path.basename(w)} ({os.path.getsize(w) // 1024} KiB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
