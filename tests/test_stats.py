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
