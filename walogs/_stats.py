"""What ``Wal.stats()`` and ``WalReader.stats()`` report: plain dicts, cheap enough to build every second.

Built from what the writer already counts (``syncs``, ``sync_seconds``,
its latest fdatasync durations), its snapshot, a directory listing and the
cursor files; nothing more is counted on the append path for them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

from walogs import _retention, _segments


def percentiles(durations_ns: list[int]) -> dict[str, float]:
    """p50, p99 and max (seconds) of a writer's recent fdatasync durations (zeros when there are none)."""
    if not durations_ns:
        return {"fdatasync_p50_seconds": 0.0, "fdatasync_p99_seconds": 0.0, "fdatasync_max_seconds": 0.0}
    ordered = sorted(durations_ns)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e-9  # noqa: E731
    return {"fdatasync_p50_seconds": pick(0.5), "fdatasync_p99_seconds": pick(0.99),
            "fdatasync_max_seconds": ordered[-1] * 1e-9}


@dataclass
class Baseline:
    """Where a writer stood when it opened, so its stats say what it did since."""

    seq: int
    end: int
    next_lsn: int
    checkpoints: int = 0
    deleted: int = 0
    """Segments checkpoints deleted."""
    deleted_written: int = 0
    """Bytes of those segments that this writer completed (numbered from ``seq`` on)."""

    def bytes_written(self, completed: list[Any], snapshot: tuple[int, int, int, int, int]) -> int:
        """Bytes of frames written since open.

        Segments completed since (kept or deleted) and the active one, less what ``seq`` held at open.
        """
        kept = sum(s.end for s in completed if s.seq >= self.seq)
        return kept + self.deleted_written + snapshot[1] - self.end

    def checkpointed(self, deleted: list[Any]) -> None:
        """Count a checkpoint that deleted the segments ``deleted``."""
        self.checkpoints += 1
        self.deleted += len(deleted)
        self.deleted_written += sum(s.end for s in deleted if s.seq >= self.seq)


def on_disk(directory: str) -> dict[str, int]:
    """Segment count and their bytes on disk now."""
    count = size = 0
    for name in _segments.segment_files(directory)[0].values():
        try:
            size += os.stat(os.path.join(directory, name)).st_size
        except FileNotFoundError:
            continue  # checkpointed since the listing
        count += 1
    return {"segments": count, "bytes_on_disk": size}


def cursors(directory: str, durable_lsn: int) -> dict[str, dict[str, Any]]:
    """Each cursor: position, lag (entries and bytes), lost, owned, owner pid."""
    return {info.name: {k: v for k, v in asdict(info).items() if k != "name"}
            for info in _retention.describe(directory, durable_lsn)}


def reader_stats(directory: str, durable_lsn: int, first_lsn: Optional[int]) -> dict[str, Any]:
    """``WalReader.stats()``."""
    return {"durable_lsn": durable_lsn, "first_lsn": first_lsn, **on_disk(directory),
            "cursors": cursors(directory, durable_lsn)}


def writer_stats(directory: str, base: Baseline, completed: list[Any], snapshot: tuple[int, int, int, int, int],
                 syncs: int, sync_seconds: float, durable_lsn: int, first_lsn: Optional[int],
                 recent_syncs_ns: Optional[list[int]] = None) -> dict[str, Any]:
    """``Wal.stats()``; ``recent_syncs_ns``: the writer's latest fdatasync durations (its percentiles)."""
    seq, _, _, _, next_lsn = snapshot
    return {
        "entries": next_lsn - base.next_lsn,
        "bytes_written": base.bytes_written(completed, snapshot),
        "syncs": syncs,
        "fdatasync_seconds": sync_seconds,
        "fdatasync_mean_seconds": sync_seconds / syncs if syncs else 0.0,
        **percentiles(recent_syncs_ns or []),
        "rotations": seq - base.seq,
        "checkpoints": base.checkpoints,
        "segments_deleted": base.deleted,
        "next_lsn": next_lsn,
        **reader_stats(directory, durable_lsn, first_lsn),
    }
