"""Producer processes for the shared-writer suites (test_shared.py, test_shared_kill.py).

* ``payload(p, c)``: the one byte string producer ``p`` writes as its ``c``-th
  entry, a pure function, so every stored entry names who wrote it and can be
  checked byte for byte (``parse``).
* ``producer``: the body of a forked producer: ``Wal.open(..., shared=True)``,
  then appends, batches, syncs, rotations and checkpoints at random, and after
  every call that *returned* one report record (``RECORD``: kind, first,
  last, counter, monotonic time in ns; one ``os.write`` each, atomic below
  PIPE_BUF). ``A`` acknowledged LSNs first..last holding this producer's
  entries counter.., ``K`` a checkpoint up to ``first`` announced *before* the
  call, ``P`` another call done, ``O`` opened (``first``: its next_lsn), ``D``
  done, ``T`` a trap is about to stop it, ``E`` failed (``first`` bytes of
  message follow).
* ``Agent``: a forked process that runs module-level functions of the test
  module on request (``agent(fn, *args)``), for the tests that need a shared
  writer in another process step by step.
* ``verify_log``: a final exclusive open and a ``WalReader`` must agree, and
  hold every acknowledged entry once, bytes as written, LSNs contiguous, the
  segment files exactly the frames of the entries (built by ``make_frame``,
  not by walogs).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import struct
import sys
import time
from dataclasses import dataclass, field

from _damage import segments_of
from conftest import entry, make_frame

import walogs

RECORD = struct.Struct("<cQQQq")


def payload(p: int, c: int) -> bytes:
    """Producer ``p``'s ``c``-th entry: 16..300 bytes, every 53rd one 2000 (half a 4 KiB segment)."""
    size = 2000 if (c * 7 + p) % 53 == 0 else 16 + (c * 131 + p * 17) % 285
    return b"P%04d.%07d|" % (p, c) + entry(c, size)


def parse(data: bytes) -> tuple[int, int] | None:
    """(producer, counter) of an entry ``payload`` wrote, None for anything else."""
    if len(data) < 14 or data[:1] != b"P" or data[5:6] != b"." or data[13:14] != b"|":
        return None
    try:
        p, c = int(data[1:5]), int(data[6:13])
    except ValueError:
        return None
    return (p, c) if data == payload(p, c) else None


def send(fd: int, kind: bytes, first: int = 0, last: int = 0, counter: int = 0) -> None:
    os.write(fd, RECORD.pack(kind, first, last, counter, time.monotonic_ns()))


def send_error(fd: int, exc: BaseException) -> None:
    msg = repr(exc).encode()[:400]
    os.write(fd, RECORD.pack(b"E", len(msg), 0, 0, time.monotonic_ns()) + msg)


def take(buf: bytearray) -> list[tuple[bytes, int, int, int, int, bytes]]:
    """Remove the whole records at the start of ``buf``: (kind, first, last, counter, t_ns, message)."""
    out = []
    while len(buf) >= RECORD.size:
        kind, a, b, c, t = RECORD.unpack_from(buf)
        extra = a if kind == b"E" else 0
        if len(buf) < RECORD.size + extra:
            break
        out.append((kind, a, b, c, t, bytes(buf[RECORD.size:RECORD.size + extra])))
        del buf[:RECORD.size + extra]
    return out


@dataclass
class Mix:
    """How often a producer does what (the rest: single appends)."""

    batch: float = 0.35
    sync: float = 0.04
    rotate: float = 0.03
    checkpoint: float = 0.03
    keep: tuple[int, ...] = (20, 60, 150)
    """A checkpoint keeps at least this many of the newest LSNs (one chosen at random)."""


def producer(fd: int, path: str, config: walogs.WalConfig, tag: int, seed: int, ops: int, seconds: float,
             mix: Mix | None = None) -> None:
    """Run in a forked child: a shared writer doing ``ops`` calls (or ``seconds``), reporting each."""
    rng = random.Random(seed)
    mix = mix or Mix()
    wal = walogs.Wal.open(path, config, shared=True, lock_timeout=30.0)
    send(fd, b"O", wal.next_lsn)
    counter = 0
    deadline = time.monotonic() + seconds
    done = 0
    while done < ops and time.monotonic() < deadline:
        done += 1
        roll = rng.random()
        if roll < mix.batch:
            count = rng.randint(2, 8)
            got = wal.append_batch([payload(tag, counter + k) for k in range(count)])
            assert len(got) == count
            send(fd, b"A", got.start, got.stop - 1, counter)
            counter += count
            continue
        roll -= mix.batch
        if roll < mix.sync:
            wal.sync()
            send(fd, b"P")
            continue
        roll -= mix.sync
        if roll < mix.rotate:
            wal.rotate()
            send(fd, b"P")
            continue
        roll -= mix.rotate
        if roll < mix.checkpoint:
            upto = wal.next_lsn - 1 - rng.choice(mix.keep)
            if upto > 0:
                send(fd, b"K", upto)  # announced before: a kill may land inside it
                wal.checkpoint(upto)
            send(fd, b"P")
            continue
        lsn = wal.append(payload(tag, counter))
        send(fd, b"A", lsn, lsn, counter)
        counter += 1
    wal.close()
    send(fd, b"D", done)


