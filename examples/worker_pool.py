"""A crash-resumable job queue on one log; then a pool of producers appending to one log.

Run with `make demo`, or ``python examples/worker_pool.py queue DIR [JOBS]``
to run the queue in DIR: kill -9 the parent or any worker at any instant and
run it again, and it goes on where it stopped.

The job queue (``job_queue``). The parent appends the jobs to the log
``DIR/jobs``; a job's id is its LSN (job n is ``square n``, at LSN n), so a
restarted parent appends from ``wal.next_lsn`` on and never adds a job twice.
Each of ``WORKERS`` workers owns a partition, the jobs whose LSN is
``index`` modulo ``WORKERS`` (keep ``WORKERS`` fixed for a queue's life), and
reads the whole log through its own named cursor ``worker-N``, skipping
other workers' jobs. (A cursor has one owner at a time, so one cursor shared
by all workers would serialize them; a cursor per partition lets each commit
on its own.) For each of its jobs it

1. does the job,
2. appends ``"LSN result"`` to its own results log ``DIR/results/worker-N``
   (durable when ``append`` returns),
3. and only then commits its cursor to that LSN.

A worker killed once its result is in the results log but before the commit
(during or after the ``append``) leaves a result its cursor does not know
of: when restarted it reads the last result in its results log and skips
the LSNs up to it. So a job may *run* twice (killed after doing it, before
its result was written), but its result is recorded exactly once: every
job's LSN appears in exactly one results entry. That is at-least-once
processing made idempotent by recording each job's LSN with its result; a
job with effects elsewhere must make them idempotent by the LSN too.

The parent checkpoints with ``wal.checkpoint()``, which deletes only jobs
every cursor has committed past. A worker killed by a signal is started
again (one that raises stops the queue). Workers leave when their parent
dies; a restarted worker waits for its cursor until the old owner is gone
(a cursor has one owner at a time).

Then the other way round (``many_producers``): every worker of a pool
appends to one log through its own shared writer (``Wal.open(...,
shared=True)``), and the parent reads it all back.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import sys
import tempfile
import time

import walogs

JOBS = 2000
WORKERS = 4


def do_job(data: bytes) -> bytes:
    """The work: ``square n`` gives n * n."""
    n = int(data.split()[1])
    return str(n * n).encode()


def last_recorded(results: walogs.Wal) -> int:
    """The LSN of the last job whose result this results log holds (0: none)."""
    last = results.next_lsn - 1
    if last < 1:
        return 0
    for _, entry in results.iter(last):
        return int(entry.split()[0])
    return 0


def worker(index: int, base: str, total: int, parent: int) -> None:
    results_dir = os.path.join(base, "results", f"worker-{index}")
    with walogs.WalReader(os.path.join(base, "jobs")) as log, \
            log.cursor(f"worker-{index}", lock_timeout=None) as cursor, \
            walogs.Wal.open(results_dir) as results:
        done = last_recorded(results)  # may be past the cursor: recorded, then killed before the commit
        while cursor.position < total and os.getppid() == parent:
            for lsn, data in cursor.follow(timeout=0.2):
                mine = lsn % WORKERS == index
                if mine and lsn > done:
                    results.append(b"%d %s" % (lsn, do_job(data)))  # durable when it returns...
                if mine or lsn == total:
                    cursor.commit(lsn)  # ...and only then committed
                if lsn == total or os.getppid() != parent:
                    break  # done, or the parent died: leave (a restart goes on from here)


def job_queue(base: str, total: int = JOBS) -> None:
    """Run the queue in ``base`` until every one of ``total`` jobs has its result; resumable."""
    started = time.monotonic()
    jobs_dir = os.path.join(base, "jobs")
    with walogs.Wal.open(jobs_dir, walogs.WalConfig(max_segment_size=16 * 1024)) as wal:
        with walogs.WalReader(jobs_dir) as log:
            for i in range(WORKERS):  # every cursor exists before the first checkpoint: it pins from LSN 1
                if f"worker-{i}" not in log.cursors():
                    log.cursor(f"worker-{i}").close()
        ctx = mp.get_context("spawn")

        def start(index: int) -> mp.process.BaseProcess:
            process = ctx.Process(target=worker, args=(index, base, total, os.getpid()))
            process.start()
            return process

        workers = [start(i) for i in range(WORKERS)]
        print(f"job queue in {base}: {WORKERS} workers, pids {' '.join(str(p.pid) for p in workers)}",
              flush=True)
        while wal.next_lsn <= total:  # a job's id is its LSN: a restart appends the missing ones only
            first = wal.next_lsn
            wal.append_batch(b"square %d" % n for n in range(first, min(first + 50, total + 1)))
            wal.checkpoint()  # deletes only jobs every worker's cursor has committed past
        for i in range(WORKERS):
            workers[i].join()
            while workers[i].exitcode != 0:
                if (workers[i].exitcode or 0) > 0:  # it raised: a bug, not a crash; the next run resumes
                    sys.exit(f"worker {i} failed (exit code {workers[i].exitcode})")
                # Killed by a signal: it starts again from its cursor.
                print(f"worker {i} killed (signal {-(workers[i].exitcode or 0)}); starting it again", flush=True)
                workers[i] = start(i)
                workers[i].join()
        wal.checkpoint()
        segments = wal.segment_count
    recorded: collections.Counter[int] = collections.Counter()
    for i in range(WORKERS):
        with walogs.WalReader(os.path.join(base, "results", f"worker-{i}")) as results:
            for _, entry in results.iter():
                lsn, result = entry.split()
                assert result == str(int(lsn) ** 2).encode(), entry
                recorded[int(lsn)] += 1
    assert sorted(recorded) == list(range(1, total + 1)), "a job has no result"
    assert set(recorded.values()) == {1}, "a job has two results"
    print(f"job queue: {total} jobs, each result recorded exactly once by {WORKERS} workers; "
          f"{segments} job segment(s) left after checkpoints; this run took {time.monotonic() - started:.1f} s "
          f"(codec: {walogs.IMPLEMENTATION})")


# ------------------------------------------------------------------ many producers

PRODUCERS = 4
PER_PRODUCER = 500
SHARED_CONFIG = walogs.WalConfig(max_segment_size=16 * 1024)  # every shared writer must use the same


def producer(index: int, directory: str) -> list[int]:
    """One pool worker: appends its orders (one by one, and every tenth time a batch of 5)."""
    lsns: list[int] = []
    with walogs.Wal.open(directory, SHARED_CONFIG, shared=True) as wal:
        n = 0
        while n < PER_PRODUCER:
            if n % 10 == 9 and n + 5 <= PER_PRODUCER:
                lsns += wal.append_batch(f"producer {index} order {n + k}".encode() for k in range(5))
                n += 5
            else:
                lsns.append(wal.append(f"producer {index} order {n}".encode()))
                n += 1
    return lsns


def many_producers() -> None:
    directory = os.path.join(tempfile.mkdtemp(prefix="walogs-producers-"), "log")
    started = time.monotonic()
    with mp.get_context("spawn").Pool(PRODUCERS) as pool:
        acknowledged = pool.starmap(producer, [(i, directory) for i in range(PRODUCERS)])
    total = PRODUCERS * PER_PRODUCER
    # Every LSN handed out exactly once, 1..total, whichever process appended.
    assert sorted(lsn for lsns in acknowledged for lsn in lsns) == list(range(1, total + 1))
    entries = list(walogs.WalReader(directory).iter())
    assert [lsn for lsn, _ in entries] == list(range(1, total + 1))
    for index, lsns in enumerate(acknowledged):
        # At the LSNs a producer was given: its entries, in the order it appended them.
        assert [entries[lsn - 1][1] for lsn in lsns] == [f"producer {index} order {n}".encode()
                                                         for n in range(PER_PRODUCER)], index
    owners = [data.split()[1] for _, data in entries]
    switches = sum(a != b for a, b in zip(owners, owners[1:]))
    segments = len([f for f in os.listdir(directory) if f.endswith(".log")])
    print(f"{PRODUCERS} producers x {PER_PRODUCER} entries appended to one log in "
          f"{time.monotonic() - started:.1f} s, interleaved ({switches} switches between producers): "
          f"LSNs 1..{total}, each once, across {segments} segments; the parent read back every "
          f"entry, each producer's in its own order (codec: {walogs.IMPLEMENTATION})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["queue"]:  # queue DIR [JOBS]: run (or resume) the queue in DIR
        job_queue(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else JOBS)
    else:
        job_queue(tempfile.mkdtemp(prefix="walogs-jobs-"))
        print()
        many_producers()
