"""Segments written into, not grown (issue #16): preparing, renaming, trimming, and zero tails.

The writer keeps the next segment prepared (``SEGMENT.prepared``: real zeros,
synced, by a background thread) and renames it into place at rotation; a
finished segment is trimmed to its last frame before the next one starts,
the active one at a clean close. A crash leaves the active segment with a
zero tail, which is a clean end for everyone (walogs; the Rust crate cuts it,
tests/test_interop.py). The crash images of every stage are in
tests/test_power_loss.py; here: the rules one by one, with real files, real
fsync and real SIGKILL.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading

import pytest
from _procs import run_python, run_walogs
from conftest import entry, settled

import walogs
from walogs import _floor, _io, _prealloc, _segments
from walogs._format import PREPARED_NAME, segment_name

SEGMENT = 4096


def frames_end(path) -> int:
    """Where a segment's valid frames end."""
    return _segments.scan_segment(0, str(path)).end


@pytest.fixture
def inline(monkeypatch):
    """Prepare in the writer's thread: every step in one order."""
    monkeypatch.setattr(_prealloc, "BACKGROUND", False)


def _fs_type_from_mounts(path: str) -> str:
    """The filesystem type /proc/self/mounts gives for the mount holding ``path`` (longest prefix)."""
    best, kind = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, fstype, *_ = line.split()
            point = point.replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, kind = point, fstype
    return kind


MAGIC = {"ext4": 0xEF53, "ext3": 0xEF53, "ext2": 0xEF53, "xfs": 0x58465342, "tmpfs": 0x01021994,
         "btrfs": 0x9123683E, "zfs": 0x2FC12FC1, "overlay": 0x794C7630, "ramfs": 0x858458F6}


@pytest.mark.parametrize("where", ["tmp", "shm"])
def test_preallocate_none_picks_by_filesystem(tmp_path, where):
    """statfs's f_type agrees with /proc/self/mounts; None means on where zeros pay (ext4,
    xfs), off on tmpfs and copy-on-write filesystems; True and False force it."""
    path = str(tmp_path) if where == "tmp" else "/dev/shm"
    if not os.path.isdir(path):
        pytest.skip("no /dev/shm here")
    kind = _fs_type_from_mounts(os.path.realpath(path))
    assert kind in MAGIC, f"{path} is on {kind!r}: add its magic number to this test"
    assert _prealloc.filesystem_type(path) == MAGIC[kind]
    assert _prealloc.pays_off(path, None) == (kind not in ("tmpfs", "btrfs", "zfs", "overlay", "ramfs"))
    # Only durable appends gain: under "none" and "interval" the zeros would only cost.
    assert not _prealloc.pays_off(path, None, "none") and not _prealloc.pays_off(path, None, "interval")
    assert _prealloc.pays_off(path, True, "none")
    assert _prealloc.pays_off(path, True) and not _prealloc.pays_off(path, False)
    with pytest.raises(ValueError, match="preallocate"):
        walogs.WalConfig(preallocate=1)  # type: ignore[arg-type]


def test_rotation_renames_the_prepared_segment_and_trims_the_finished_one(tmp_path, inline):
    """Each rotation renames SEGMENT.prepared (SEGMENT bytes of zeros) into place and prepares
    the next; a completed segment ends exactly at its last frame; the active one holds zeros
    past its frames until a clean close trims it and removes the prepared file."""
    log = tmp_path / "log"
    with walogs.Wal.open(log, walogs.WalConfig(max_segment_size=SEGMENT, preallocate=True)) as wal:
        assert (log / PREPARED_NAME).read_bytes() == bytes(SEGMENT)
        for i in range(100):
            wal.append(entry(i, 150))
        seqs = sorted(_segments.segment_files(str(log))[0])
        assert len(seqs) >= 4
        for seq in seqs[:-1]:
            path = log / segment_name(seq)
            assert os.path.getsize(path) == frames_end(path) > 0, segment_name(seq)
        active = log / segment_name(seqs[-1])
        assert os.path.getsize(active) == SEGMENT > frames_end(active)
        assert (log / PREPARED_NAME).read_bytes() == bytes(SEGMENT)
        assert [d for _, d in wal] == [entry(i, 150) for i in range(100)]
    assert os.path.getsize(active) == frames_end(active)
    assert not (log / PREPARED_NAME).exists()
    assert run_walogs("verify", log).returncode == 0