# ---------------------------------------------------------------------- agents


class RemoteError(Exception):
    """An exception raised in an agent: ``kind`` is its type's name, the message its str."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


def _agent_main(conn) -> None:
    state: dict = {}
    while True:
        try:
            request = conn.recv()
        except EOFError:
            break
        if request is None:
            break
        module, name, args = request
        try:
            result = getattr(sys.modules[module], name)(state, *args)
            conn.send(("ok", result))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            conn.send(("err", type(exc).__name__, str(exc)))
    for wal in state.get("wals", ()):
        try:
            wal.close()
        except Exception:  # noqa: BLE001, S110 - closing at the end; the test checked what it needs
            pass


class Agent:
    """A forked process that runs ``fn(state, *args)`` for the test, one call at a time.

    ``fn`` must be a module-level function (found again by module and name in
    the fork); ``state`` is a dict the agent keeps between calls. An exception
    in the agent is raised here as RemoteError.
    """

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_agent_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def start(self, fn, *args) -> None:
        self.conn.send((fn.__module__, fn.__name__, args))

    def result(self, timeout: float = 60.0):
        if not self.conn.poll(timeout):
            raise TimeoutError(f"agent {self.proc.pid} gave no answer within {timeout} s")
        answer = self.conn.recv()
        if answer[0] == "err":
            raise RemoteError(answer[1], answer[2])
        return answer[1]

    def __call__(self, fn, *args, timeout: float = 60.0):
        self.start(fn, *args)
        return self.result(timeout)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)
        self.conn.close()


# ---------------------------------------------------------------------- checking the log


@dataclass
class Acks:
    """What producers acknowledged: LSN -> (producer, counter); problems found while folding."""

    by_lsn: dict[int, tuple[int, int]] = field(default_factory=dict)
    checkpoint: int = 0
    problems: list[str] = field(default_factory=list)
    calls: list[tuple[int, int]] = field(default_factory=list)
    """(first, last) of every acknowledged call."""

    def fold(self, tag: int, records) -> None:
        for kind, a, b, c, _, msg in records:
            if kind == b"A":
                self.calls.append((a, b))
                for k, lsn in enumerate(range(a, b + 1)):
                    if lsn in self.by_lsn:
                        self.problems.append(f"LSN {lsn} acknowledged twice: to producer {self.by_lsn[lsn]} "
                                             f"and to {(tag, c + k)} (P12)")
                    self.by_lsn[lsn] = (tag, c + k)
            elif kind == b"K":
                self.checkpoint = max(self.checkpoint, a)
            elif kind == b"E":
                self.problems.append(f"producer {tag} failed: {msg.decode(errors='replace')}")


@dataclass
class Found:
    entries: list[tuple[int, bytes]]
    next_lsn: int
    first_lsn: int | None
    segments: list[str]
    sizes: list[int]


def verify_log(path: str, acks: Acks, every_lsn_acked: bool) -> tuple[Found, list[str]]:
    """Open the log exclusively (it recovers what dead shared writers left) and check it.

    Every acknowledged entry is there once with the bytes its producer wrote,
    unless an announced checkpoint covered it; stored LSNs are contiguous; a
    stored entry nobody acknowledged is still a whole entry of some producer,
    and no producer's entry is stored twice; ``every_lsn_acked``: every LSN
    handed out was acknowledged (no process died). A WalReader reads the
    same entries; the segment files are exactly the frames of the entries.
    """
    problems = list(acks.problems)
    with walogs.Wal.open(path, lock_timeout=10.0) as wal:
        entries = list(wal.iter())
        next_lsn, first_lsn, count = wal.next_lsn, wal.first_lsn, wal.segment_count
    with walogs.WalReader(path) as reader:
        if list(reader.iter()) != entries:
            problems.append("a WalReader reads other entries than the exclusive open")
    lsns = [lsn for lsn, _ in entries]
    if lsns != list(range(lsns[0] if lsns else next_lsn, next_lsn)) or (first_lsn or next_lsn) != (lsns or [next_lsn])[0]:
        problems.append(f"stored LSNs are not first_lsn..next_lsn-1: {lsns[:3]}..{lsns[-3:]}, next {next_lsn} (P12)")
    stored = dict(entries)
    for lsn, (p, c) in sorted(acks.by_lsn.items()):
        data = stored.get(lsn)
        if data is None:
            if lsn > acks.checkpoint:
                problems.append(f"acknowledged LSN {lsn} (producer {p} entry {c}) is missing")
        elif data != payload(p, c):
            problems.append(f"LSN {lsn} holds {data[:20]!r}.., not producer {p}'s entry {c}")
    seen: dict[tuple[int, int], int] = {}
    for lsn, data in entries:
        who = parse(data)
        if who is None:
            problems.append(f"LSN {lsn} holds bytes no producer wrote: {data[:24]!r}")
            continue
        if who in seen:
            problems.append(f"producer {who[0]}'s entry {who[1]} is stored twice, at LSNs {seen[who]} and {lsn}")
        seen[who] = lsn
        if lsn not in acks.by_lsn and every_lsn_acked:
            problems.append(f"LSN {lsn} is stored but was never acknowledged")
    if every_lsn_acked and sorted(acks.by_lsn) != list(range(1, next_lsn)):
        missing = sorted(set(range(1, next_lsn)) - set(acks.by_lsn))
        problems.append(f"the LSNs handed out are not 1..{next_lsn - 1}: never acknowledged {missing[:10]} (P12)")
    if acks.by_lsn and next_lsn <= max(acks.by_lsn):
        problems.append(f"next_lsn {next_lsn} would hand out acknowledged LSN {max(acks.by_lsn)} again (P1)")
    gone = (first_lsn - 1) if first_lsn is not None else next_lsn - 1
    if gone > acks.checkpoint:
        problems.append(f"entries up to {gone} are gone, checkpoints were announced only up to {acks.checkpoint}")
    names = segments_of(path)
    raw = bytearray()
    sizes = []
    for name in names:
        with open(os.path.join(path, name), "rb") as f:
            data = f.read()
        raw += data
        sizes.append(len(data))
    seqs = [int(name[4:-4]) for name in names]
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))) or len(seqs) != count:
        problems.append(f"segment files {seqs} are not contiguous or not the {count} the writer counts")
    if bytes(raw) != b"".join(make_frame(lsn, data) for lsn, data in entries):
        problems.append("the segment files are not exactly the frames of the stored entries (a torn or "
                        "half-written frame was kept, or built upon)")
    return Found(entries, next_lsn, first_lsn, names, sizes), problems


# ---------------------------------------------------------------------- running producers


def drain(fds: dict[int, int], bufs: dict[int, bytearray], deadline: float, until_eof: bool = True) -> set[int]:
    """Read the report pipes ``fds`` (tag -> read end) into ``bufs`` until each is at EOF (or the
    deadline; ``until_eof=False``: one pass over what is ready). Returns the tags at EOF."""
    import select

    open_fds = {fd: tag for tag, fd in fds.items()}
    ended: set[int] = set()
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready = select.select(list(open_fds), [], [], left if until_eof else 0)[0]
        if not ready:
            if not until_eof:
                break
            continue
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                bufs[open_fds[fd]] += chunk
            else:
                ended.add(open_fds.pop(fd))
    return ended


def run_producers(path: str, config: walogs.WalConfig, count: int, ops: int, seconds: float, mix: Mix,
                  seed: int, timeout: float = 120.0) -> tuple[Acks, dict[int, list], list[str]]:
    """Fork ``count`` producers at once, let each do ``ops`` calls (or ``seconds``), reap them.

    Returns the folded acknowledgements, every producer's records, and problems (a producer
    that did not exit 0, a report missing).
    """
    from _procs import fork_with_pipe, kill_all

    fds: dict[int, int] = {}
    pids: dict[int, int] = {}
    try:
        for tag in range(count):
            pid, fd = fork_with_pipe(
                lambda w, tag=tag: producer(w, path, config, tag, seed * 1000 + tag, ops, seconds, mix), send_error)
            pids[tag], fds[tag] = pid, fd
        bufs = {tag: bytearray() for tag in fds}
        drain(fds, bufs, time.monotonic() + timeout)
    finally:
        kill_all(list(pids.values()))  # gone already: nothing to do; a hang: killed
        for fd in fds.values():
            os.close(fd)
    acks = Acks()
    records = {}
    problems = []
    for tag in sorted(bufs):
        records[tag] = take(bufs[tag])
        acks.fold(tag, records[tag])
        if not records[tag] or records[tag][-1][0] != b"D":
            problems.append(f"producer {tag} did not finish: last records {records[tag][-2:]}")
    return acks, records, problems
