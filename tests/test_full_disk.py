"""A full file system, for real: a small tmpfs mounted for the test (needs root).

Nothing here is mocked: the kernel says ENOSPC. tmpfs is the sharpest case,
since creating a file or a directory costs no data page there, so an open
gets as far as the first byte it writes; and a page of a shared mapping that
cannot be allocated is SIGBUS on the first store, which a test can only see
from outside the process that dies.

- Issue #17, item 5: opening a new log on a full file system must raise
  OSError(ENOSPC) and leave no half-made log (it died of SIGBUS: VISIBLE was
  sized with ftruncate, a hole, then mapped and stored into).
- Issue #17, item 4: checkpoint is how a user gets space back, so on a full
  disk it must still delete what it may, must not poison the writer for a
  failure that lost nothing, must leave no temp file, and LSNs must still never
  restart (P1).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid

import pytest
from _damage import segments_of
from _procs import ROOT, run_python
from conftest import entry

import walogs
from walogs import _io


def _mount_tmpfs(where, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root; this test cannot fake ENOSPC")
    where.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", f"walogs-{uuid.uuid4().hex[:8]}",
                          str(where)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip() or out.returncode}); "
                    "a real full file system is needed for this test")


def _unmount(where) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs mounted at a fresh directory, unmounted afterwards."""
    where = tmp_path / "fs"
    _mount_tmpfs(where, "4m")
    try:
        yield where
    finally:
        _unmount(where)


def fill(fs) -> str:
    """Fill the file system to the last byte with one file; returns its path."""
    path = os.path.join(fs, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        chunk = bytes(64 * 1024)
        while True:
            try:
                if os.write(fd, chunk) < len(chunk):
                    chunk = chunk[:1]
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2] or chunk[:1]
    finally:
        os.close(fd)
    probe = os.path.join(fs, "probe")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as info:
            os.write(fd, b"x")
        assert info.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
        os.unlink(probe)
    return path


_OPEN_CHILD = r"""
import errno, json, os, sys
import walogs
try:
    walogs.Wal.open(sys.argv[1]).close()
    print(json.dumps({"outcome": "opened"}))
except OSError as exc:
    print(json.dumps({"outcome": "OSError", "errno": exc.errno, "message": str(exc)}))
"""


