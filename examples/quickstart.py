"""walogs in one page: write a log, crash-proof reopen, read it back.

Run with `make demo`. Writes a log in a temporary directory, simulates a
torn write at the end (what a power cut mid-write leaves), reopens, and
prints what recovery found.
"""

from __future__ import annotations

import os
import tempfile

import walogs


def main() -> None:
    print(f"walogs {walogs.__version__}, codec: {walogs.IMPLEMENTATION}")
    directory = os.path.join(tempfile.mkdtemp(prefix="walogs-demo-"), "log")

    # One writer per directory; every acknowledged append is fdatasync'd (sync="always").
    config = walogs.WalConfig(max_segment_size=4096)
    with walogs.Wal.open(directory, config) as wal:
        for i in range(50):
            wal.append(f"order {i}: 1 x widget".encode())
        batch = wal.append_batch(f"batch item {i}".encode() for i in range(100))
        print(f"wrote LSNs 1..{batch[-1]} into {wal.segment_count} segments at {directory}")
        last_segment = os.path.join(directory, sorted(n for n in os.listdir(directory) if n.startswith("wal-"))[-1])

    # A crash mid-write leaves half a frame at the end of the last segment.
    with open(last_segment, "ab") as f:
        f.write(b"\x40\x00\x00\x00half-a-frame")

    with walogs.Wal.open(directory, config) as wal:
        state = wal.tail_state
        if state.clean:
            print("recovery: tail clean")
        else:
            print(f"recovery: cut a torn tail at byte {state.truncated_at} of {os.path.basename(last_segment)}")
        print(f"recovered LSNs {wal.first_lsn}..{wal.next_lsn - 1}; next append gets {wal.next_lsn}")
        lsn = wal.append(b"after recovery")

        # Readers (any process) see what the writer made durable.
        reader = walogs.WalReader(directory)
        entries = list(reader.iter(start=lsn - 2))
        for entry_lsn, data in entries:
            print(f"  reader sees {entry_lsn}: {data.decode()}")

        wal.rotate()
        removed = wal.checkpoint(applied_up_to=lsn)
        print(f"checkpoint removed {removed} old segments; first_lsn now {wal.first_lsn}, next_lsn {wal.next_lsn}")


if __name__ == "__main__":
    main()
