"""One writer process, a pool of reader processes following the same log, each with a named cursor.

Run with `make demo`. The writer appends orders (one by one and in
batches), rotates by size and checkpoints as far as every reader's cursor
allows (``wal.checkpoint()``); each reader follows the log with its cursor
``reader-N``, commits what it has handled, and checks it saw every entry
once, in order, undamaged. A reader that is restarted goes on from its
cursor's committed position.

Then the other way round (``many_producers``): every worker of a pool
appends to one log through its own shared writer (``Wal.open(...,
shared=True)``), and the parent reads it all back.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time

import walogs

ENTRIES = 3000
READERS = 4


def payload(lsn: int) -> bytes:
    return f"order {lsn:06d}: {'x' * (lsn % 50)}".encode()


def writer(directory: str) -> None:
    config = walogs.WalConfig(max_segment_size=16 * 1024)
    with walogs.Wal.open(directory, config) as wal:
        lsn = 0
        while lsn < ENTRIES:
            if lsn % 7 == 0 and lsn + 20 <= ENTRIES:
                lsn = wal.append_batch(payload(n) for n in range(lsn + 1, lsn + 21))[-1]
            else:
                lsn = wal.append(payload(lsn + 1))
            if lsn % 500 < 20:
                # Deletes only segments every reader's cursor has committed past.
                wal.checkpoint()
        print(f"writer: appended {ENTRIES} entries; {wal.segment_count} segments left after checkpoints")


def reader(index: int, directory: str) -> tuple[int, int]:
    seen = 0
    with walogs.WalReader(directory) as log, log.cursor(f"reader-{index}", lock_timeout=10) as cursor:
        expected = cursor.position + 1
        for lsn, data in cursor.follow(timeout=10):
            assert lsn == expected and data == payload(lsn), (index, lsn, expected)
            expected += 1
            seen += 1
            if lsn % 100 == 0 or lsn == ENTRIES:
                cursor.commit(lsn)  # durable: a restarted reader goes on after it
            if lsn % 1000 == 0:
                print(f"reader {index}: at LSN {lsn}", flush=True)
            if lsn == ENTRIES:
                break
    return index, seen


def main() -> None:
    directory = os.path.join(tempfile.mkdtemp(prefix="walogs-pool-"), "log")
    walogs.Wal.open(directory).close()  # create it so readers can start first
    with walogs.WalReader(directory) as log:
        for i in range(READERS):  # every cursor exists before the first checkpoint: it pins from LSN 1
            log.cursor(f"reader-{i}").close()
    ctx = mp.get_context("spawn")
    started = time.monotonic()
    with ctx.Pool(READERS) as pool:
        results = [pool.apply_async(reader, (i, directory)) for i in range(READERS)]
        time.sleep(0.5)  # let the readers start following
        process = ctx.Process(target=writer, args=(directory,))
        process.start()
        process.join()
        for result in results:
            index, seen = result.get(timeout=60)
            print(f"reader {index}: saw {seen} entries, in order, none missing or damaged")
    with walogs.WalReader(directory) as log:
        print("cursors:", ", ".join(f"{name} at {pos}" for name, pos in log.cursors().items()))
    print(f"{READERS} readers x {ENTRIES} entries in {time.monotonic() - started:.1f} s "
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
    main()
    print()
    many_producers()
