"""walogs.aio: the blocking API in threads; the event loop keeps running while appends sync.

Plain tests that run ``asyncio.run`` (no plugin needed). The loop's
responsiveness is checked with fdatasync slowed to 100 ms (``_io.fdatasync``
wrapped: both writers then call it): an append that synced on the loop's
thread would stall a ticking task for 100 ms or more; the bound below is 80 ms,
a guard with room for a busy machine (27 ms stalls were seen at load 10), not
a speed target.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from conftest import entry

import walogs
from walogs import _io, aio

SLOW_SYNC = 0.100


@pytest.fixture
def slow_sync(monkeypatch):
    real = _io.fdatasync

    def slow(fd):
        time.sleep(SLOW_SYNC)
        real(fd)

    monkeypatch.setattr(_io, "fdatasync", slow)


def test_appends_share_syncs_and_never_block_the_loop(log_dir, slow_sync):
    async def main():
        gaps = []
        stop = asyncio.Event()

        async def tick():
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        async with aio.open(log_dir) as wal:
            async def writer(k):
                return [await wal.append(entry(k * 100 + i)) for i in range(5)]
            lsns = await asyncio.gather(*(writer(k) for k in range(8)))
            syncs = wal.stats()["syncs"]
        stop.set()
        await ticker
        return lsns, gaps, syncs

    lsns, gaps, syncs = asyncio.run(main())
    flat = sorted(lsn for per in lsns for lsn in per)
    assert flat == list(range(1, 41))
    assert syncs < 40, "8 coroutines appending at once must share fdatasync calls"
    assert max(gaps) < 0.8 * SLOW_SYNC, f"the loop stalled {max(gaps) * 1000:.1f} ms (a sync takes {SLOW_SYNC * 1000:.0f} ms)"
    with walogs.WalReader(log_dir) as reader:
        assert [lsn for lsn, _ in reader.iter()] == flat


def test_follow_and_cursors_wait_without_blocking_the_loop(log_dir):
    async def main():
        async with aio.open(log_dir, walogs.WalConfig(max_segment_size=500)) as wal:
            await wal.append(b"first")
            reader = aio.WalReader(log_dir)
            seen = []
            ticks = 0

            async def follower():
                async for lsn, data in reader.follow(start=1, timeout=10):
                    seen.append((lsn, data))
                    if data == b"end":
                        return

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.005)
                    ticks += 1

            task, tick_task = asyncio.create_task(follower()), asyncio.create_task(ticker())
            await asyncio.sleep(0.6)  # the follower waits across more than one of its thread's slices
            assert ticks > 20
            await wal.append_batch([entry(i) for i in range(10)])
            await wal.append(b"end")
            await asyncio.wait_for(task, 10)
            tick_task.cancel()
            assert [lsn for lsn, _ in seen] == list(range(1, 13))

            cur = await reader.cursor("c")
            got = []
            async for lsn, _ in cur.follow(timeout=0.8):  # slices resume after what they yielded
                got.append(lsn)
                if lsn == 5:
                    await cur.commit(lsn)
            assert got == list(range(1, 13)) and cur.position == 5 and cur.lag == 7
            await cur.close()
            async with await reader.cursor("c") as again:
                assert [lsn async for lsn, _ in again.follow(timeout=0)] == list(range(6, 13))
            assert reader.cursors() == {"c": 5}
            reader.close()

    asyncio.run(main())


def test_a_cancelled_append_stays_in_the_log_and_its_lsn_is_logged(log_dir, slow_sync, caplog):
    async def main():
        async with aio.open(log_dir) as wal:
            task = asyncio.create_task(wal.append(b"cancelled"))
            await asyncio.sleep(SLOW_SYNC / 4)  # inside its fdatasync
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            deadline = time.monotonic() + 10  # the append finishes in its thread (a hang guard)
            while wal.wal.durable_lsn < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # its done-callback runs on the loop

    with caplog.at_level(logging.DEBUG, logger="walogs"):
        asyncio.run(main())
    assert [r for r in caplog.records if "cancelled by its caller" in r.getMessage() and "LSN 1" in r.getMessage()]
    with walogs.WalReader(log_dir) as reader:
        assert list(reader.iter()) == [(1, b"cancelled")]


def test_a_cancelled_follow_frees_its_thread(log_dir):
    from walogs import aio as aio_module

    async def main():
        async with aio.open(log_dir) as wal:
            await wal.append(b"only")
            reader = aio.WalReader(log_dir)
            got = []

            async def follower():
                async for item in reader.follow(start=1):
                    got.append(item)

            task = asyncio.create_task(follower())
            await asyncio.sleep(0.2)  # its thread now waits inside next() for a new entry
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert got == [(1, b"only")]
            reader.close()

    asyncio.run(main())
    # The iterator is closed in a thread once the waiting next() returns (one slice at most).
    closer = aio_module._executor.submit(lambda: None)
    closer.result(timeout=10)
    deadline = time.monotonic() + 10
    while aio_module._executor._work_queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not aio_module._executor._work_queue.qsize()
