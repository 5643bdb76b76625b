"""Kill suite: a real writer process is SIGKILLed at a random instant, again and again.

Proves I2 (a torn tail is cut at open), P1 (no LSN is ever handed out twice,
LSNs never go backwards, also after checkpoints removed every entry), P7
(no sync mode holds an acknowledged entry in user space: SIGKILL at any
instant loses none), I8 (``next_lsn`` comes from the disk: each new writer
starts exactly where the recovered log ends) and I12 (LSNs stay contiguous
across segments and generations), plus I11/I14 (segment numbers stay
contiguous through checkpoints interrupted by the kill).

How: the test process forks a writer child (``os.fork``: the child only
calls walogs and ``os._exit``, no pytest machinery). The child opens the log
with a 4 KiB ``max_segment_size`` (rotation every few entries) in one sync
mode, then appends single entries and batches, syncs, rotates and
checkpoints old segments, and after every call that *returned* it writes a
fixed 17-byte record to a pipe (one unbuffered ``os.write``, atomic below
PIPE_BUF): ``A first last`` for acknowledged LSNs, ``C upto`` *before* a
checkpoint call. The parent SIGKILLs it a seeded random 0-30 ms after it
started writing, then reopens with ``Wal.open`` (which must never fail) and
checks every acknowledged entry byte for byte (entries are a pure function
of LSN and generation), the LSN sequence, ``next_lsn`` and the raw segment
bytes against frames built independently (``make_frame``). The next child
then writes on the same directory: generations accumulate.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from _damage import segments_of
from _procs import REC, fork_with_pipe, kill_all, read_to_eof, read_until, send, send_error, take_records
from conftest import entry, make_frame, scale

import walogs

SEED = int(os.environ.get("WALOGS_SEED", "20241124"))
MODES = ("always", "interval", "none", "mixed")
KILLS_TOTAL = scale(300, 5000)
KILLS_PER_MODE = -(-KILLS_TOTAL // len(MODES))  # >= KILLS_TOTAL across the four tests
# Wall-clock bound per mode (a kill round takes ~30-60 ms): the loop stops at the count or here.
DEADLINE_PER_MODE = max(11.0, KILLS_PER_MODE * 0.15)
SEGMENT = 4096
MAX_DELAY = 0.030  # the kill lands 0-30 ms after the child started writing
CHILD_LIFETIME = 3.0  # a child the parent somehow never kills stops by itself



def payload(lsn: int, gen: int) -> bytes:
    """The one byte string generation ``gen`` writes at ``lsn``: a pure function, so bytes can be checked.

    Sizes vary (16..300 bytes, now and then 5000: larger than a segment, so it
    gets a segment of its own).
    """
    size = 5000 if (lsn * 7 + gen) % 97 == 0 else 16 + (lsn * 131 + gen * 17) % 285
    return b"g%06d|" % gen + entry(lsn, size)


def payload_gen(data: bytes) -> int | None:
    """The generation tag of an entry written by ``payload``, None if it has none."""
    if len(data) < 8 or data[:1] != b"g" or data[7:8] != b"|" or not data[1:7].isdigit():
        return None
    return int(data[1:7])


# ---------------------------------------------------------------------- the child


def _writer_child(fd: int, path: str, sync: str, gen: int, seed: int) -> None:
    """Runs in the forked child: write until SIGKILLed, reporting what was acknowledged."""
    rng = random.Random(seed)
    config = walogs.WalConfig(max_segment_size=SEGMENT, sync=sync, sync_interval=0.002)
    wal = walogs.Wal.open(path, config, lock_timeout=5.0)
    send(fd, b"O", wal.next_lsn, wal.first_lsn or 0)
    deadline = time.monotonic() + CHILD_LIFETIME
    while time.monotonic() < deadline:
        roll = rng.random()
        lsn = wal.next_lsn
        if roll < 0.45:
            got = wal.append(payload(lsn, gen))
            send(fd, b"A", got, got)  # P7: acknowledged, so it must survive the kill
        elif roll < 0.85:
            count = rng.randint(2, 12)
            got = wal.append_batch([payload(lsn + k, gen) for k in range(count)])
            send(fd, b"A", got.start, got.stop - 1)
        elif roll < 0.90:
            wal.sync()
        elif roll < 0.93:
            wal.rotate()
        elif roll < 0.95:
            # Rotate, then checkpoint everything: no entry stored, only LSN_FLOOR says where LSNs stand (P1).
            wal.rotate()
            send(fd, b"C", wal.next_lsn - 1)
            wal.checkpoint(wal.next_lsn - 1)
        else:
            keep = rng.choice((0, 0, 10, 40, 120))
            upto = wal.next_lsn - 1 - keep
            if upto > 0:
                send(fd, b"C", upto)  # announced before: a kill may land inside the checkpoint
                wal.checkpoint(upto)
    wal.close()


def _fork_writer(path: str, sync: str, gen: int, seed: int) -> tuple[int, int]:
    """Fork a writer child (walogs and os._exit only); returns (pid, read end of its report pipe)."""
    return fork_with_pipe(lambda w: _writer_child(w, path, sync, gen, seed), send_error)


# ---------------------------------------------------------------------- the parent


class Tally:
    """What the kill loop found; every failure list must stay empty."""

    def __init__(self) -> None:
        self.kills = 0
        self.acked = 0  # acknowledged entries checked after a kill
        self.lost: list[str] = []
        self.changed: list[str] = []
        self.failed_opens: list[str] = []
        self.violations: list[str] = []  # P1, I8, I12, raw bytes, child errors
        self.torn = 0  # reopens that cut a torn tail (I2)
        self.checkpoints = 0
        self.max_segment = 0
        self.entries = 0

    def failures(self) -> int:
        return len(self.lost) + len(self.changed) + len(self.failed_opens) + len(self.violations)

    def line(self, mode: str, seconds: float) -> str:
        return (f"kill[{mode}] impl={walogs.IMPLEMENTATION} seed={SEED}: {self.kills} kills, "
                f"{self.acked} acked entries checked, {self.entries} stored entries verified, "
                f"lost={len(self.lost)} changed={len(self.changed)} failed_opens={len(self.failed_opens)} "
                f"violations={len(self.violations)} torn_tails_cut={self.torn} "
                f"checkpoints_announced={self.checkpoints} segments_created={self.max_segment} "
                f"in {seconds:.1f}s")

    def details(self) -> str:
        parts = []
        for name in ("lost", "changed", "failed_opens", "violations"):
            items = getattr(self, name)
            if items:
                parts.append(f"{name}: " + "; ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        return " | ".join(parts)


def _raw_log(path: str) -> tuple[list[int], bytes]:
    """Segment numbers and the concatenated bytes of every segment file, in order."""
    names = segments_of(path)
    raw = bytearray()
    for name in names:
        with open(os.path.join(path, name), "rb") as f:
            raw += f.read()
    return [int(name[4:-4]) for name in names], bytes(raw)


def _fold_reports(gen: int, records, state: dict, t: Tally) -> dict[int, int]:
    """What the child of generation ``gen`` reported: its acknowledged LSNs (each mapped to
    ``gen``); announced checkpoints raise ``state["ckpt"]``; it must have opened where the
    last reopen ended (I8)."""
    acked: dict[int, int] = {}
    opened = None
    for kind, a, b, msg in records:
        if kind == b"A":
            for lsn in range(a, b + 1):
                acked[lsn] = gen
        elif kind == b"C":
            state["ckpt"] = max(state["ckpt"], a)
            t.checkpoints += 1
        elif kind == b"O":
            opened = (a, b)
        elif kind == b"E":
            t.violations.append(f"gen {gen}: writer child failed: {msg.decode(errors='replace')}")
    if opened is None:
        t.violations.append(f"gen {gen}: the child never reported a successful Wal.open")
    elif opened[0] != state["next"]:
        # I8: the new writer starts where the log recovered by the previous open ended.
        t.violations.append(f"gen {gen}: child opened with next_lsn {opened[0]}, the last reopen saw {state['next']}")
    t.acked += len(acked)
    return acked


def _check_lsns(gen: int, next_lsn: int, first: int | None, lsns: list[int], max_acked: int,
                state: dict, t: Tally) -> None:
    """P1: LSNs never reused nor going backwards; I12: contiguous; checkpoints deleted only what was announced."""
    prev_next = state["next"]
    # P1: never reused, never backwards.
    if max_acked and next_lsn <= max_acked:
        t.violations.append(f"gen {gen}: next_lsn {next_lsn} <= acknowledged LSN {max_acked} (P1)")
    if next_lsn < prev_next:
        t.violations.append(f"gen {gen}: next_lsn went back from {prev_next} to {next_lsn} (P1)")
    # I12: contiguous from first_lsn to next_lsn - 1.
    want = list(range(first, next_lsn)) if first is not None else []
    if lsns != want:
        t.violations.append(f"gen {gen}: stored LSNs are not first_lsn..next_lsn-1 = {first}..{next_lsn - 1} "
                            f"(got {len(lsns)} entries, {lsns[:3]}..{lsns[-3:]}) (I12)")
    # Checkpoints delete only what was announced: whole segments with every LSN <= upto.
    floor_needed = (first - 1) if first is not None else (next_lsn - 1)
    if floor_needed > state["ckpt"]:
        t.violations.append(f"gen {gen}: entries up to {floor_needed} are gone but checkpoints only "
                            f"covered {state['ckpt']} (I13/I14)")


def _check_entries(gen: int, entries: list[tuple[int, bytes]], acked: dict[int, int], state: dict, t: Tally) -> None:
    """P7: every entry acknowledged now or verified by an earlier reopen is there, byte for byte
    (unless checkpointed); P1: any other entry is this child's own, whole."""
    prev_next = state["next"]
    stored = dict(entries)
    known: dict[int, int] = state["known"]  # lsn -> gen of entries verified by earlier reopens
    for lsn, g in list(acked.items()) + [(lsn, g) for lsn, g in known.items() if lsn not in acked]:
        data = stored.get(lsn)
        if data is None:
            if lsn > state["ckpt"]:
                t.lost.append(f"gen {gen}: LSN {lsn} (gen {g}) acknowledged/stored before, now missing (P7)")
        elif data != payload(lsn, g):
            t.changed.append(f"gen {gen}: LSN {lsn} holds {data[:24]!r}.. not gen {g}'s bytes (P7)")
    # Entries nobody acknowledged (written just before the kill) must still be this child's, whole.
    for lsn, data in entries:
        if lsn in acked or lsn in known:
            continue
        g = payload_gen(data)
        if lsn < prev_next or g != gen or data != payload(lsn, gen):
            t.violations.append(f"gen {gen}: unexpected entry at LSN {lsn}: {data[:24]!r} "
                                f"(new entries start at {prev_next}) (P1)")


