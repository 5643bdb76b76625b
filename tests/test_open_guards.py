"""Rough edges a new user hit at ``Wal.open`` (issue #17).

- ``Wal.open("")`` made the current directory a log; an empty path is a
  ValueError now.
- ``Wal.open`` adopted any existing directory full of unrelated files; it
  now refuses a non-empty directory that holds nothing of walogs, unless the
  caller passes ``create=True``; ``create=False`` opens only an existing log.
- Deleting the newest segment by hand made the log hand out its LSNs again,
  and ``walogs verify`` called the log clean. ``LSN_FLOOR`` records the
  highest segment number made durable, so a missing tail segment is
  WalCorruptError, like a missing middle one (I11).
"""

from __future__ import annotations

import os

import pytest
from _damage import seg_name
from _procs import run_walogs
from conftest import entry, snapshot

import walogs


@pytest.mark.parametrize("path", ["", b""], ids=["str", "bytes"])
def test_empty_path_is_refused(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        walogs.Wal.open(path)
    assert os.listdir(tmp_path) == []


def _foreign(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.jpg").write_bytes(b"\xff\xd8 not a log")
    (d / "notes.txt").write_text("hello")
    return d


def test_non_empty_foreign_directory_is_refused(tmp_path):
    d = _foreign(tmp_path)
    before = snapshot(d)
    with pytest.raises(FileExistsError) as info:
        walogs.Wal.open(d)
    message = str(info.value)
    assert str(d) in message and "create=True" in message and "cat.jpg" in message
    assert snapshot(d) == before


def test_create_true_makes_a_log_in_a_non_empty_directory(tmp_path):
    d = _foreign(tmp_path)
    with walogs.Wal.open(d, create=True) as wal:
        assert wal.append(b"x") == 1
    assert (d / "cat.jpg").read_bytes() == b"\xff\xd8 not a log"
    with walogs.Wal.open(d) as wal:  # a log now: no keyword needed
        assert list(wal) == [(1, b"x")]


def test_create_false_opens_only_an_existing_log(tmp_path, log_dir):
    with pytest.raises(FileNotFoundError):
        walogs.Wal.open(log_dir, create=False)
    assert not log_dir.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        walogs.Wal.open(empty, create=False)
    assert os.listdir(empty) == []
    with walogs.Wal.open(log_dir) as wal:
        wal.append(b"a")
    with walogs.Wal.open(log_dir, create=False) as wal:
        assert list(wal) == [(1, b"a")]


def test_default_still_creates_in_missing_or_empty_directories(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for d in (tmp_path / "new" / "nested", empty):
        with walogs.Wal.open(d) as wal:
            assert wal.append(b"a") == 1


def test_create_must_be_a_bool_or_none(log_dir):
    with pytest.raises(TypeError):
        walogs.Wal.open(log_dir, create="yes")  # type: ignore[arg-type]
    assert not log_dir.exists()


# ---------------------------------------------------------------------------
# A missing tail segment


def _three_segments(log_dir) -> int:
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=1000)) as wal:
        for i in range(20):
            wal.append(entry(i, 100))
        assert wal.segment_count == 3
        return wal.next_lsn


@pytest.mark.parametrize("missing", [1, 2], ids=["newest", "two-newest"])
def test_missing_tail_segment_is_corruption(log_dir, missing):
    """The newest segment(s) deleted by hand: the open raises WalCorruptError naming the
    directory, the missing segment and what to do, changes nothing, and never hands out
    the lost LSNs again; `walogs verify` reports it (exit 1) instead of "clean"."""
    _three_segments(log_dir)
    for seq in range(3, 3 - missing, -1):
        os.unlink(log_dir / seg_name(seq))
    before = snapshot(log_dir)
    with pytest.raises(walogs.WalCorruptError) as info:
        walogs.Wal.open(log_dir)
    message = str(info.value)
    assert str(log_dir) in message and "wal-000003.log" in message and "backup" in message, message
    assert snapshot(log_dir) == before
    out = run_walogs("verify", log_dir, timeout=60)
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert b"wal-000003.log" in out.stdout + out.stderr
    with pytest.raises(walogs.WalCorruptError):
        list(walogs.WalReader(log_dir).iter())


def test_missing_active_segment_after_checkpoint_of_everything_is_corruption(log_dir):
    """Every completed segment checkpointed away, then the one left (the active segment, with
    the newest entries) deleted by hand: WalCorruptError, not an empty log."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=1000)) as wal:
        for i in range(20):
            wal.append(entry(i, 100))
        wal.checkpoint(wal.next_lsn - 1)
        assert wal.segment_count == 1 and wal.first_lsn == 17
    os.unlink(log_dir / "wal-000003.log")
    with pytest.raises(walogs.WalCorruptError, match="wal-000003.log"):
        walogs.Wal.open(log_dir)
    assert not (log_dir / "wal-000003.log").exists()


def test_missing_tail_segment_advice_works(log_dir):
    """Following the message (an empty file for the lost segment) the log opens and
    continues after the last entry it still holds."""
    _three_segments(log_dir)
    os.unlink(log_dir / "wal-000003.log")
    with pytest.raises(walogs.WalCorruptError):
        walogs.Wal.open(log_dir)
    (log_dir / "wal-000003.log").write_bytes(b"")
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=1000)) as wal:
        last = [lsn for lsn, _ in wal][-1]
        assert wal.next_lsn == last + 1 and wal.segment_count == 3


def test_rotation_then_checkpoint_everything_still_opens(log_dir):
    """The high-water mark never mistakes a checkpointed log for a damaged one."""
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=1000)) as wal:
        for i in range(20):
            wal.append(entry(i, 100))
        wal.rotate()
        assert wal.checkpoint(wal.next_lsn - 1) == 3
    with walogs.Wal.open(log_dir) as wal:
        assert wal.first_lsn is None and wal.next_lsn == 21
    assert run_walogs("verify", log_dir, timeout=60).returncode == 0