def test_a_rotation_never_waits_for_zeroing(tmp_path, monkeypatch):
    """While the background preparer is stuck (its fdatasync blocked), rotations go on with an
    empty new segment, as without preallocation; the stuck preparer never blocks an append."""
    release = threading.Event()
    real = _io.fdatasync

    def fdatasync(fd):
        if threading.current_thread().name.startswith("walogs-prepare"):
            release.wait(60)
        return real(fd)

    monkeypatch.setattr(_io, "fdatasync", fdatasync)
    log = tmp_path / "log"
    wal = walogs.Wal.open(log, walogs.WalConfig(max_segment_size=SEGMENT, preallocate=True))
    done = threading.Event()

    def appends():
        for i in range(60):
            wal.append(entry(i, 150))
        done.set()

    worker = threading.Thread(target=appends)
    worker.start()
    try:
        assert done.wait(60), "appends waited for the preparer"  # a hang guard
        seqs = sorted(_segments.segment_files(str(log))[0])
        assert len(seqs) >= 3
        assert all(os.path.getsize(log / segment_name(s)) == frames_end(log / segment_name(s)) for s in seqs)
    finally:
        release.set()
        worker.join(60)
        wal.close()
    with walogs.Wal.open(log) as again:
        assert [d for _, d in again] == [entry(i, 150) for i in range(60)]


@pytest.mark.parametrize("call", ["pwrite_all", "fdatasync"])
def test_eio_while_preparing_poisons_nothing_and_the_next_rotation_tries_again(tmp_path, monkeypatch, inline, call):
    """A failure while writing zeros is not the log's: the writer goes on (rotating into an
    empty segment), the half-prepared file is removed, and the next rotation prepares again."""
    real = getattr(_io, call)
    failures = []

    def failing(fd, *args):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.basename(path) == PREPARED_NAME and len(failures) < 1:
            failures.append(path)
            raise OSError(errno.EIO, "injected EIO while preparing")
        return real(fd, *args)

    monkeypatch.setattr(_io, call, failing)
    log = tmp_path / "log"
    with walogs.Wal.open(log, walogs.WalConfig(max_segment_size=SEGMENT, preallocate=True)) as wal:
        assert failures and not (log / PREPARED_NAME).exists()  # the first attempt, at open, failed
        for i in range(60):
            wal.append(entry(i, 150))
        seqs = sorted(_segments.segment_files(str(log))[0])
        assert os.path.getsize(log / segment_name(2)) == frames_end(log / segment_name(2))  # made empty, grown
        assert os.path.getsize(log / segment_name(seqs[-1])) == SEGMENT  # later ones prepared again
        assert wal.poison is None if hasattr(wal, "poison") else True
    with walogs.Wal.open(log) as again:
        assert [d for _, d in again] == [entry(i, 150) for i in range(60)]


def _crash_copy(tmp_path, entries: int = 40):
    """A directory as a crashed writer leaves it: copied while the writer is open, its active
    segment a prepared one (frames, then zeros)."""
    log, crashed = tmp_path / "log", tmp_path / "crashed"
    with settled(walogs.Wal.open(log, walogs.WalConfig(max_segment_size=SEGMENT, preallocate=True))) as wal:
        for i in range(entries):
            wal.append(entry(i, 150))
        settled(wal)
        shutil.copytree(log, crashed)
    active = crashed / segment_name(max(_segments.segment_files(str(crashed))[0]))
    assert os.path.getsize(active) == SEGMENT > frames_end(active)
    return crashed, active


def test_a_zero_tail_is_clean_for_verify_info_readers_and_the_writer(tmp_path):
    """verify exits 0 ("clean"), info says clean, a reader reads every entry, and the writer's
    open cuts nothing, keeps the zeros and writes into them."""
    crashed, active = _crash_copy(tmp_path)
    proc = run_walogs("verify", crashed)
    assert proc.returncode == 0 and proc.stdout.decode().startswith("clean"), proc.stdout + proc.stderr
    info = run_walogs("info", crashed)
    assert info.returncode == 0 and "clean" in info.stdout.decode() and "torn" not in info.stdout.decode()
    with walogs.WalReader(crashed) as reader:
        assert [d for _, d in reader] == [entry(i, 150) for i in range(40)]
    end = frames_end(active)
    with walogs.Wal.open(crashed, walogs.WalConfig(max_segment_size=SEGMENT)) as wal:
        assert wal.tail_state.clean and os.path.getsize(active) == SEGMENT
        lsn = wal.append(b"into the zeros")
        assert frames_end(active) == end + 16 + 14 and os.path.getsize(active) == SEGMENT
    assert os.path.getsize(active) == end + 30
    with walogs.Wal.open(crashed) as wal:
        assert list(wal)[-1] == (lsn, b"into the zeros")


