"""Build and smoke-test one manylinux wheel per CPython 3.9-3.13 found here.

Usage: python tools/wheels_all.py --tools .venv/bin --out dist [--versions 3.9,3.13]

For each version it finds an interpreter (``python3.X`` on PATH, else
pyenv's ``versions/3.X.*``), makes a venv for it under build/wheels/, builds
the wheel with tools/build_wheel.sh (zig cc, glibc 2.17, checked by
auditwheel), installs it there and runs the codec, writer and reader suites
against it from a copy of tests/ outside the source tree. A version with no
interpreter here is reported and left out; any failure stops the run.

One wheel per version rather than one abi3 wheel: benchmarks/abi3_cost.py
measured the limited API's cost (README.md, "Wheels").
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
SMOKE_SUITES = ("tests/test_codec.py", "tests/test_wal.py", "tests/test_reader.py", "tests/test_build.py")


def find_interpreter(version: str) -> str | None:
    """A working ``python<version>``, or None when this machine has none."""
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"), reverse=True)
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    return None


def run(*args: str, cwd: Path = ROOT) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, cwd=cwd, check=True)


def build_and_test(version: str, interpreter: str, tools: Path, out: Path) -> Path:
    """Build the wheel for ``version`` into ``out``, install it into its own venv and test it."""
    venv = ROOT / "build" / "wheels" / f"py{version}"
    shutil.rmtree(venv, ignore_errors=True)
    run(interpreter, "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    run(py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
        "setuptools>=64", "wheel", "Cython>=3.0,<4", "pytest>=8", "pytest-xdist>=3", "hypothesis>=6")
    run("tools/build_wheel.sh", py, str(tools), str(out))
    tag = f"cp{version.replace('.', '')}"
    (wheel,) = sorted(out.glob(f"walogs-*-{tag}-*.whl"))
    run(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--force-reinstall", "--no-deps", str(wheel))
    workdir = venv / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(ROOT / "tests", workdir / "tests")
    (workdir / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    run(py, "-c", "import walogs; assert walogs.BUILD_INFO.fallback is None, walogs.BUILD_INFO; "
        "assert 'site-packages' in walogs.__file__; print(walogs.BUILD_INFO.describe())", cwd=workdir)
    run(py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", *SMOKE_SUITES, cwd=workdir)
    return wheel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tools", type=Path, required=True, help="the bin folder of .venv")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--versions", default=",".join(VERSIONS))
    args = parser.parse_args()
    built, missing = [], []
    for version in args.versions.split(","):
        interpreter = find_interpreter(version)
        if interpreter is None:
            missing.append(version)
            continue
        built.append(build_and_test(version, interpreter, args.tools.resolve(), args.out.resolve()))
    for wheel in built:
        print(f"built and tested: {wheel.name}")
    if missing:
        print(f"no interpreter here for Python {', '.join(missing)}: no wheel built for it")
    return 0 if built else 1


if __name__ == "__main__":
    sys.exit(main())
