"""Kill suite for shared writers: SIGKILL producers at random instants and while they hold each lock.

Issue #13, P12, P7: a shared writer killed at any instruction
never loses an acknowledged entry, never leaves bytes a later append builds on, and never
blocks the others for long: the kernel releases its OFD locks and the next holder repairs
the shared state (the dirty flag) before going on.

* ``test_random_sigkills``: 4 producers (tests/_shared_procs.py: singles, batches of 2-8,
  syncs, rotations by size and by hand, checkpoints; every call that returned reported
  through a pipe) on one log; the parent SIGKILLs a random one a random 0-30 ms later,
  again and again, and forks a replacement that attaches while the others go on; every
  25th round it kills them all, checks the log with an exclusive open, and starts a new
  generation whose first opener recovers again. scale(300, 5000) kills over the three sync modes, bounded by count and wall time.
  The survivors' longest wait after a death is measured (from the kill to each
  survivor's next completed call, timestamps taken in the children) and printed; the
  assertion is only a hang guard (2 s): timing on a shared 2-core machine is noise.
* ``test_sigstop_holder_then_sigkill``: a victim producer stops itself (SIGSTOP) at a
  known point through a wrapper on ``walogs._io`` (the seam both implementations call
  while it is wrapped): mid-``pwrite`` of its frames (half written: APPEND held, dirty
  set), in the fdatasync it leads (SYNC), in a rotation's fdatasync, after a rotation
  created the next segment (its directory sync), in the LSN floor's fdatasync of a
  rotation (APPEND and FLOOR), after a checkpoint's unlink (CHECKPOINT), and while
  attaching (INIT). While it is stopped the others must be blocked where that lock
  blocks them (and only there); after SIGKILL they go on within the guard, and the
  final log holds every acknowledged entry, with the dead holder's half-written frames
  cut, never built upon.

A final exclusive open (tests/_shared_procs.verify_log) checks every acknowledged entry
byte for byte, LSNs contiguous and never acknowledged twice, and the segment files
exactly the frames of the stored entries.
"""

from __future__ import annotations

import os
import random
import select
import signal
import statistics
import time

import pytest
from _procs import fork_with_pipe, kill_all
from _shared_procs import Acks, Mix, payload, producer, send, send_error, take, verify_log
from conftest import make_frame, scale

import walogs
from walogs import _io, _visible
from walogs._format import VISIBLE_NAME