def _check_segment_files(path: str, gen: int, entries: list[tuple[int, bytes]], segment_count: int,
                         t: Tally) -> None:
    """The segments on disk are exactly the frames of the stored entries, built independently of
    walogs (I1, I2: the torn tail was really cut), numbered contiguously (I11)."""
    seqs, raw = _raw_log(path)
    if not seqs or seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        t.violations.append(f"gen {gen}: segment numbers not contiguous: {seqs} (I11)")
    if len(seqs) != segment_count:
        t.violations.append(f"gen {gen}: {len(seqs)} segment files, the writer counts {segment_count}")
    if seqs:
        t.max_segment = max(t.max_segment, seqs[-1])
    expected_raw = b"".join(make_frame(lsn, data) for lsn, data in entries)
    if raw != expected_raw:
        t.violations.append(f"gen {gen}: segment bytes differ from the frames of the stored entries "
                            f"({len(raw)} vs {len(expected_raw)} bytes) (I1/I2)")


def _verify_round(path: str, gen: int, records, state: dict, t: Tally) -> bool:
    """Reopen after the kill of generation ``gen`` and check everything; False if the log cannot be used."""
    acked = _fold_reports(gen, records, state, t)
    try:
        wal = walogs.Wal.open(path, lock_timeout=2.0)  # the kernel dropped the dead child's lock
    except Exception as exc:  # noqa: BLE001 - counted: an open after a kill must never fail
        t.failed_opens.append(f"gen {gen}: {exc!r}")
        return False
    try:
        next_lsn, first = wal.next_lsn, wal.first_lsn
        if not wal.tail_state.clean:
            t.torn += 1
        entries = list(wal.iter())
        segment_count = wal.segment_count
    finally:
        wal.close()
    _check_lsns(gen, next_lsn, first, [lsn for lsn, _ in entries], max(acked, default=0), state, t)
    _check_entries(gen, entries, acked, state, t)
    _check_segment_files(path, gen, entries, segment_count, t)
    t.entries += len(entries)
    known = state["known"]
    state["next"] = max(next_lsn, state["next"])
    state["known"] = {lsn: (known.get(lsn) if lsn in known else acked.get(lsn, payload_gen(data)))
                      for lsn, data in entries}
    return True


