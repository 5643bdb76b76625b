"""An event-sourced key-value store: the log holds the events, a snapshot plus a cursor holds the state.

Run with `python examples/event_store.py`. Every change is an event
appended to the log (``set key value`` or ``del key``). A projector owns the
named cursor ``snapshot``: it applies events to an in-memory dict, and every
so often writes the dict to a snapshot file (temp file, fsync, rename) and
*then* commits the cursor to the snapshot's LSN. The writer checkpoints with
``wal.checkpoint()``, which deletes only segments the cursor has committed
past, so every event after the last snapshot is still in the log. A restart
loads the snapshot and replays the log from the cursor: the same state.
"""

from __future__ import annotations

import json
import os
import random
import tempfile

import walogs

EVENTS = 5000
SNAPSHOT_EVERY = 700


def event(rng: random.Random) -> dict[str, str]:
    key = f"k{rng.randrange(200)}"
    return {"op": "del", "key": key} if rng.random() < 0.2 else {"op": "set", "key": key, "value": str(rng.random())}


def apply(state: dict[str, str], data: bytes) -> None:
    change = json.loads(data)
    if change["op"] == "set":
        state[change["key"]] = change["value"]
    else:
        state.pop(change["key"], None)


def save_snapshot(path: str, state: dict[str, str], lsn: int) -> None:
    temp = path + ".tmp"
    with open(temp, "w") as f:
        json.dump({"lsn": lsn, "state": state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(temp, path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename is durable before the cursor says the events are applied
    finally:
        os.close(fd)


def load(log_dir: str, snapshot: str) -> tuple[dict[str, str], int]:
    """The state after every stored event: the snapshot, then the log from the cursor on."""
    state: dict[str, str] = {}
    if os.path.exists(snapshot):
        with open(snapshot) as f:
            saved = json.load(f)
        state = saved["state"]
    with walogs.WalReader(log_dir) as reader, reader.cursor("snapshot") as cursor:
        if os.path.exists(snapshot):
            assert saved["lsn"] == cursor.position, "the cursor is committed only after its snapshot"
        replayed = 0
        for _, data in cursor.iter():
            apply(state, data)
            replayed += 1
    return state, replayed


def main() -> None:
    base = tempfile.mkdtemp(prefix="walogs-events-")
    log_dir, snapshot = os.path.join(base, "log"), os.path.join(base, "snapshot.json")
    rng = random.Random(7)
    model: dict[str, str] = {}
    config = walogs.WalConfig(max_segment_size=32 * 1024)
    with walogs.Wal.open(log_dir, config) as wal, walogs.WalReader(log_dir) as reader:
        with reader.cursor("snapshot") as projector:
            state: dict[str, str] = {}
            for n in range(1, EVENTS + 1):
                data = json.dumps(event(rng)).encode()
                apply(model, data)
                wal.append(data)
                if n % SNAPSHOT_EVERY == 0:
                    for lsn, entry in projector.iter():
                        apply(state, entry)
                    save_snapshot(snapshot, state, lsn)
                    projector.commit(lsn)
                    deleted = wal.checkpoint()  # as far as the snapshot cursor allows
                    print(f"snapshot at LSN {lsn}: {len(state)} keys; checkpoint deleted {deleted} segments")
        print(f"{EVENTS} events; the log keeps LSNs {wal.first_lsn}..{wal.durable_lsn} "
              f"in {wal.segment_count} segments")
    state, replayed = load(log_dir, snapshot)
    assert state == model, "snapshot + replay must give the state of every event"
    print(f"restart: snapshot + {replayed} replayed events = {len(state)} keys, the same state as all {EVENTS} events")


if __name__ == "__main__":
    main()