SEED = int(os.environ.get("WALOGS_SEED", "20261205"))
MODES = ("always", "interval", "none")
KILLS_TOTAL = scale(300, 5000)
KILLS_PER_MODE = -(-KILLS_TOTAL // len(MODES))
DEADLINE_PER_MODE = max(12.0, KILLS_PER_MODE * 0.12)
PRODUCERS = 4
SEGMENT = 4096
MAX_DELAY = 0.030
KILL_ALL_EVERY = 25
GUARD = 2.0  # hang guard for "the others go on after a death"; issue #13's target is 100 ms
MIX = Mix(keep=(100, 300))
# A call that completes while the victim is stopped within this long after it stopped does not count
# as getting past its lock: e.g. a sync the victim made just before stopping, which waiters sleeping on
# the sync-end futex see after at most its guard (WRITERS_WAIT_GUARD).
GRACE_NS = 150_000_000

pytestmark = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")


def config(mode: str) -> walogs.WalConfig:
    return walogs.WalConfig(max_segment_size=SEGMENT, sync=mode, sync_interval=0.005)


class Pool:
    """Producer processes with their report pipes; records of every producer ever started."""

    def __init__(self, path: str, cfg: walogs.WalConfig, seed: int) -> None:
        self.path, self.cfg = path, cfg
        self.rng = random.Random(seed)
        self.live: dict[int, tuple[int, int]] = {}  # tag -> (pid, read end)
        self.bufs: dict[int, bytearray] = {}
        self.records: dict[int, list] = {}
        self.started: dict[int, int] = {}  # tag -> monotonic ns when forked
        self.ended: dict[int, int] = {}  # tag -> monotonic ns when killed
        self.next_tag = 0
        self.problems: list[str] = []

    def spawn(self, body=None, mix: Mix = MIX) -> int:
        tag = self.next_tag
        self.next_tag += 1
        seed = self.rng.randrange(1 << 30)
        if body is None:
            def body(w, tag=tag, seed=seed):
                producer(w, self.path, self.cfg, tag, seed, 10**9, 120.0, mix)
        self.started[tag] = time.monotonic_ns()
        pid, fd = fork_with_pipe(body, send_error)
        self.live[tag] = (pid, fd)
        self.bufs[tag] = bytearray()
        return tag

    def pump(self, until: float) -> None:
        """Read every live pipe until the monotonic time ``until``."""
        fds = {fd: tag for tag, (_, fd) in self.live.items()}
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            for fd in select.select(list(fds), [], [], left)[0] if fds else time.sleep(left) or ():
                chunk = os.read(fd, 65536)
                if chunk:
                    self.bufs[fds[fd]] += chunk
                else:
                    del fds[fd]  # exited on its own: its records say why

    def kill(self, tag: int) -> int:
        """SIGKILL producer ``tag``, reap it, read what it reported; the kill's monotonic ns."""
        pid, fd = self.live.pop(tag)
        os.kill(pid, signal.SIGKILL)
        at = time.monotonic_ns()
        _, status = os.waitpid(pid, 0)
        self.ended[tag] = at
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            self.problems.append(f"producer {tag} ended by itself (status {status:#x}), not by SIGKILL")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = os.read(fd, 65536) if select.select([fd], [], [], deadline - time.monotonic())[0] else b""
            if not chunk:
                break
            self.bufs[tag] += chunk
        os.close(fd)
        self.records[tag] = take(self.bufs.pop(tag))
        return at

    def kill_all(self) -> int:
        """SIGKILL every live producer at once (then reap and read each)."""
        tags = list(self.live)
        for tag in tags:
            os.kill(self.live[tag][0], signal.SIGKILL)
        at = time.monotonic_ns()
        for tag in tags:
            self.kill(tag)
            self.ended[tag] = at
        return at

    def close(self) -> None:
        kill_all([pid for pid, _ in self.live.values()])
        for _, fd in self.live.values():
            os.close(fd)
        self.live.clear()

    def acks(self) -> Acks:
        acks = Acks()
        for tag in sorted(self.records):
            acks.fold(tag, self.records[tag])
        acks.problems[:0] = self.problems
        return acks


def survivor_waits(pool: Pool, kills: list[tuple[int, int]]) -> list[tuple[float, int, int, bool]]:
    """For each single kill (time, victim) and each survivor that had opened before it and
    lived on: seconds from the kill to the survivor's next completed call, and whether that
    call was a checkpoint (announced by a K record just before: a checkpoint of many
    segments syncs the directory once per segment, and takes long with or without a death).
    (wait, victim, survivor, in_checkpoint)."""
    waits = []
    calls = {tag: [r for r in recs if r[0] in (b"A", b"P", b"K")] for tag, recs in pool.records.items()}
    opened = {tag: next((r[4] for r in recs if r[0] == b"O"), None) for tag, recs in pool.records.items()}
    for at, victim in kills:
        for tag, recs in calls.items():
            if tag == victim or opened[tag] is None or opened[tag] > at or pool.ended.get(tag, 1 << 62) <= at:
                continue
            i = next((i for i, r in enumerate(recs) if r[4] > at), None)
            in_checkpoint = (i is not None and i > 0 and recs[i - 1][0] == b"K") or (
                i is None and bool(recs) and recs[-1][0] == b"K")
            after = recs[i][4] if i is not None else pool.ended.get(tag)
            if after is None:
                continue  # lived to the end of the run without completing a call: the end is not a stall
            waits.append(((after - at) * 1e-9, victim, tag, in_checkpoint))
    return waits


def quiet_gaps(pool: Pool, kill_times: list[int]) -> list[float]:
    """Seconds between consecutive completed calls of one producer with no death in between:
    how long calls take anyway on this machine now (to read the waits after a death against)."""
    import bisect

    kill_times = sorted(kill_times)
    gaps = []
    for recs in pool.records.values():
        stamps = [r[4] for r in recs if r[0] in (b"A", b"P", b"K")]
        for a, b in zip(stamps, stamps[1:]):
            if bisect.bisect_right(kill_times, a) == bisect.bisect_left(kill_times, b):
                gaps.append((b - a) * 1e-9)
    return gaps


@pytest.mark.parametrize("mode", MODES)
def test_random_sigkills(log_dir, mode, capsys):
    """P12/P7/API: SIGKILL random producers at random instants among 4 (replaced at once),
    every 25th round all of them; no acknowledged entry lost or changed, none acknowledged
    twice, no half-written frame kept or built upon; the survivors go on after each death."""
    path = str(log_dir)
    rng = random.Random(f"{SEED}-{mode}")
    pool = Pool(path, config(mode), rng.randrange(1 << 30))
    started = time.monotonic()
    deadline = started + DEADLINE_PER_MODE
    kills: list[tuple[int, int]] = []
    all_kills: list[int] = []  # every death, kill-all rounds too
    total = checked = 0
    problems: list[str] = []
    try:
        for _ in range(PRODUCERS):
            pool.spawn()
        while total < KILLS_PER_MODE and time.monotonic() < deadline:
            pool.pump(time.monotonic() + rng.uniform(0.0, MAX_DELAY))
            if (total + 1) % KILL_ALL_EVERY == 0:
                total += len(pool.live)
                all_kills.append(pool.kill_all())
                # All dead: an exclusive open recovers what they left and checks it (most entries are
                # still stored now; the producers' checkpoints delete them later). Then a new
                # generation of shared writers starts over it: its first opener recovers again.
                interim, more = verify_log(path, pool.acks(), every_lsn_acked=False)
                checked += len(interim.entries)
                problems += [f"after kill-all round {total}: {p}" for p in more]
                for _ in range(PRODUCERS):
                    pool.spawn()
                continue
            victim = rng.choice(list(pool.live))
            kills.append((pool.kill(victim), victim))
            all_kills.append(kills[-1][0])
            total += 1
            pool.spawn()
        pool.pump(time.monotonic() + 0.05)
        for tag in list(pool.live):
            pool.kill(tag)
    finally:
        pool.close()
    acks = pool.acks()
    found, more = verify_log(path, acks, every_lsn_acked=False)
    problems += more
    checked += len(found.entries)
    waits = survivor_waits(pool, kills)
    longest = max(waits, default=(0.0, -1, -1, False))
    outside = [w for w, _, _, ckpt in waits if not ckpt]
    quiet = quiet_gaps(pool, all_kills)
    line = (f"shared-kill[{mode}] impl={walogs.IMPLEMENTATION} seed={SEED}: {total} kills "
            f"({len(kills)} single), {len(acks.by_lsn)} acknowledged LSNs, {checked} stored "
            f"entries checked (at every kill-all round and at the end), {len(found.segments)} segments up to {found.segments[-1] if found.segments else '-'}; "
            f"survivor wait after a death: longest {longest[0] * 1e3:.1f} ms "
            f"(victim {longest[1]}, survivor {longest[2]}), p99 "
            f"{(statistics.quantiles([w for w, *_ in waits], n=100)[98] if len(waits) > 1 else 0) * 1e3:.1f} ms, "
            f"median {statistics.median([w for w, *_ in waits] or [0]) * 1e3:.1f} ms over {len(waits)}; "
            f"outside checkpoints: longest {max(outside, default=0) * 1e3:.1f} ms, p99 "
            f"{(statistics.quantiles(outside, n=100)[98] if len(outside) > 1 else 0) * 1e3:.1f} ms "
            f"(with no death in between, calls took up to {max(quiet, default=0) * 1e3:.1f} ms); "
            f"problems {len(problems)} in {time.monotonic() - started:.1f}s")
    with capsys.disabled():
        print("\n" + line)
    assert not problems, line + "\n" + "\n".join(problems[:12])
    assert total >= min(KILLS_PER_MODE, 40), line
    assert len(acks.by_lsn) >= total, line  # the producers did real work between the kills
    assert longest[0] < GUARD, line


# ---------------------------------------------------------------------- stopped while holding a lock


def _is_segment_fd(fd: int) -> bool:
    try:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return False
    return name.startswith("wal-") and name.endswith(".log")


def _fd_name(fd: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return ""


def _stop_here(w: int, point: str) -> None:
    send(w, b"T")
    os.kill(os.getpid(), signal.SIGSTOP)


POINTS = {
    # point: (what the stopped holder blocks: "append" = every append of the others, "none" = appends go on)
    "append_pwrite": "append",  # APPEND held, dirty set, half of its frames written
    "sync_lead": "append",  # SYNC held by a leader: under "always" every other producer waits for a sync
    "rotate_sync": "append",  # APPEND held in rotate(), before the full segment's fdatasync
    "rotate_new_segment": "append",  # APPEND held, dirty set, the next segment created, not yet durable
    "rotate_floor": "append",  # APPEND and FLOOR held, the rotation switched, LSN_FLOOR being synced
    "checkpoint_unlink": "none",  # CHECKPOINT held (the others do not checkpoint here: they would wait), a segment unlinked, the directory not yet synced
    "attach": "none",  # INIT held by a process attaching
}


def _victim(w: int, path: str, cfg: walogs.WalConfig, tag: int, point: str, warmup: int) -> None:
    """A producer that stops itself once at ``point``, after ``warmup`` calls of its own."""
    calls = {"n": 0, "rotating": False, "wrote": False, "opening": True}
    real = {name: getattr(_io, name) for name in ("pwrite_all", "fdatasync", "sync_dir", "unlink", "open_or_create")}

    def armed() -> bool:
        return calls["n"] >= warmup

    def pwrite_all(fd, data, offset):
        if point == "append_pwrite" and armed() and _is_segment_fd(fd) and len(data) > 64:
            half = len(data) // 2
            real["pwrite_all"](fd, bytes(data)[:half], offset)  # the dead holder's half-written frames
            _stop_here(w, point)
            return  # never reached: SIGKILLed while stopped
        if _is_segment_fd(fd):
            calls["wrote"] = True
        real["pwrite_all"](fd, data, offset)

    def fdatasync(fd):
        if point == "first_open" and calls["opening"]:
            _stop_here(w, point)  # recovery's sync (P11): INIT held, ATTACHED write-locked, nothing published
        if armed():
            if point == "sync_lead" and calls["wrote"] and not calls["rotating"] and _is_segment_fd(fd):
                _stop_here(w, point)
            if point == "rotate_sync" and calls["rotating"] and _is_segment_fd(fd):
                _stop_here(w, point)
            if point == "rotate_floor" and calls["rotating"] and _fd_name(fd) == "LSN_FLOOR":
                _stop_here(w, point)
        real["fdatasync"](fd)

    def sync_dir(p):
        if point == "rotate_new_segment" and armed() and calls["rotating"]:
            _stop_here(w, point)
        real["sync_dir"](p)

    def unlink(p):
        real["unlink"](p)
        if point == "checkpoint_unlink" and armed() and os.path.basename(p).startswith("wal-"):
            _stop_here(w, point)

    def open_or_create(p, *args):
        if point == "attach" and calls["opening"] and os.path.basename(p) == VISIBLE_NAME:
            _stop_here(w, point)
        return real["open_or_create"](p, *args)

    _io.pwrite_all, _io.fdatasync, _io.sync_dir, _io.unlink, _io.open_or_create = (
        pwrite_all, fdatasync, sync_dir, unlink, open_or_create)
    wal = walogs.Wal.open(path, cfg, shared=True, lock_timeout=30.0)
    calls["opening"] = False
    send(w, b"O", wal.next_lsn)
    counter = 0
    for i in range(100_000):
        calls["wrote"] = False
        if point in ("append_pwrite", "sync_lead") or i % 3 != 2:
            items = [payload(tag, counter + k) for k in range(6 if point == "append_pwrite" else 1)]
            got = wal.append_batch(items)
            send(w, b"A", got.start, got.stop - 1, counter)
            counter += len(items)
        elif point.startswith("rotate"):
            calls["rotating"] = True
            wal.rotate()
            calls["rotating"] = False
            send(w, b"P")
        else:
            wal.rotate()
            upto = wal.next_lsn - 1 - 100
            if upto > 0:
                send(w, b"K", upto)
                wal.checkpoint(upto)
            send(w, b"P")
        calls["n"] += 1
    wal.close()


def _wait_stopped(pool: Pool, tag: int, timeout: float) -> bool:
    pid = pool.live[tag][0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
        if done and os.WIFSTOPPED(status):
            return True
        if done:
            return False
        pool.pump(time.monotonic() + 0.005)
    return False


ROUNDS = scale(1, 5)


@pytest.mark.parametrize("point", list(POINTS))
def test_sigstop_holder_then_sigkill(tmp_path, point, capsys):
    """A producer stopped at a known point holding a lock blocks the others exactly where
    that lock does; SIGKILLed there, it blocks nobody: the others go on within the guard, a
    new producer attaches, and the final log holds every acknowledged entry once, with what
    the dead holder left half done cut (never built upon). Once per commit, ROUNDS times under
    WALOGS_STRESS, each on a log of its own."""
    for round_ in range(ROUNDS):
        _stop_and_kill(str(tmp_path / f"log{round_}"), point, SEED + round_, capsys)


def _stop_and_kill(path: str, point: str, seed: int, capsys) -> None:
    cfg = config("always")
    pool = Pool(path, cfg, seed)
    others = Mix(checkpoint=0.0)  # only the victim checkpoints: a stopped CHECKPOINT holder blocks checkpoints
    try:
        for _ in range(3):
            pool.spawn(mix=others)
        pool.pump(time.monotonic() + 0.1)  # the others have attached and are appending
        victim = pool.spawn(lambda w, tag=pool.next_tag: _victim(w, path, cfg, tag, point, 0 if point == "attach" else 12))
        assert _wait_stopped(pool, victim, 20.0), f"the victim never stopped at {point}"
        stopped = time.monotonic_ns()
        pool.pump(time.monotonic() + 0.5)
        killed = pool.kill(victim)
        pool.pump(time.monotonic() + 0.1)
        late = pool.spawn(mix=others)  # attaches after the death (INIT was held by the victim at "attach")
        pool.pump(time.monotonic() + 0.4)
        for tag in list(pool.live):
            pool.kill(tag)
    finally:
        pool.close()
    acks = pool.acks()
    found, problems = verify_log(path, acks, every_lsn_acked=False)
    assert any(r[0] == b"T" for r in pool.records[victim])
    others = [tag for tag in pool.records if tag not in (victim, late)]
    during = sum(1 for tag in others for r in pool.records[tag] if r[0] == b"A" and stopped + GRACE_NS < r[4] < killed)
    after = {tag: next((r[4] for r in pool.records[tag] if r[0] in (b"A", b"P", b"K") and r[4] > killed), None)
             for tag in others}
    waits = [(t - killed) * 1e-9 if t is not None else float("inf") for t in after.values()]
    opened_late = next((r[4] - pool.started[late] for r in pool.records[late] if r[0] == b"O"), None)
    line = (f"sigstop[{point}] impl={walogs.IMPLEMENTATION}: others acknowledged {during} appends while the "
            f"victim was stopped; after the kill they went on within "
            f"{max(waits) * 1e3:.1f} ms (longest); a new producer forked after it attached "
            f"in {opened_late * 1e-6 if opened_late else float('inf'):.1f} ms (from its fork); "
            f"{len(acks.by_lsn)} acknowledged, {len(found.entries)} stored")
    with capsys.disabled():
        print("\n" + line)
    assert not problems, line + "\n" + "\n".join(problems[:12])
    if POINTS[point] == "append":
        assert during == 0, line  # the stopped holder really held the lock the others need
    elif POINTS[point] == "none":
        assert during > 0, line  # ... and only that one
    assert max(waits) < GUARD and opened_late is not None and opened_late < GUARD * 1e9, line


# ---------------------------------------------------------------------- a dead holder's half-done work, step by step


def _agent_open(state, path, cfg):
    state["wal"] = walogs.Wal.open(path, cfg, shared=True)
    state.setdefault("wals", []).append(state["wal"])
    return state["wal"].next_lsn


def _agent_die_at(state, point, items):
    """Arm a trap that SIGKILLs this process at ``point``, then make the call that reaches it."""
    real_pwrite, real_sync_dir = _io.pwrite_all, _io.sync_dir

    def pwrite_all(fd, data, offset):
        if point == "mid_pwrite" and _is_segment_fd(fd):
            real_pwrite(fd, bytes(data)[:len(data) * 3 // 5], offset)  # whole frames, then a torn one
            os.kill(os.getpid(), signal.SIGKILL)
        real_pwrite(fd, data, offset)

    def sync_dir(p):
        if point == "after_new_segment":
            os.kill(os.getpid(), signal.SIGKILL)  # the next segment exists, empty; dirty is set
        real_sync_dir(p)

    _io.pwrite_all, _io.sync_dir = pwrite_all, sync_dir
    if point == "mid_pwrite":
        state["wal"].append_batch(items)
    else:
        state["wal"].rotate()


def _agent_step(state, name, *args):
    got = getattr(state["wal"], name)(*args)
    return (got.start, got.stop) if isinstance(got, range) else got


def _agent_close(state):
    state["wal"].close()


@pytest.mark.parametrize("point", ["mid_pwrite", "after_new_segment"])
def test_next_holder_cuts_what_a_dead_holder_left(log_dir, point):
    """The dirty flag's repair, step by step: a shared writer is SIGKILLed holding APPEND
    (mid-pwrite of a batch: whole frames of it on disk, then a torn one; or in a rotation,
    after it created the next segment). The next process to append cuts the segment back
    to the shared state's end before writing (its frame lands exactly there: the file is
    exactly the frames acknowledged) and removes the empty next segment; it then rotates
    and appends on, and the final log is every acknowledged entry, nothing else, and its
    segment files exactly their frames. Without the repair the dead holder's whole frames
    stay behind the survivor's shorter one, in a completed segment."""
    from _shared_procs import Agent

    path = str(log_dir)
    cfg = config("always")
    victim, survivor = Agent(), Agent()
    try:
        survivor(_agent_open, path, cfg)
        survivor(_agent_step, "append_batch", [payload(1, k) for k in range(3)])
        victim(_agent_open, path, cfg)
        segments = sorted(n for n in os.listdir(path) if n.startswith("wal-"))
        active = os.path.join(path, segments[-1])
        size = os.path.getsize(active)
        victim.start(_agent_die_at, point, [b"v" * 1000 for _ in range(3)])
        victim.proc.join(20)
        assert victim.proc.exitcode == -signal.SIGKILL
        if point == "mid_pwrite":
            assert os.path.getsize(active) > size  # the dead holder's half-written frames are there
        else:
            assert len([n for n in os.listdir(path) if n.startswith("wal-")]) == len(segments) + 1
        assert survivor(_agent_step, "append", b"x") == 4
        assert os.path.getsize(active) == size + len(make_frame(4, b"x"))
        assert sorted(n for n in os.listdir(path) if n.startswith("wal-")) == segments
        survivor(_agent_step, "rotate")
        assert survivor(_agent_step, "append_batch", [b"y", b"z"]) == (5, 7)
        survivor(_agent_close)
    finally:
        victim.stop()
        survivor.stop()
    with walogs.Wal.open(path, cfg) as wal:
        entries = list(wal.iter())
    assert entries == [(1, payload(1, 0)), (2, payload(1, 1)), (3, payload(1, 2)), (4, b"x"), (5, b"y"), (6, b"z")]
    raw = b""
    for name in sorted(n for n in os.listdir(path) if n.startswith("wal-")):
        with open(os.path.join(path, name), "rb") as f:
            raw += f.read()
    assert raw == b"".join(make_frame(lsn, data) for lsn, data in entries)


def test_last_writer_to_close_cuts_a_dead_holders_batch(log_dir):
    """A batch is all or nothing across a process crash (test_batch_kill.py), shared writers
    too: a shared writer is SIGKILLed mid-pwrite of a batch (whole frames of it on disk, then a
    torn one) and nobody appends after it; the last shared writer closes, marking the log
    closed (which forgets the write in flight that recovery would cut at). Neither a reader
    nor the next open may find any entry of that batch."""
    from _shared_procs import Agent

    path = str(log_dir)
    cfg = config("always")
    victim, survivor = Agent(), Agent()
    try:
        survivor(_agent_open, path, cfg)
        survivor(_agent_step, "append_batch", [payload(1, k) for k in range(3)])
        victim(_agent_open, path, cfg)
        victim.start(_agent_die_at, "mid_pwrite", [b"v" * 1000 for _ in range(3)])
        victim.proc.join(20)
        assert victim.proc.exitcode == -signal.SIGKILL
        survivor(_agent_close)
    finally:
        victim.stop()
        survivor.stop()
    expected = [(1, payload(1, 0)), (2, payload(1, 1)), (3, payload(1, 2))]
    # The survivor was the last attached (the kernel dropped the dead one's hold): it marked VISIBLE closed.
    assert _visible.read(path).state == _visible.CLOSED
    with walogs.WalReader(path) as reader:
        assert list(reader.iter()) == expected
    with walogs.Wal.open(path, cfg) as wal:
        assert list(wal.iter()) == expected
        assert wal.append(b"next") == 4


def test_first_opener_stopped_in_recovery_then_sigkilled(log_dir, capsys):
    """The first shared opener holds INIT (and ATTACHED, exclusively) while it recovers the log;
    stopped there, every later opener waits; SIGKILLed there, the next one becomes the first
    opener, recovers the log itself, and the rest attach: all within the guard."""
    path = str(log_dir)
    cfg = config("always")
    with walogs.Wal.open(path, cfg) as wal:
        wal.append_batch([payload(999, k) for k in range(5)])
    pool = Pool(path, cfg, SEED)
    others = Mix(checkpoint=0.0)
    try:
        victim = pool.spawn(lambda w, tag=pool.next_tag: _victim(w, path, cfg, tag, "first_open", 0))
        assert _wait_stopped(pool, victim, 20.0), "the first opener never stopped in its recovery"
        waiting = [pool.spawn(mix=others) for _ in range(3)]
        pool.pump(time.monotonic() + 0.4)
        blocked = [tag for tag in waiting if not any(r[0] == b"O" for r in take(bytearray(pool.bufs[tag])))]
        killed = pool.kill(victim)
        pool.pump(time.monotonic() + 0.6)
        for tag in list(pool.live):
            pool.kill(tag)
    finally:
        pool.close()
    acks = pool.acks()
    for lsn in range(1, 6):  # the exclusive writer's entries, written before
        acks.by_lsn[lsn] = (999, lsn - 1)
    found, problems = verify_log(path, acks, every_lsn_acked=False)
    opened = {tag: next((r[4] for r in pool.records[tag] if r[0] == b"O"), None) for tag in waiting}
    waits = [(t - killed) * 1e-9 if t is not None else float("inf") for t in opened.values()]
    line = (f"first-open[{walogs.IMPLEMENTATION}]: {len(blocked)} of 3 openers waited while the first was stopped; "
            f"after its death they attached within {max(waits) * 1e3:.1f} ms; {len(acks.by_lsn)} acknowledged, "
            f"{len(found.entries)} stored")
    with capsys.disabled():
        print("\n" + line)
    assert not problems, line + "\n" + "\n".join(problems[:12])
    assert len(blocked) == 3 and max(waits) < GUARD, line
    assert any(r[0] == b"T" for r in pool.records[victim]) and found.entries[:5] == [
        (lsn, payload(999, lsn - 1)) for lsn in range(1, 6)]


def _agent_fork_sleeper(state):
    pid = os.fork()
    if pid == 0:  # a plain fork that never touches the log but keeps every inherited descriptor
        time.sleep(60)
        os._exit(0)
    return pid


def test_a_forked_childs_copies_do_not_keep_a_dead_holders_locks(log_dir):
    """A shared writer forks a child that lives on (a worker that never touches the log), then
    is SIGKILLed holding APPEND. The kernel must release the dead holder's locks: the child's
    copies of its descriptors (the at-fork hook closes the lock-carrying one; the mapping of
    WRITERS must not keep it open either, and Python's mmap keeps a duplicate of the
    descriptor it maps) may not keep them. Mapped through the lock-carrying descriptor, the
    survivor's next append waited for ever."""
    from _shared_procs import Agent

    path = str(log_dir)
    cfg = config("always")
    victim, survivor = Agent(), Agent()
    sleeper = 0
    try:
        survivor(_agent_open, path, cfg)
        victim(_agent_open, path, cfg)
        sleeper = victim(_agent_fork_sleeper)
        victim.start(_agent_die_at, "mid_pwrite", [b"v" * 1000 for _ in range(3)])
        deadline = time.monotonic() + 20
        # Not proc.join(): the sleeper holds multiprocessing's sentinel pipe open; exitcode reaps.
        while victim.proc.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert victim.proc.exitcode == -signal.SIGKILL
        assert survivor(_agent_step, "append", b"x", timeout=GUARD * 5) == 1
        survivor(_agent_close)
    finally:
        if sleeper:
            os.kill(sleeper, signal.SIGKILL)
        victim.stop()
        survivor.stop()
    with walogs.Wal.open(path, cfg) as wal:
        assert list(wal.iter()) == [(1, b"x")]
