"""What an installation says about itself: the compiled modules or a loud fallback.

Each case copies the installed ``walogs`` package (the source tree in the
pure-Python pass, site-packages in the wheel pass) into a temporary folder,
removes or breaks a compiled module there, and imports it in a child process.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import walogs

PACKAGE = Path(walogs.__file__).parent
EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.so
# The child prints what it runs; the logging setup makes the walogs logger's line recognisable.
PROBE = (
    "import logging, warnings; warnings.simplefilter('always');"
    "logging.basicConfig(format='LOG %(name)s %(levelname)s %(message)s');"
    "import walogs; print('IMPL', walogs.IMPLEMENTATION, walogs.BUILD_INFO.writer, walogs.BUILD_INFO.crc)"
)


def _copy_package(tmp_path: Path, keep_compiled: tuple[str, ...] = ()) -> Path:
    """A copy of walogs in ``tmp_path/site`` holding only the compiled modules named."""
    site = tmp_path / "site"
    target = site / "walogs"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.html"))
    for name in keep_compiled:
        built = sorted(PACKAGE.glob(f"{name}.*.so"))
        if not built:
            pytest.skip(f"no compiled walogs.{name} in {PACKAGE} to copy: this installation is pure Python")
        shutil.copy(built[0], target / built[0].name)
    return site


def _import_in_child(site: Path, pure: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WALOGS_PURE_PYTHON"}
    env["PYTHONPATH"] = str(site)
    if pure:
        env["WALOGS_PURE_PYTHON"] = "1"
    # cwd=site: `python -c` puts the working directory first on sys.path.
    return subprocess.run([sys.executable, "-c", PROBE], cwd=site, env=env, capture_output=True, text=True,
                          timeout=60, check=True)


def test_never_built_codec_warns_once_on_import_and_on_the_logger(tmp_path):
    done = _import_in_child(_copy_package(tmp_path))
    assert "IMPL python walogs._writer_py zlib (Python)" in done.stdout
    assert done.stderr.count("RuntimeWarning: walogs is running a pure-Python fallback") == 1, done.stderr
    assert done.stderr.count("LOG walogs WARNING walogs is running a pure-Python fallback") == 1, done.stderr
    assert "walogs._frame was never built" in done.stderr
    assert "WALOGS_PURE_PYTHON=1" in done.stderr


def test_codec_that_fails_to_load_warns_with_the_loader_error(tmp_path):
    site = _copy_package(tmp_path)
    (site / "walogs" / f"_frame{EXTENSION}").write_bytes(b"not an ELF file")
    done = _import_in_child(site)
    assert "IMPL python" in done.stdout
    assert "walogs._frame is installed but could not be loaded" in done.stderr, done.stderr
    assert "RuntimeWarning" in done.stderr and "LOG walogs WARNING" in done.stderr


def test_missing_compiled_writer_is_named_and_the_twin_runs(tmp_path):
    done = _import_in_child(_copy_package(tmp_path, keep_compiled=("_frame",)))
    assert "IMPL cython walogs._writer_py" in done.stdout
    assert "walogs._writer was never built" in done.stderr, done.stderr
    assert "walogs._frame" not in done.stderr.replace("walogs._frame_py", "")


def test_asking_for_the_fallback_is_quiet(tmp_path):
    done = _import_in_child(_copy_package(tmp_path), pure=True)
    assert "IMPL python walogs._writer_py" in done.stdout
    assert done.stderr == ""


def test_build_info_names_what_runs():
    info = walogs.BUILD_INFO
    assert info.implementation == walogs.IMPLEMENTATION
    assert info.writer == walogs._impl.SegmentWriter.__module__
    assert info.shared_writer == walogs._impl.SharedWriter.__module__
    assert info.codec == walogs._impl.codec.__name__
    if walogs.IMPLEMENTATION == "cython":
        assert info.shared_writer == "walogs._shared_writer"
        assert info.crc in ("libdeflate", "zlib")
        assert info.fallback is None
    else:
        assert info.crc == "zlib (Python)"
        assert "WALOGS_PURE_PYTHON=1" in (info.fallback or "")
    assert info.crc in info.describe()