def _kill_loop(path: str, modes: tuple[str, ...], kills: int, deadline: float, t: Tally) -> None:
    rng = random.Random(f"{SEED}-{'/'.join(modes)}")
    state = {"next": 1, "ckpt": 0, "known": {}}
    # Generation 0 creates the directory; every later reopen must find it intact.
    walogs.Wal.open(path).close()
    for gen in range(1, kills + 1):
        if time.monotonic() > deadline:
            break
        sync = modes[gen % len(modes)]
        pid, fd = _fork_writer(path, sync, gen, rng.randrange(1 << 30))
        buf = bytearray()
        try:
            # Wait for the child's open, then kill it a random 0-30 ms into its writing.
            if read_until(fd, buf, REC.size, time.monotonic() + 10.0) and buf[:1] == b"O":
                time.sleep(rng.uniform(0.0, MAX_DELAY))
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            pid = 0  # reaped: its pid may be reused, never signal it again
            if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                t.violations.append(f"gen {gen}: writer child ended by itself (status {status:#x}), not by SIGKILL")
            t.kills += 1
            read_to_eof(fd, buf, time.monotonic() + 5.0)
        finally:
            if pid:
                kill_all([pid])
            os.close(fd)
        if not _verify_round(path, gen, take_records(buf), state, t):
            break


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_loses_no_acknowledged_entry(log_dir, mode):
    """I2, P1, P7, I8, I12: SIGKILL a writer at random instants; every acknowledged entry survives.

    ``mixed`` changes the sync mode with every generation on one directory.
    Per commit the four modes together make >= 300 kills (scale(300, 5000)).
    """
    modes = ("always", "interval", "none") if mode == "mixed" else (mode,)
    started = time.monotonic()
    budget = DEADLINE_PER_MODE
    t = Tally()
    _kill_loop(str(log_dir), modes, KILLS_PER_MODE, started + budget, t)
    line = t.line(mode, time.monotonic() - started)
    print(line)
    assert t.failures() == 0, f"{line}: {t.details()}"
    # Bounded by a deadline, but a run that managed few kills proves little.
    assert t.kills >= min(KILLS_PER_MODE, 25), f"only {t.kills} kills fit in {budget:.0f}s: {line}"
