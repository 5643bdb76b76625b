"""Prometheus metrics for a log directory (the optional extra ``walogs[prometheus]``).

``WalCollector(path)`` reads what :meth:`walogs.WalReader.stats` reports at
each scrape, so it works in any process, next to the writer or not, and
takes no lock::

    from prometheus_client import REGISTRY
    REGISTRY.register(walogs.metrics.WalCollector("/var/lib/app/wal"))

Pass ``wal=`` (this process's own :class:`walogs.Wal`) to export the
writer's counters too: entries, bytes written, syncs, fdatasync seconds,
rotations, checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from walogs._types import PathLike
from walogs.reader import WalReader
from walogs.wal import Wal

_WRITER_COUNTERS = (
    ("entries", "walogs_entries", "Entries appended by this writer since it opened"),
    ("bytes_written", "walogs_written_bytes", "Bytes of frames written by this writer since it opened"),
    ("syncs", "walogs_syncs", "fdatasync calls of this writer since it opened"),
    ("fdatasync_seconds", "walogs_fdatasync_seconds", "Seconds spent in fdatasync by this writer since it opened"),
    ("rotations", "walogs_rotations", "Segment rotations by this writer since it opened"),
    ("checkpoints", "walogs_checkpoints", "Checkpoints by this writer since it opened"),
)


class WalCollector(Collector):
    """A ``prometheus_client`` collector for the log at ``path`` (labelled ``log=path``)."""

    def __init__(self, path: PathLike, *, wal: Optional[Wal] = None) -> None:
        """Collect from log directory ``path``; with ``wal``, from that writer's counters too."""
        self._reader = WalReader(path)
        self._wal = wal

    def collect(self) -> Iterator[Metric]:
        """The metrics now (called by ``prometheus_client`` at each scrape)."""
        log = self._reader.path
        stats: dict[str, Any] = self._reader.stats()
        for key, name, text in (("durable_lsn", "walogs_durable_lsn", "The highest LSN readers may read"),
                                ("first_lsn", "walogs_first_lsn", "The oldest LSN stored (0: none)"),
                                ("segments", "walogs_segments", "Segment files"),
                                ("bytes_on_disk", "walogs_disk_bytes", "Bytes of segment files")):
            gauge = GaugeMetricFamily(name, text, labels=["log"])
            gauge.add_metric([log], stats[key] or 0)
            yield gauge
        position = GaugeMetricFamily("walogs_cursor_position", "A named cursor's committed LSN",
                                     labels=["log", "cursor"])
        lag = GaugeMetricFamily("walogs_cursor_lag_entries", "Visible entries after a cursor's position",
                                labels=["log", "cursor"])
        lag_bytes = GaugeMetricFamily("walogs_cursor_lag_bytes", "Bytes of the segments holding a cursor's lag",
                                      labels=["log", "cursor"])
        lost = GaugeMetricFamily("walogs_cursor_lost", "1 if checkpoints deleted entries the cursor had not committed",
                                 labels=["log", "cursor"])
        for name, cursor in stats["cursors"].items():
            position.add_metric([log, name], cursor["position"])
            lag.add_metric([log, name], cursor["lag"])
            lag_bytes.add_metric([log, name], cursor["lag_bytes"])
            lost.add_metric([log, name], 1 if cursor["lost"] else 0)
        yield from (position, lag, lag_bytes, lost)
        if self._wal is not None and not self._wal.closed:
            counters: dict[str, Any] = self._wal.stats()
            for key, name, text in _WRITER_COUNTERS:
                counter = CounterMetricFamily(name, text, labels=["log"])
                counter.add_metric([log], counters[key])
                yield counter
