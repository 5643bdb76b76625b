"""What a live iterator costs in memory (P9): its read buffer is sized to the entries, not 4 MiB.

Each case runs in a fresh subprocess (this process's environment, so
WALOGS_PURE_PYTHON picks the implementation under test) that opens many
iterators over a small real log, advances each a little and keeps them all
alive, then reports the memory tracemalloc saw allocated meanwhile, per
iterator. Before the fix every started iterator held a buffer as large as
the segment (up to 4 MiB): 2,500 iterators over a 1 MB segment took 2.6 GB.
"""

from __future__ import annotations

import json

import pytest
from _procs import run_python

import walogs

SMALL = 1000  # bytes per small entry
BIG = 2 * 1024 * 1024  # one entry much larger than a read chunk
BOUND = 128 * 1024  # per iterator: one read chunk and the iterator's own objects, with room to spare

CHILD = r"""
import json, sys, tracemalloc
import walogs
directory, count, advance = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
reader = walogs.WalReader(directory)
held = []
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
for _ in range(count):
    iterator = reader.iter()
    lsns = [next(iterator)[0] for _ in range(advance)]
    held.append(iterator)
after = tracemalloc.get_traced_memory()[0]
print(json.dumps({"implementation": walogs.IMPLEMENTATION, "per_iterator": (after - before) / count,
                  "last_lsn": lsns[-1]}))
"""


def measure(directory, count: int, advance: int) -> dict:
    proc = run_python(CHILD, directory, count, advance, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["implementation"] == walogs.IMPLEMENTATION
    assert result["last_lsn"] == advance
    return result


@pytest.mark.parametrize("sync", ["none", "always"])
def test_many_started_iterators_over_a_1mb_segment_hold_little(tmp_path, sync):
    """150 iterators, each one entry into a 1 MB segment: each holds far less than the segment."""
    directory = tmp_path / "log"
    with walogs.Wal.open(directory, walogs.WalConfig(sync=sync)) as wal:
        wal.append_batch([bytes([i % 251]) * SMALL for i in range(1000)])
    per_iterator = measure(directory, 150, 1)["per_iterator"]
    assert per_iterator < BOUND, f"{per_iterator / 1024:.0f} KiB per live iterator over a 1 MB segment"


def test_iterators_past_a_large_entry_do_not_keep_its_buffer(tmp_path):
    """A 2 MiB entry needs a 2 MiB read buffer once; iterators that moved past it keep a small one."""
    directory = tmp_path / "log"
    with walogs.Wal.open(directory, walogs.WalConfig(sync="none")) as wal:
        wal.append_batch([b"s" * SMALL, b"B" * BIG] + [b"t" * SMALL] * 200)
    per_iterator = measure(directory, 40, 3)["per_iterator"]
    assert per_iterator < BOUND, f"{per_iterator / 1024:.0f} KiB per live iterator past a {BIG >> 20} MiB entry"
