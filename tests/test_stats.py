"""Wal.stats() and WalReader.stats(), and the warnings on the ``walogs`` logger."""

from __future__ import annotations

import logging
import os

from conftest import entry

import walogs


def _segment_bytes(path):
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.startswith("wal-"))


def test_writer_stats_count_what_it_did_since_open(log_dir):
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=1000)) as wal:
        wal.append_batch([entry(i) for i in range(5)])
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=1000)) as wal, walogs.WalReader(log_dir) as reader:
        for i in range(40):
            wal.append(entry(i))
        wal.append_batch([entry(i) for i in range(3)])
        with reader.cursor("c") as cur:
            cur.commit(20)
            assert wal.checkpoint() > 0
            stats = wal.stats()
            seen = reader.stats()
        frame = walogs.FRAME_HEADER_SIZE + 100
        assert stats["entries"] == 43 and stats["bytes_written"] == 43 * frame
        assert stats["syncs"] >= 41 and stats["fdatasync_seconds"] > 0
        assert stats["fdatasync_mean_seconds"] == stats["fdatasync_seconds"] / stats["syncs"]
        assert stats["rotations"] == wal.segment_count + stats["segments_deleted"] - 1  # from segment 1, active at open
        assert stats["checkpoints"] == 1 and stats["segments_deleted"] > 0
        assert stats["next_lsn"] == 49 and stats["durable_lsn"] == 48 and stats["first_lsn"] == wal.first_lsn <= 21
        assert stats["segments"] == wal.segment_count and stats["bytes_on_disk"] == _segment_bytes(log_dir)
        assert stats["cursors"]["c"]["position"] == 20 and stats["cursors"]["c"]["lag"] == 28
        assert stats["cursors"]["c"]["owned"] is True and stats["cursors"]["c"]["owner_pid"] == os.getpid()
        assert stats["cursors"]["c"]["lost"] is False
        assert 0 < stats["cursors"]["c"]["lag_bytes"] <= stats["bytes_on_disk"]
        assert {k: seen[k] for k in ("durable_lsn", "first_lsn", "segments", "bytes_on_disk", "cursors")} == \
            {k: stats[k] for k in ("durable_lsn", "first_lsn", "segments", "bytes_on_disk", "cursors")}
        assert reader.stats()["cursors"]["c"]["owned"] is False


def test_bytes_written_counts_segments_checkpointed_since_open(log_dir):
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=500)) as wal:
        for i in range(30):
            wal.append(entry(i))
        wal.checkpoint(25)
        assert wal.stats()["bytes_written"] == 30 * (walogs.FRAME_HEADER_SIZE + 100)


def test_recovery_cut_is_a_warning(log_dir, caplog):
    with walogs.Wal.open(log_dir) as wal:
        wal.append(b"kept")
    segment = os.path.join(log_dir, "wal-000001.log")
    with open(segment, "ab") as f:
        f.write(b"\x20\x00\x00\x00torn")  # a frame header cut short: a write the writer never finished
    with caplog.at_level(logging.WARNING, logger="walogs"):
        with walogs.Wal.open(log_dir) as wal:
            assert not wal.tail_state.clean
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "recovery cut a torn tail" in m and str(log_dir) in m], messages


class _SlowFirstSync:
    """Wraps walogs._io.fdatasync so that its first call takes ``delay`` seconds longer.

    A real fdatasync still runs; only a disk slower than one second is simulated (the
    machine's disk cannot be made slow on demand). The compiled writers then make their
    system calls through walogs._io, so both implementations take this path.
    """

    def __init__(self, monkeypatch, delay: float) -> None:
        from walogs import _io

        self.real, self.delay, self.calls = _io.fdatasync, delay, 0
        monkeypatch.setattr(_io, "fdatasync", self)

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.calls == 1:
            import time

            time.sleep(self.delay)
        self.real(fd)


def test_slow_fdatasync_is_a_warning_and_shows_in_the_percentiles(log_dir, monkeypatch, caplog):
    for shared in (False, True):
        path = os.path.join(log_dir, f"shared-{shared}")
        # No segment preparer: its background fdatasync calls would take the slowed first one.
        with walogs.Wal.open(path, walogs.WalConfig(preallocate=False), shared=shared) as wal:
            wal.append(b"before")
            slow = _SlowFirstSync(monkeypatch, 1.05)
            with caplog.at_level(logging.WARNING, logger="walogs"):
                wal.append(b"slow")
                for i in range(20):
                    wal.append(b"fast %d" % i)
            monkeypatch.undo()
            stats = wal.stats()
        assert slow.calls >= 21
        slow_lines = [r.getMessage() for r in caplog.records if "fdatasync took" in r.getMessage()]
        assert len(slow_lines) == 1 and "wal-000001.log" in slow_lines[0] and "slower than 1 s" in slow_lines[0]
        caplog.clear()
        assert stats["fdatasync_max_seconds"] >= 1.05
        assert stats["fdatasync_p50_seconds"] < 1.0 <= stats["fdatasync_p99_seconds"]


def test_poisoning_is_a_warning_once(log_dir, monkeypatch, caplog):
    from walogs import _io

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error (injected)")

    for shared in (False, True):
        path = os.path.join(log_dir, f"shared-{shared}")
        wal = walogs.Wal.open(path, walogs.WalConfig(preallocate=False), shared=shared)
        wal.append(b"kept")
        monkeypatch.setattr(_io, "fdatasync", failing)
        with caplog.at_level(logging.WARNING, logger="walogs"):
            try:
                wal.append(b"lost")
            except OSError:
                pass
            else:
                raise AssertionError("the failed fdatasync did not raise")
            for _ in range(3):
                try:
                    wal.append(b"refused")
                except walogs.WalError as exc:
                    assert "poisoned" in str(exc)
        monkeypatch.undo()
        wal.close()
        lines = [r.getMessage() for r in caplog.records if "poisoned" in r.getMessage()]
        assert len(lines) == 1 and path in lines[0] and "Input/output error" in lines[0]
        caplog.clear()
