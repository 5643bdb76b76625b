"""Rust interop, both directions, against the crate walogs 0.1.0's own writer (issue #18).

``interop/rust`` builds the crate's real ``wal.rs`` behind a small command line
(interop/README.md); these tests drive it as a separate process on the same
directories walogs writes, and the other way round:

* a walogs log (rotations, a checkpoint, every side file, a batch torn by a
  real SIGKILL of the writer) opens in the Rust writer, which reads every
  acknowledged entry and appends after it; walogs then reads those appends;
* a Rust log (rotations, a checkpoint, its v1 ``wal.log`` migration, a torn
  tail) opens in walogs with every entry;
* where the two writers differ (docs/format.md, "What happens if you mix
  writers") the difference is asserted as it is, so that a change on either
  side shows up here: LSNs restarting at 1 after a checkpoint that empties
  the log (P1), one flipped bit cutting acknowledged frames (P10), a batch
  killed mid-write, an LSN jump inside a segment (I12), and the writer lock.

A case for a later on-disk addition (pre-zeroed segments, ``cursors/``) is one
more test here: build the directory with walogs, then ``rust.open`` it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from _damage import flip_bit, frames_of, seg_name, segments_of, set_bytes, shrink, write_segments
from _procs import run_python
from conftest import entry, make_frame, settled, snapshot
from test_batch_kill import BATCH, BATCH_BYTES, SIZE, _kill_during_a_batch

import walogs

# The source tree holds interop/; the wheel test runs a copy of tests/ elsewhere and names
# the tree in WALOGS_SOURCE_TREE.
SOURCE = os.environ.get("WALOGS_SOURCE_TREE") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(SOURCE, "interop", "build.sh")
BINARY = os.path.join(SOURCE, "build", "interop-rust", "release", "walogs-interop")
NOT_BUILT = "interop: not built: "


def _why_not_buildable() -> str | None:
    """interop/build.sh's reason it cannot build here (no cargo, no crc32fast, no wal.rs), or None."""
    if not os.path.exists(BUILD):
        raise RuntimeError(f"{BUILD} is missing: run from the source tree or set WALOGS_SOURCE_TREE to it")
    said = subprocess.run([BUILD, "--check"], capture_output=True, text=True, timeout=60, check=True).stdout
    return said.strip().removeprefix(NOT_BUILT) if said.startswith(NOT_BUILT) else None


# Decided once for the module, so that a machine without cargo reads one skip line, not one per test.
if (_why := _why_not_buildable()) is not None:
    pytest.skip(f"the Rust interop harness cannot be built here: {_why}", allow_module_level=True)

SEED = int(os.environ.get("WALOGS_SEED", "20241124"))
FRAME = 16 + SIZE  # one frame of the killed batches
ATTEMPTS = 10  # children killed before one leaves a torn batch (a kill can land just after the write)


@dataclass(frozen=True)
class Opened:
    """The state line every harness command prints first: what the crate's ``Wal::open`` found."""

    truncated_at: int | None
    next_lsn: int
    segments: int


@dataclass
class Rust:
    """The harness binary: each call is one process running ``Wal::open`` and one command."""

    binary: str

    def run(self, *args) -> tuple[Opened, list[str]]:
        """Runs one command to success: the state its open found, and the lines it printed after."""
        done = subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, (
            f"walogs-interop {' '.join(map(str, args))} exited {done.returncode}: {done.stderr}")
        state, *lines = done.stdout.splitlines()
        tail, next_lsn, segments = (field.split("=", 1)[1] for field in state.split())
        return Opened(None if tail == "clean" else int(tail.split(":")[1]), int(next_lsn), int(segments)), lines

    def open(self, path) -> Opened:
        return self.run("open", path)[0]

    def append(self, path, count: int, size: int | None = None) -> list[int]:
        return [int(line) for line in self.run("append", path, count, *([] if size is None else [size]))[1]]

    def dump(self, path) -> list[tuple[int, bytes]]:
        return [(int(lsn), bytes.fromhex(data)) for lsn, _, data in
                (line.partition(" ") for line in self.run("dump", path)[1])]

    def rotate(self, path) -> None:
        self.run("rotate", path)

    def checkpoint(self, path, lsn: int) -> int:
        return int(self.run("checkpoint", path, lsn)[1][0].removeprefix("deleted="))


