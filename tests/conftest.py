"""Shared fixtures. The suite runs once per implementation (``make test`` runs
it with and without WALOGS_PURE_PYTHON=1); here we check that the one under
test is really the one asked for."""

from __future__ import annotations

import os
import struct
import zlib

import pytest

import walogs

PURE = os.environ.get("WALOGS_PURE_PYTHON", "") not in ("", "0")


def pytest_report_header(config: pytest.Config) -> str:
    return f"walogs implementation: {walogs.IMPLEMENTATION}"


def pytest_sessionstart(session: pytest.Session) -> None:
    # Like aiokafka's conftest: a missing extension must not pass silently as "python".
    expected = "python" if PURE else "cython"
    if walogs.IMPLEMENTATION != expected:
        raise pytest.UsageError(
            f"walogs.IMPLEMENTATION is {walogs.IMPLEMENTATION!r}, expected {expected!r}: "
            "build the extension (make build) or set WALOGS_PURE_PYTHON=1"
        )


def make_frame(lsn: int, data: bytes) -> bytes:
    """A frame built independently of walogs, straight from FORMAT.md (I1)."""
    crc = zlib.crc32(struct.pack("<I", len(data)) + struct.pack("<Q", lsn) + data)
    return struct.pack("<IIQ", len(data), crc, lsn) + data


@pytest.fixture
def log_dir(tmp_path):
    """A path for a log directory that does not exist yet."""
    return tmp_path / "log"


def entry(i: int, size: int = 100) -> bytes:
    """Deterministic, distinct entry bytes for index ``i``."""
    head = b"%08d:" % i
    return (head * (size // len(head) + 1))[:size] if size >= len(head) else head[:size]


def snapshot(directory) -> dict[str, tuple[bytes, int, int]]:
    """Every file's bytes, size and mtime (ns), to prove a call changed nothing."""
    out = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        st = os.stat(path)
        with open(path, "rb") as f:
            out[name] = (f.read(), st.st_size, st.st_mtime_ns)
    return out


STRESS = os.environ.get("WALOGS_STRESS", "") not in ("", "0")
"""`make stress` sets WALOGS_STRESS=1: suites run their long versions."""


def scale(per_commit: int, stress: int) -> int:
    """A case count: the per-commit size under `make test`, the long one under `make stress`.

    WALOGS_STRESS may also be a number, multiplying the stress size.
    """
    if not STRESS:
        return per_commit
    factor = os.environ["WALOGS_STRESS"]
    return stress * (int(factor) if factor.isdigit() and int(factor) > 1 else 1)