def test_a_shared_writer_cuts_a_zero_tail_it_would_not_write_into(tmp_path):
    """Shared writers append, never write into zeros: the first one's recovery trims a zero
    tail (reported clean), so no completed segment ever carries one."""
    crashed, active = _crash_copy(tmp_path)
    end = frames_end(active)
    with walogs.Wal.open(crashed, walogs.WalConfig(max_segment_size=SEGMENT), shared=True) as wal:
        assert wal.tail_state.clean and os.path.getsize(active) == end
        for i in range(40, 80):
            wal.append(entry(i, 150))
    for seq in _segments.segment_files(str(crashed))[0]:
        path = crashed / segment_name(seq)
        assert os.path.getsize(path) == frames_end(path), segment_name(seq)
    assert run_walogs("verify", crashed).returncode == 0


_KILLED_IN_ZEROS = r"""
import mmap, os, signal, sys
import walogs
from walogs import _io, _prealloc
_prealloc.BACKGROUND = False
path, stop_at = sys.argv[1], sys.argv[2]
wal = walogs.Wal.open(path, walogs.WalConfig(max_segment_size=1 << 20, sync="none", preallocate=True))
wal.append(b"first")
wal.rotate()  # the active segment is now a prepared one: 1 MiB of zeros
for i in range(10):
    wal.append(b"%03d" % i * 80)  # 256-byte frames: the batch starts 2560 bytes in
wal.sync()
start = wal._writer.snapshot()[1]
size = 240 if stop_at == "frame" else 300  # 256-byte frames: every page boundary is a frame boundary
frame = 16 + size
real = _io.pwrite_all

def killed(fd, data, offset):
    # The kernel stops a killed write at a page boundary: only the pages before it land.
    page = mmap.PAGESIZE
    k = (offset // page + 3) * page - offset
    assert (k % frame == 0) == (stop_at == "frame") and k < len(data)
    real(fd, bytes(data)[:k], offset)
    os.kill(os.getpid(), signal.SIGKILL)

_io.pwrite_all = killed
print(start, wal.next_lsn, flush=True)
wal.append_batch([(b"%03d" % j * 100)[:size] for j in range(400)])
"""


@pytest.mark.parametrize("stop_at", ["page", "frame"])
def test_a_batch_killed_inside_zeros_is_cut_whole(tmp_path, stop_at):
    """A process killed inside a batch's write into a prepared segment leaves whole frames of
    the batch, then (a torn frame and) zeros: the file's size says nothing, yet the batch is
    all or nothing, for a reader before any open and for the writer's open. Before: the size
    rule never fired (the file was longer than the write), so both kept a prefix of the
    batch, which a caller retrying it would store twice."""
    log = tmp_path / "log"
    done = run_python(_KILLED_IN_ZEROS, log, stop_at)
    assert done.returncode == -signal.SIGKILL, done.stderr
    start, first = map(int, done.stdout.split())
    active = log / segment_name(2)
    assert os.path.getsize(active) == 1 << 20  # the zeros are there: the size tells nothing
    assert frames_end(active) > start  # whole frames of the batch reached the file
    with walogs.WalReader(log) as reader:
        assert [lsn for lsn, _ in reader][-1] == first - 1  # none of the batch
    with walogs.Wal.open(log) as wal:
        assert wal.tail_state == walogs.TailState(truncated_at=start)
        assert wal.next_lsn == first