@pytest.fixture(scope="session")
def rust() -> Rust:
    """Builds the harness once per session (interop/build.sh: cargo offline; a no-op when built)."""
    done = subprocess.run([BUILD], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and not done.stdout.startswith(NOT_BUILT), (
        f"interop/build.sh failed:\n{done.stdout}\n{done.stderr}")
    assert os.access(BINARY, os.X_OK), f"interop/build.sh succeeded but left no {BINARY}"
    return Rust(BINARY)


def rust_data(lsn: int, size: int | None = None) -> bytes:
    """What the harness's ``append`` stores at ``lsn`` (its ``payload``): ``rust-<lsn>``, cycled to ``size``."""
    base = b"rust-%d" % lsn
    return base if size is None else (base * (size // len(base) + 1))[:size]


def walogs_entries(path) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]], walogs.TailState, int]:
    """What walogs finds: a reader's entries (before any writer open), then the writer's, its tail and next LSN."""
    with walogs.WalReader(path) as reader:
        read = list(reader)
    with walogs.Wal.open(path) as wal:
        return read, list(wal), wal.tail_state, wal.next_lsn


def copy(path, tmp_path, name: str):
    target = tmp_path / name
    shutil.copytree(path, target)
    return target


# ---------------------------------------------------------------------- walogs writes, Rust opens


