"""open_scan: Wal.open's recovery scan of a large log, against readinto + zlib.crc32 of the same files."""

from __future__ import annotations

import os
import time
import zlib

from harness import Bench, Figure, MiB, Spec, alternate, dir_bytes

from walogs import Wal


def measure(b: Bench, spec: Spec) -> Figure:
    """Whole runs alternate after one untimed run of each; nothing is dropped from the page cache."""
    fig = Figure(spec)
    path, entries = b.log_of_bytes(b.sizes.scan_bytes)
    size = dir_bytes(path)
    segs = sorted(n for n in os.listdir(path) if n.startswith("wal-"))

    def subject() -> float:
        t0 = time.perf_counter()
        wal = Wal.open(path)
        t = time.perf_counter() - t0
        try:
            assert wal.next_lsn == entries + 1 and wal.tail_state.clean
        finally:
            wal.close()
        return size / t / 1e6

    def baseline() -> float:
        buf = bytearray(4 * MiB)
        view = memoryview(buf)
        crc32 = zlib.crc32
        total = 0
        t0 = time.perf_counter()
        for name in segs:
            crc = 0
            with open(os.path.join(path, name), "rb", buffering=0) as f:
                while True:
                    got = f.readinto(buf)
                    if not got:
                        break
                    crc = crc32(view[:got], crc)
                    total += got
        t = time.perf_counter() - t0
        assert total == size
        return size / t / 1e6

    baseline(), subject()
    base, subj = alternate(b.sizes.repeats, baseline, subject)
    fig.add_ratio(spec.name, subj, base)
    fig.data.update(log_bytes=size, segments=len(segs), entries=entries)
    fig.notes.append(f"a {size / MiB:.0f} MiB log in {len(segs)} segments ({entries:,} entries), warm cache")
    return fig
