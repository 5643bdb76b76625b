"""walogs.metrics.WalCollector, scraped for real: an HTTP server from prometheus_client, read over a socket."""

from __future__ import annotations

import urllib.request

import prometheus_client  # the walogs[prometheus] extra; requirements-dev.txt installs it
from conftest import entry

import walogs
from walogs.metrics import WalCollector


def _sample(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # the exposition sorts labels
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in the scrape:\n{text}")


def test_scraped_over_http(log_dir):
    registry = prometheus_client.CollectorRegistry()
    with walogs.Wal.open(log_dir, walogs.WalConfig(max_segment_size=600)) as wal, walogs.WalReader(log_dir) as reader:
        for i in range(20):
            wal.append(entry(i))
        with reader.cursor("billing") as cur:
            cur.commit(15)
        registry.register(WalCollector(log_dir, wal=wal))
        server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
        try:
            port = server.server_port
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
    log = str(log_dir)
    assert _sample(text, "walogs_durable_lsn", log=log) == 20
    assert _sample(text, "walogs_first_lsn", log=log) == 1
    assert _sample(text, "walogs_cursor_position", log=log, cursor="billing") == 15
    assert _sample(text, "walogs_cursor_lag_entries", log=log, cursor="billing") == 5
    assert _sample(text, "walogs_cursor_lost", log=log, cursor="billing") == 0
    assert _sample(text, "walogs_entries_total", log=log) == 20
    assert _sample(text, "walogs_syncs_total", log=log) >= 20
    assert _sample(text, "walogs_disk_bytes", log=log) > 0