@dataclass(frozen=True)
class KilledLog:
    """A walogs log whose last writer was SIGKILLed inside the write of a batch."""

    path: str
    first: int  # the first LSN left after the checkpoint
    batches_from: int  # the first LSN the killed child wrote (the batches: entry((lsn - it) % BATCH, SIZE))
    acked: int  # the last acknowledged LSN
    segment: str  # the segment the kill tore
    size: int  # where its data ends after the kill: a page boundary inside a batch
    batch_start: int  # where the torn batch starts in it
    zero_tail: bool = False  # the segment was prepared with zeros: the file goes on past ``size``

    def data(self, lsn: int) -> bytes:
        return entry(lsn) if lsn < self.batches_from else entry((lsn - self.batches_from) % BATCH, SIZE)

    def page_after_kept(self) -> int:
        """The first page boundary with room for one frame after the whole frames the crate keeps."""
        return -(-(self.size // FRAME * FRAME + 16) // 4096) * 4096


def _walogs_prelude(path) -> tuple[int, int]:
    """Several rotations, a batch, a checkpoint, then a rotate that leaves the active segment empty.

    Returns (first LSN kept, next LSN)."""
    with walogs.Wal.open(path, walogs.WalConfig(max_segment_size=1024)) as wal:
        for lsn in range(1, 31):
            assert wal.append(entry(lsn)) == lsn
        assert wal.append_batch([entry(lsn) for lsn in range(31, 41)]) == range(31, 41)
        wal.rotate()
        assert wal.checkpoint(20) >= 2
        assert wal.append(entry(41)) == 41
        wal.rotate()
        return wal.first_lsn, wal.next_lsn


def data_end(path) -> int:
    """Where a segment's written bytes end: its size, or for one written into zeros (prepared
    by walogs, preallocate) the page boundary after its last non-zero byte (a killed write
    stops at a page boundary; the batches' entries hold no zero byte)."""
    with open(path, "rb") as f:
        data = f.read()
    end = len(data.rstrip(b"\0"))
    return end if end == len(data) else -(-end // 4096) * 4096


@pytest.fixture(scope="module")
def killed_log(tmp_path_factory) -> KilledLog:
    """Made once per module (tests copy it): the prelude, then a child appending 10,000-entry
    batches, SIGKILLed until one kill lands inside a write and leaves a torn batch."""
    rng = random.Random(f"{SEED}-interop")
    for attempt in range(ATTEMPTS):
        path = tmp_path_factory.mktemp("killed") / "log"
        first, batches_from = _walogs_prelude(path)
        acks, killed = _kill_during_a_batch(path, "none", rng)
        segment = segments_of(path)[-1]
        size = data_end(path / segment)
        if killed and size % BATCH_BYTES:
            assert size % 4096 == 0, f"a killed write ended at {size}, not at a page boundary"
            acked = acks[-1][1] if acks else batches_from - 1
            log = KilledLog(str(path), first, batches_from, acked, segment, size, size // BATCH_BYTES * BATCH_BYTES,
                            os.path.getsize(path / segment) > size)
            # The page-boundary case needs a boundary inside the batch past what the crate keeps
            # (there is none about once in 2,000 kills: retry those).
            if log.page_after_kept() < log.batch_start + BATCH_BYTES:
                print(f"\n[interop kill] attempt {attempt + 1}: {log.segment} torn at {size}, the batch "
                      f"started at {log.batch_start}; acknowledged up to LSN {acked}")
                return log
    pytest.fail(f"none of {ATTEMPTS} children was killed inside the write of a batch")


def test_walogs_log_opens_in_rust_which_appends_and_walogs_reads_back(rust, killed_log, tmp_path):
    """Rotations, a checkpoint, LOCK, VISIBLE and LSN_FLOOR, a batch torn by SIGKILL: the crate's
    open cuts the torn frame, yields every acknowledged entry, and appends after what it kept;
    walogs (a reader, then the writer) reads all of it and continues; Rust reads walogs' append."""
    log = killed_log
    path = copy(log.path, tmp_path, "log")
    assert {"LOCK", "VISIBLE", "LSN_FLOOR"} <= set(os.listdir(path))
    assert segments_of(path)[0] != seg_name(1), "the checkpoint deleted nothing"
    kept_end = log.size // FRAME * FRAME  # the crate stops at the first frame the kill tore
    opened = rust.open(path)
    # The crate cuts zeros after the last frame as a torn tail (walogs keeps them to write into).
    assert opened.truncated_at == (None if kept_end == log.size and not log.zero_tail else kept_end)
    assert os.path.getsize(path / log.segment) == kept_end
    dumped = rust.dump(path)
    last = dumped[-1][0]
    assert [lsn for lsn, _ in dumped] == list(range(log.first, last + 1)), "the crate's iter skipped or repeated"
    assert all(data == log.data(lsn) for lsn, data in dumped), "the crate read other bytes than walogs wrote"
    assert last >= log.acked, f"acknowledged LSNs {last + 1}..{log.acked} are missing in the crate's iter (P7)"
    assert opened.next_lsn == last + 1

    # 3 frames of 49 bytes: the segment then ends at an odd offset, never at the page boundary
    # that would make walogs' write-in-flight record cut them (see the page-boundary test below).
    appended = rust.append(path, 3, 33)
    assert appended == [last + 1, last + 2, last + 3]
    expected = [(lsn, log.data(lsn)) for lsn in range(log.first, last + 1)]
    expected += [(lsn, rust_data(lsn, 33)) for lsn in appended]
    read, written, tail, next_lsn = walogs_entries(path)
    assert read == expected and written == expected
    assert tail.clean and next_lsn == last + 4
    with walogs.Wal.open(path) as wal:
        assert wal.append(b"walogs after rust") == last + 4
    assert rust.dump(path)[-4:] == [*expected[-3:], (last + 4, b"walogs after rust")]
    assert rust.open(path) == Opened(None, last + 5, opened.segments)


def test_killed_batch_walogs_cuts_it_whole_rust_keeps_its_whole_frames(rust, killed_log, tmp_path):
    """Difference: walogs cuts a batch a kill tore at its start (its write-in-flight record in
    VISIBLE, all or nothing); the crate knows no batches and keeps every whole frame of it."""
    log = killed_log
    mine, theirs = copy(log.path, tmp_path, "walogs"), copy(log.path, tmp_path, "rust")
    with walogs.Wal.open(mine) as wal:
        assert wal.tail_state == walogs.TailState(truncated_at=log.batch_start)
        walogs_last = wal.next_lsn - 1
    rust_kept = log.size // FRAME * FRAME
    assert rust.open(theirs).next_lsn - 1 == walogs_last + (rust_kept - log.batch_start) // FRAME
    assert walogs_last >= log.acked


def test_rust_appends_ending_on_a_page_inside_a_killed_batch_are_cut_by_walogs(rust, killed_log, tmp_path):
    """Difference (the caveat in docs/format.md, VISIBLE): after a walogs writer was killed mid-batch,
    Rust appends that happen to end the segment on a page boundary inside the killed write's range
    look to the next walogs open like that write, stopped by the kill: it cuts them, acknowledged."""
    log = killed_log
    path = copy(log.path, tmp_path, "log")
    kept_end = log.size // FRAME * FRAME
    opened = rust.open(path)
    page_end = log.page_after_kept()
    assert rust.append(path, 1, page_end - kept_end - 16) == [opened.next_lsn]
    assert os.path.getsize(path / log.segment) == page_end
    with walogs.Wal.open(path) as wal:
        assert wal.tail_state == walogs.TailState(truncated_at=log.batch_start)
        assert wal.next_lsn == opened.next_lsn - (kept_end - log.batch_start) // FRAME, "walogs kept the Rust append"


# ---------------------------------------------------------------------- Rust writes, walogs opens


def test_rust_log_opens_in_walogs_with_every_entry(rust, tmp_path):
    """Rotations and a checkpoint by the crate, no side files: walogs reads every entry, appends,
    and the crate then opens the directory with walogs' side files in it and reads that append."""
    path = tmp_path / "log"
    assert rust.append(path, 5) == [1, 2, 3, 4, 5]
    rust.rotate(path)
    assert rust.append(path, 4, 300) == [6, 7, 8, 9]
    rust.rotate(path)
    assert rust.append(path, 3) == [10, 11, 12]
    assert rust.checkpoint(path, 7) == 1  # segment 2 holds 6..9: only segment 1 goes
    assert rust.append(path, 2, 0) == [13, 14]
    assert sorted(os.listdir(path)) == [seg_name(2), seg_name(3)]
    expected = [(lsn, rust_data(lsn, 300 if 6 <= lsn <= 9 else 0 if lsn > 12 else None)) for lsn in range(6, 15)]
    assert rust.dump(path) == expected
    read, written, tail, next_lsn = walogs_entries(path)
    assert read == expected and written == expected and tail.clean and next_lsn == 15
    with walogs.Wal.open(path) as wal:
        assert wal.append(b"walogs") == 15
        wal.rotate()
        assert wal.append(b"walogs again") == 16
    assert {"LOCK", "VISIBLE", "LSN_FLOOR"} <= set(os.listdir(path))
    assert rust.dump(path) == [*expected, (15, b"walogs"), (16, b"walogs again")]
    assert rust.append(path, 1) == [17]
    assert walogs_entries(path)[1][-1] == (17, rust_data(17))


@pytest.mark.parametrize("migrates", ["walogs", "rust"])
def test_v1_wal_log_migrates_in_either_writer_and_the_other_reads_it(rust, tmp_path, migrates):
    """A v1 log (one ``wal.log``, the same frames): walogs' reader reads it as segment 1 before
    any migration; whichever writer opens it first renames it to wal-000001.log; the other reads it."""
    path = tmp_path / "log"
    assert rust.append(path, 4) == [1, 2, 3, 4]
    os.rename(path / seg_name(1), path / "wal.log")  # what the crate's v1 left: the same frames, one file
    expected = [(lsn, rust_data(lsn)) for lsn in range(1, 5)]
    with walogs.WalReader(path) as reader:
        assert list(reader) == expected
    assert os.listdir(path) == ["wal.log"], "a reader migrated or wrote something"
    if migrates == "rust":
        assert rust.open(path) == Opened(None, 5, 1)
    else:
        with walogs.Wal.open(path) as wal:
            assert list(wal) == expected and wal.next_lsn == 5
    assert "wal.log" not in os.listdir(path) and seg_name(1) in os.listdir(path)
    assert rust.dump(path) == expected
    assert walogs_entries(path)[1:] == (expected, walogs.TailState.CLEAN, 5)


TORN = {
    # name: (damage to the last segment of 6 frames, where both writers cut)
    "cut mid-frame": (lambda seg, frames: shrink(seg, 7), lambda frames: frames[-1][0]),
    "cut mid-header": (lambda seg, frames: shrink(seg, frames[-1][1] - 5), lambda frames: frames[-1][0]),
    "last frame garbled": (lambda seg, frames: flip_bit(seg, frames[-1][0] + 18), lambda frames: frames[-1][0]),
    "junk after the end": (lambda seg, frames: set_bytes(seg, os.path.getsize(seg), b"\x07" * 40),
                           lambda frames: frames[-1][0] + frames[-1][1]),
}


@pytest.mark.parametrize("damage", list(TORN))
def test_rust_torn_tail_is_cut_at_the_same_offset_by_both_writers(rust, tmp_path, damage):
    """A Rust log whose tail a crash tore: walogs cuts it exactly where the crate does and keeps
    every entry before it; its reader yields the same entries without writing anything."""
    path = tmp_path / "log"
    assert rust.append(path, 6, 40) == [1, 2, 3, 4, 5, 6]
    seg = path / seg_name(1)
    frames = frames_of(seg)
    spoil, cut = TORN[damage]
    spoil(seg, frames)
    theirs = copy(path, tmp_path, "rust")
    kept = 5 if cut(frames) == frames[-1][0] else 6
    expected = [(lsn, rust_data(lsn, 40)) for lsn in range(1, kept + 1)]
    before = snapshot(path)
    with walogs.WalReader(path) as reader:
        assert list(reader) == expected
    assert snapshot(path) == before
    with walogs.Wal.open(path) as wal:
        assert wal.tail_state == walogs.TailState(truncated_at=cut(frames))
        assert list(wal) == expected
    assert rust.open(theirs) == Opened(cut(frames), kept + 1, 1)
    assert os.path.getsize(seg) == os.path.getsize(theirs / seg_name(1)) == cut(frames)


# ---------------------------------------------------------------------- the differences


def test_p1_after_a_checkpoint_that_empties_the_log_rust_restarts_lsns_at_1(rust, tmp_path):
    """P1, walogs' log: LSN_FLOOR keeps walogs at 6 after a checkpoint deleted every entry; the
    crate ignores it and starts again at 1. walogs then takes the crate's LSNs 1 and 2 as they
    are (its floor counts only when no entry is stored): LSNs 1..2 are handed out twice."""
    path = tmp_path / "log"
    with walogs.Wal.open(path) as wal:
        for lsn in range(1, 6):
            wal.append(b"walogs %d" % lsn)
        wal.rotate()
        assert wal.checkpoint(5) == 1 and wal.next_lsn == 6
    assert segments_of(path) == [seg_name(2)] and os.path.getsize(path / seg_name(2)) == 0
    theirs = copy(path, tmp_path, "rust")
    with walogs.Wal.open(path) as wal:
        assert wal.next_lsn == 6 and list(wal) == []
    assert rust.open(theirs) == Opened(None, 1, 1)
    assert rust.append(theirs, 2) == [1, 2]
    read, written, tail, next_lsn = walogs_entries(theirs)
    assert read == written == [(1, b"rust-1"), (2, b"rust-2")] and tail.clean and next_lsn == 3


def test_p1_a_log_the_crate_emptied_restarts_at_1_in_both(rust, tmp_path):
    """P1, the crate's own log: its checkpoint deletes every entry and writes no floor, so the
    directory no longer says where LSNs stood: the crate and walogs both continue at 1."""
    path = tmp_path / "log"
    assert rust.append(path, 5) == [1, 2, 3, 4, 5]
    rust.rotate(path)
    assert rust.checkpoint(path, 5) == 1
    assert rust.open(path) == Opened(None, 1, 1)
    assert walogs_entries(path) == ([], [], walogs.TailState.CLEAN, 1)


@pytest.mark.parametrize("writer", ["walogs", "rust"])
def test_p10_one_flipped_bit_rust_cuts_acknowledged_frames_walogs_refuses(rust, tmp_path, writer):
    """P10: one bit flipped in the data of the 4th of 10 frames of the active segment. walogs
    finds the valid frames after it and refuses (WalCorruptError, nothing cut); the crate calls it
    a torn tail and truncates there, acknowledged entries 5..10 with it."""
    path = tmp_path / "log"
    if writer == "walogs":
        with walogs.Wal.open(path) as wal:
            wal.append_batch([b"entry %d" % lsn for lsn in range(1, 11)])
    else:
        assert rust.append(path, 10) == list(range(1, 11))
    seg = path / seg_name(1)
    bad = frames_of(seg)[3][0]
    flip_bit(seg, bad + 16)
    theirs = copy(path, tmp_path, "rust")
    before = seg.read_bytes()
    with pytest.raises(walogs.WalCorruptError, match="mid-log damage"):
        walogs.Wal.open(path)
    assert seg.read_bytes() == before, "walogs cut or changed the segment"
    assert rust.open(theirs) == Opened(bad, 4, 1)
    assert os.path.getsize(theirs / seg_name(1)) == bad
    assert [lsn for lsn, _ in rust.dump(theirs)] == [1, 2, 3]


def test_rust_writer_takes_no_lock_and_a_live_walogs_writer_overwrites_its_entry(rust, tmp_path):
    """Difference: the crate's Wal::open takes no lock. While a walogs writer holds LOCK (a second
    walogs writer gets WalLockedError), the crate opens and acknowledges LSN 2; the walogs writer,
    which knows nothing of it, then writes its own LSN 2 over that frame: an acknowledged entry
    is gone without an error anywhere. Never run both at once."""
    path = tmp_path / "log"
    with walogs.Wal.open(path) as wal:
        wal.append(b"walogs 1")
        other = run_python("import sys, walogs; walogs.Wal.open(sys.argv[1])", path)
        assert other.returncode == 1 and "WalLockedError" in other.stderr
        assert rust.append(path, 1) == [2]
        assert rust.dump(path) == [(1, b"walogs 1"), (2, b"rust-2")]
        assert wal.append(b"walogs 2") == 2
    assert rust.dump(path) == [(1, b"walogs 1"), (2, b"walogs 2")]
    assert walogs_entries(path)[1] == [(1, b"walogs 1"), (2, b"walogs 2")]


def test_lsn_jump_inside_a_segment_rust_accepts_walogs_refuses(rust, tmp_path):
    """Difference (I12): frames with valid CRCs at LSNs 1, 2, 5 in one segment. The crate checks
    LSN continuity only between segments: it yields all three and continues at 6. walogs refuses
    (WalCorruptError: entries 3..4 are missing), in its reader and its writer."""
    path = tmp_path / "log"
    write_segments(path, {seg_name(1): make_frame(1, b"a") + make_frame(2, b"b") + make_frame(5, b"c")})
    assert rust.open(path) == Opened(None, 6, 1)
    assert rust.dump(path) == [(1, b"a"), (2, b"b"), (5, b"c")]
    with pytest.raises(walogs.WalCorruptError, match="LSN discontinuity"), walogs.WalReader(path) as reader:
        list(reader)
    with pytest.raises(walogs.WalCorruptError, match="LSN discontinuity"):
        walogs.Wal.open(path)


# ---------------------------------------------------------------------- a zero tail (preallocate)

_CRASHING_WRITER = r"""
import os, signal, sys
import walogs
from walogs import _prealloc
_prealloc.BACKGROUND = False  # the next segment is prepared before rotate() returns
path = sys.argv[1]
wal = walogs.Wal.open(path, walogs.WalConfig(max_segment_size=65536, sync="always", preallocate=True))
for i in range(1, 71):
    wal.append(b"walogs-%d" % i * 5)
    if i == 50:
        wal.rotate()  # from here on the active segment is a prepared one: 64 KiB of zeros written into
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_zero_tail_of_a_crashed_walogs_writer_is_cut_by_rust_and_nothing_is_lost(rust, tmp_path):
    """A walogs writer SIGKILLed while its active segment is a prepared one (frames, then the
    zeros it had not reached): the crate's open cuts the zeros as a torn tail at the end of
    the last frame and loses no entry; walogs reads it all before and after, and continues."""
    path = tmp_path / "log"
    done = run_python(_CRASHING_WRITER, path)
    assert done.returncode == -9, done.stderr
    active = path / seg_name(2)
    entries = [(i, b"walogs-%d" % i * 5) for i in range(1, 71)]
    frames_end = sum(16 + len(data) for _, data in entries[50:])
    assert os.path.getsize(active) == 65536 and os.path.getsize(path / seg_name(1)) < 65536
    with walogs.WalReader(path) as reader:
        assert list(reader) == entries  # the zero tail is a clean end for walogs
    theirs = copy(path, tmp_path, "rust")
    opened = rust.open(theirs)
    assert opened == Opened(frames_end, 71, opened.segments)
    assert os.path.getsize(theirs / seg_name(2)) == frames_end  # the zeros cut, every frame kept
    assert rust.dump(theirs) == entries
    assert rust.append(theirs, 1) == [71]
    read, written, tail, next_lsn = walogs_entries(theirs)
    assert read == written == entries + [(71, rust_data(71))] and tail.clean and next_lsn == 72
    # walogs itself keeps the zeros (nothing cut) and writes into them.
    with walogs.Wal.open(path) as wal:
        assert wal.tail_state.clean and os.path.getsize(active) == 65536
        assert wal.append(b"walogs again") == 71
    assert os.path.getsize(active) == frames_end + 16 + len(b"walogs again")  # trimmed at close
    assert rust.dump(path) == entries + [(71, b"walogs again")]


def test_every_side_file_walogs_writes_is_ignored_by_rust(rust, tmp_path):
    """Shared writers' WRITERS, named cursors in cursors/, the segment being prepared
    (SEGMENT.prepared), LOCK, VISIBLE and LSN_FLOOR all present, copied while a walogs writer
    is open (its active segment a prepared one, with a zero tail): the crate opens the copy,
    reads every entry, appends; walogs then reads the crate's appends, and the cursor is kept."""
    path = tmp_path / "log"
    entries = [(lsn, entry(lsn)) for lsn in range(1, 61)]
    with walogs.Wal.open(path, walogs.WalConfig(max_segment_size=1024), shared=True) as wal:
        assert wal.append_batch([data for _, data in entries[:20]]) == range(1, 21)
    with walogs.WalReader(path) as reader, reader.cursor("billing") as cursor:
        cursor.commit(10)
    with settled(walogs.Wal.open(path, walogs.WalConfig(max_segment_size=4096, preallocate=True))) as wal:
        for lsn, data in entries[20:]:
            assert wal.append(data) == lsn
        wal.rotate()  # the prepared segment is renamed in: the active segment is all zeros
        settled(wal)
        assert wal.append(b"last walogs entry") == 61
        names = set(os.listdir(path))
        assert {"WRITERS", "cursors", "SEGMENT.prepared", "LOCK", "VISIBLE", "LSN_FLOOR"} <= names, names
        theirs = copy(path, tmp_path, "rust")  # as a crash would leave it
    expected = entries + [(61, b"last walogs entry")]
    assert rust.dump(theirs) == expected
    assert rust.append(theirs, 2) == [62, 63]
    expected += [(62, rust_data(62)), (63, rust_data(63))]
    read, written, tail, next_lsn = walogs_entries(theirs)
    assert read == written == expected and next_lsn == 64
    with walogs.WalReader(theirs) as reader:
        assert reader.cursors() == {"billing": 10}
        with reader.cursor("billing") as cursor:
            assert next(iter(cursor.iter())) == (11, entry(11))