def _fd_name(fd: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return ""


def test_a_rotating_append_leaves_the_floor_to_the_preparer(tmp_path, monkeypatch):
    """Issue #16: the high-water mark in LSN_FLOOR (docs/format.md) is recorded by the
    preparer's thread after the rotation, not by the append that rotates: that append's own
    thread never syncs LSN_FLOOR (through the ``walogs._io`` seam). The record still arrives:
    once the preparer has settled it names the active segment and the LSN after the
    completed one."""
    calls: list[tuple[str, str]] = []
    real = _io.fdatasync

    def fdatasync(fd):
        calls.append((threading.current_thread().name, _fd_name(fd)))
        return real(fd)

    monkeypatch.setattr(_io, "fdatasync", fdatasync)
    log = tmp_path / "log"
    with walogs.Wal.open(log, walogs.WalConfig(max_segment_size=SEGMENT, preallocate=True)) as wal:
        rotations, i = 0, 0
        while rotations < 3:
            settled(wal)
            before = wal.segment_count
            del calls[:]
            wal.append(entry(i, 150))
            i += 1
            if wal.segment_count == before:
                continue
            rotations += 1
            mine = [name for thread, name in calls if thread == threading.current_thread().name]
            assert not [n for n in mine if n.startswith("LSN_FLOOR")], (
                f"the rotating append synced LSN_FLOOR itself: {mine}")
            settled(wal)  # the preparer records the floor first, then zeroes
            floor = _floor.read(str(log))
            assert floor.seq == wal.segment_count
            assert floor.next_lsn == wal._completed[-1].last_lsn + 1
        assert [n for _, n in calls if n.startswith("LSN_FLOOR")], "nobody recorded the floor"


def test_checkpoint_and_a_crash_before_the_deferred_floor_update_lose_no_lsn(tmp_path):
    """P1 with the floor update deferred to the preparer's thread (here it never runs): the
    record lags behind the rotations, checkpoint records the floor itself before deleting
    every completed segment, and a writer killed before any other floor update (no close)
    leaves a log whose next writer continues after the last LSN, never below it."""
    log = tmp_path / "log"
    code = r"""
import os, sys, walogs
from walogs import _floor
wal = walogs.Wal.open(sys.argv[1], walogs.WalConfig(max_segment_size=None, preallocate=True))
wal._preparer._chore = lambda: None  # the preparer's thread never records the high-water mark
for i in range(3):
    wal.append(b"x" * 10)
    wal.rotate()
lagging = _floor.read(sys.argv[1])
assert lagging.seq < wal.segment_count, lagging
assert wal.checkpoint(wal.next_lsn - 1) == 3
print(wal.next_lsn, flush=True)
os._exit(0)  # killed: no close, no deferred update
"""
    result = run_python(code, log)
    assert result.returncode == 0, result.stderr
    next_lsn = int(result.stdout.split()[-1])
    assert next_lsn == 4
    with walogs.Wal.open(log) as wal:
        assert wal.next_lsn == next_lsn
        assert wal.append(b"after") == next_lsn


def test_close_records_the_floor_its_preparer_had_not(tmp_path):
    """A clean close finishes the high-water update the preparer's thread had not made yet:
    afterwards LSN_FLOOR names the last segment, without an open to record it."""
    log = tmp_path / "log"
    wal = walogs.Wal.open(log, walogs.WalConfig(max_segment_size=None, preallocate=True))
    wal._preparer._chore = lambda: None  # its thread never records it
    wal.append(b"a")
    wal.rotate()
    wal.append(b"b")
    wal.rotate()
    assert _floor.read(str(log)).seq < 3
    wal.close()
    assert _floor.read(str(log)).seq == 3
    assert _floor.read(str(log)).next_lsn == 3


def test_eio_on_the_floor_in_the_preparers_thread_poisons_the_writer(tmp_path, monkeypatch):
    """P2 for the deferred floor update: when the preparer's thread fails to sync LSN_FLOOR
    (EIO, injected through the ``walogs._io`` seam), the writer is poisoned: the next append
    and checkpoint are refused (no checkpoint relies on a floor that may be on no disk), and
    the log reopens with every acknowledged entry."""
    real = _io.fdatasync

    def fdatasync(fd):
        if threading.current_thread().name.startswith("walogs-prepare") and _fd_name(fd).startswith("LSN_FLOOR"):
            raise OSError(errno.EIO, "injected EIO on fdatasync of the LSN floor")
        return real(fd)

    log = tmp_path / "log"
    wal = walogs.Wal.open(log, walogs.WalConfig(max_segment_size=None, preallocate=True))
    try:
        settled(wal)
        wal.append(b"a")
        monkeypatch.setattr(_io, "fdatasync", fdatasync)
        wal.rotate()  # acknowledged: the floor is the preparer thread's, after it
        for _ in range(6000):  # a hang guard, not a timing assert
            if wal._writer.poison is not None:
                break
            threading.Event().wait(0.01)
        # poison_with records the error, then marks the writer refusing under its mutex: an
        # append in between is still acknowledged (and kept); the next ones are refused.
        acknowledged = [b"a"]
        for _ in range(1000):
            try:
                wal.append(b"b")
            except walogs.WalError as exc:
                assert "poisoned" in str(exc)
                break
            acknowledged.append(b"b")
        else:
            raise AssertionError("the poisoned writer kept acknowledging appends")
        with pytest.raises(walogs.WalError, match="poisoned"):
            wal.checkpoint(1)
    finally:
        monkeypatch.undo()
        wal.close()
    with walogs.Wal.open(log) as again:
        assert [d for _, d in again] == acknowledged
        assert again.segment_count == 2