def _open_in_child(path) -> dict:
    out = run_python(_OPEN_CHILD, path)
    assert out.returncode == 0, (
        f"the process opening a new log on a full file system died "
        f"(exit {out.returncode}{', SIGBUS' if out.returncode == -7 else ''}): {out.stderr[-2000:]}"
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("where", ["new-directory", "existing-empty-directory", "nested-new-directories"])
def test_new_log_on_full_filesystem_is_enospc_not_sigbus(small_fs, where):
    """Item 5: OSError(ENOSPC), no SIGBUS, and nothing of a log left behind (no LOCK,
    VISIBLE, segment or side file; directories the open made are gone again). Once
    there is space, the same call makes the log."""
    filler = fill(small_fs)
    log = small_fs / "log"
    if where == "existing-empty-directory":
        log.mkdir()
    elif where == "nested-new-directories":
        log = small_fs / "a" / "b" / "log"
    before = sorted(os.listdir(small_fs))
    report = _open_in_child(log)
    assert report["outcome"] == "OSError" and report["errno"] == errno.ENOSPC, report
    assert sorted(os.listdir(small_fs)) == before, "the failed open left files behind"
    if where == "existing-empty-directory":
        assert os.listdir(log) == [], "the failed open left a half-made log"
    else:
        assert not log.exists()
    os.unlink(filler)
    with walogs.Wal.open(log) as wal:
        assert wal.append(b"first") == 1


@pytest.mark.parametrize("empty_active", [False, True], ids=["entries-in-active", "active-empty"])
def test_checkpoint_on_full_filesystem_frees_space_and_keeps_writing(small_fs, empty_active):
    """Item 4: with the disk full, checkpoint deletes the segments it was asked to delete,
    raises nothing, leaves no LSN_FLOOR.tmp, and does not poison the writer: the next
    append (into the space it freed) is acknowledged. With the active segment empty, the
    checkpoint deletes every stored entry, and the LSN to continue from must still be
    durable (P1): a reopen continues after the last LSN."""
    log = small_fs / "log"
    config = walogs.WalConfig(max_segment_size=64 * 1024)
    wal = walogs.Wal.open(log, config)
    try:
        for i in range(12 * 64):  # 12 segments of 64 entries (~1 KiB frames)
            wal.append(entry(i, 1000))
        if empty_active:
            wal.rotate()
        last = wal.next_lsn - 1
        completed = wal.segment_count - 1
        fill(small_fs)
        upto = last if empty_active else last - 10
        deleted = wal.checkpoint(upto)
        assert deleted == completed
        assert not [n for n in os.listdir(log) if n.endswith(".tmp")], sorted(os.listdir(log))
        lsn = wal.append(b"after the checkpoint")  # into the space the checkpoint freed
        assert lsn == last + 1
        assert wal.durable_lsn == lsn
    finally:
        wal.close()
    with walogs.Wal.open(log, config) as wal:
        assert wal.next_lsn == last + 2
        assert list(wal)[-1] == (last + 1, b"after the checkpoint")


def test_checkpoint_on_full_filesystem_then_crash_keeps_lsns(small_fs):
    """Item 4 with P1: checkpoint everything (active empty) on a full disk, then the writer
    is killed before it appends: the next writer continues after the last LSN, it does not
    restart at 1, and the directory holds no temp file."""
    log = small_fs / "log"
    code = r"""
import sys, os, walogs
wal = walogs.Wal.open(sys.argv[1], walogs.WalConfig(max_segment_size=64 * 1024))
for i in range(300):
    wal.append(b"%04d" % i * 250)
wal.rotate()
print(wal.next_lsn - 1, flush=True)
sys.stdin.readline()           # the parent fills the disk now
print(wal.checkpoint(wal.next_lsn - 1), flush=True)
os.kill(os.getpid(), 9)
"""
    with subprocess.Popen([sys.executable, "-c", code, str(log)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT) as proc:
        try:
            last = int(proc.stdout.readline())
            fill(small_fs)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            deleted = proc.stdout.readline().strip()
            proc.wait(60)
            errors = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert deleted.isdigit() and int(deleted) > 0, (deleted, errors[-2000:])
    assert not [n for n in os.listdir(log) if n.endswith(".tmp")], sorted(os.listdir(log))
    with walogs.Wal.open(log) as wal:
        assert wal.first_lsn is None
        assert wal.next_lsn == last + 1


def test_checkpoint_on_full_filesystem_without_a_recorded_floor(small_fs):
    """Item 4, the fallback: a log with no LSN_FLOOR (as an older walogs left it) opens on a
    full disk, and a checkpoint of everything (active segment empty) cannot record the floor.
    It deletes every segment but the newest (whose last entry still says where LSNs go on,
    P1), raises OSError(ENOSPC) saying so, leaves no temp file, and the writer stays usable.
    With space again, the same checkpoint finishes, and a reopen continues the LSNs."""
    log = small_fs / "log"
    config = walogs.WalConfig(max_segment_size=64 * 1024)
    with walogs.Wal.open(log, config) as wal:
        for i in range(5 * 64):
            wal.append(entry(i, 1000))
        wal.rotate()
        last = wal.next_lsn - 1
        completed = wal.segment_count - 1
    os.unlink(log / "LSN_FLOOR")
    filler = fill(small_fs)
    wal = walogs.Wal.open(log, config)
    try:
        assert not (log / "LSN_FLOOR").exists()  # no space to create it: the open goes on without
        with pytest.raises(OSError) as info:
            wal.checkpoint(last)
        assert info.value.errno == errno.ENOSPC and "checkpoint again" in str(info.value)
        assert len(segments_of(log)) == 2 and wal.first_lsn is not None
        assert not [n for n in os.listdir(log) if n.endswith(".tmp")], sorted(os.listdir(log))
        assert wal.append(b"x") == last + 1  # not poisoned; the space freed takes it
        os.unlink(filler)
        assert wal.checkpoint(last) == 1
        assert len(segments_of(log)) == 1 and completed > 1
    finally:
        wal.close()
    with walogs.Wal.open(log, config) as wal:
        assert list(wal) == [(last + 1, b"x")]


def test_checkpoint_on_full_filesystem_keeps_the_segment_that_says_where_lsns_go_on(small_fs, monkeypatch):
    """Found in review: with no floor recorded and a full disk, a checkpoint of everything
    deleted every completed segment when the active one held entries, trusting those to say
    where LSNs go on. Under sync="none" a failed fdatasync then cuts them (they were never
    durable), and the reopen restarted LSNs from the floor of an older walogs (1 here). The
    newest completed segment is now kept whenever the floor could not be written.
    (The failed fdatasync is a wrapped call: a real EIO cannot be made to happen on demand.)"""
    log = small_fs / "log"
    config = walogs.WalConfig(max_segment_size=64 * 1024, sync="none")
    with walogs.Wal.open(log, config) as wal:
        for i in range(5 * 64):
            wal.append(entry(i, 1000))
        wal.rotate()
        last = wal.next_lsn - 1
    os.unlink(log / "LSN_FLOOR")
    filler = fill(small_fs)
    wal = walogs.Wal.open(log, config)
    try:
        os.truncate(filler, os.path.getsize(filler) - 4096)  # one page back: room for this entry only
        assert wal.append(b"unsynced") == last + 1
        with pytest.raises(OSError) as info:
            wal.checkpoint(last)
        assert info.value.errno == errno.ENOSPC
        assert len(segments_of(log)) == 2  # the newest completed segment and the active one

        def failing(fd: int) -> None:
            raise OSError(errno.EIO, "injected")

        monkeypatch.setattr(_io, "fdatasync", failing)
        with pytest.raises(OSError):
            wal.sync()  # poisons, and cuts the unsynced entry
        monkeypatch.undo()
    finally:
        wal.close()
    with walogs.Wal.open(log, config) as wal:
        assert wal.next_lsn == last + 1  # not 1: no durable LSN is handed out again
