"""``walogs salvage DIR OUT``: every intact entry of a damaged log, and a report of what was lost.

One flipped bit in a completed segment stops ``Wal.open`` and every reader at
the damage (P5, P10), with no way, before this command, to get the intact
entries after it. Logs here are written by the real writer, damaged in
copies, and salvaged by the real CLI (``python -m walogs`` subprocesses, this
process's environment so WALOGS_PURE_PYTHON picks the implementation under
test). The export is parsed here from its documented layout
(``lsn u64 | len u32 | data``, little-endian) and compared with what the
writer appended; the log directory must be byte-for-byte unchanged (P3).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess

import pytest
from _procs import run_walogs
from _damage import HEADER, append_bytes, flip_bit, frames, frames_of, seg_name, segments_of, set_bytes
from conftest import entry, make_frame, settled, snapshot

import walogs
TIMEOUT = 60
COUNT = 120


def payload(lsn: int) -> bytes:
    if lsn == 50:
        return entry(lsn, 200_000)  # larger than a read chunk, right after the damage in some cases
    return entry(lsn, 40 + (lsn * 13) % 50)


EXPECTED = {lsn: payload(lsn) for lsn in range(1, COUNT + 1)}


def run(*args) -> subprocess.CompletedProcess:
    return run_walogs(*args, timeout=TIMEOUT)


def read_export(out) -> list[tuple[int, bytes]]:
    with open(os.path.join(out, "entries.bin"), "rb") as f:
        data = f.read()
    entries, pos = [], 0
    while pos < len(data):
        lsn, length = struct.unpack_from("<QI", data, pos)
        assert pos + 12 + length <= len(data), f"record at byte {pos} runs past the file"
        entries.append((lsn, data[pos + 12 : pos + 12 + length]))
        pos += 12 + length
    return entries


def read_report(out) -> dict:
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """COUNT entries in 1 KiB segments (LSN 50 alone in a big one), closed cleanly."""
    path = tmp_path_factory.mktemp("salvage") / "log"
    with walogs.Wal.open(path, walogs.WalConfig(max_segment_size=1024)) as wal:
        for lsn in range(1, COUNT + 1):
            assert wal.append(payload(lsn)) == lsn
    assert len(segments_of(path)) >= 8
    return path


@pytest.fixture
def log(template, tmp_path):
    directory = tmp_path / "log"
    shutil.copytree(template, directory)
    return directory


def segment_holding(directory, lsn: int) -> tuple[str, list[tuple[int, int, int]]]:
    for name in segments_of(directory):
        found = frames_of(directory / name)
        if any(f[2] == lsn for f in found):
            return name, found
    raise AssertionError(lsn)


def frame_of(directory, lsn: int) -> tuple[str, int, int]:
    """(segment, offset, total length) of LSN's frame."""
    name, found = segment_holding(directory, lsn)
    offset, total, _ = next(f for f in found if f[2] == lsn)
    return name, offset, total


def salvage(log, tmp_path, code: int) -> tuple[list[tuple[int, bytes]], dict, str]:
    """Run the real salvage; check it changed nothing in the log; return export, report, stdout."""
    before = snapshot(log)
    out = tmp_path / "out"
    proc = run("salvage", log, out)
    assert proc.returncode == code, (proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert proc.stderr == b""
    assert snapshot(log) == before  # P3: read-only on DIR
    assert sorted(os.listdir(out)) == ["entries.bin", "report.json"]
    exported, report = read_export(out), read_report(out)
    assert report["entries"] == len(exported)
    assert [lsn for lsn, _ in exported] == sorted({lsn for lsn, _ in exported}), "LSN order, each once"
    for lsn, data in exported:
        assert data == EXPECTED[lsn], lsn  # never a damaged entry
    return exported, report, proc.stdout.decode()


def lsns_except(*lost: int) -> list[int]:
    return [lsn for lsn in range(1, COUNT + 1) if lsn not in lost]


def test_a_flipped_bit_in_a_completed_segment_loses_one_entry_not_the_rest(log, tmp_path):
    """The defect: Wal.open and readers stop at the damage; salvage gets every entry after it."""
    name, offset, total = frame_of(log, 20)
    assert name != segments_of(log)[-1]
    flip_bit(log / name, offset + HEADER + 3)
    with pytest.raises(walogs.WalCorruptError):
        walogs.Wal.open(log)
    with pytest.raises(walogs.WalCorruptError):
        list(walogs.WalReader(log).iter())
    exported, report, text = salvage(log, tmp_path, 1)
    assert [lsn for lsn, _ in exported] == lsns_except(20)
    assert report["status"] == "damaged" and (report["first_lsn"], report["last_lsn"]) == (1, COUNT)
    assert report["damage"] == [{"kind": "damaged frames", "segment": name, "start": offset, "end": offset + total,
                                 "reason": "CRC mismatch", "first_lost_lsn": 20, "last_lost_lsn": 20,
                                 "continues_previous": False}]
    assert f"{name} bytes {offset}..{offset + total}" in text and "LSN 20 lost" in text


@pytest.mark.parametrize("field", ["len", "crc", "lsn"])
def test_damage_in_a_frame_header_loses_that_frame_only(log, tmp_path, field):
    name, offset, total = frame_of(log, 33)
    flip_bit(log / name, offset + {"len": 2, "crc": 5, "lsn": 9}[field])
    exported, report, _ = salvage(log, tmp_path, 1)
    assert [lsn for lsn, _ in exported] == lsns_except(33)
    (damage,) = report["damage"]
    assert (damage["segment"], damage["start"], damage["first_lost_lsn"], damage["last_lost_lsn"]) == (
        name, offset, 33, 33)


def test_garbage_over_several_frames_and_a_big_entry_after_it(log, tmp_path):
    """Random bytes over LSNs 46..49; LSN 50 (200 KB, larger than a read chunk) comes through."""
    first, offset, _ = frame_of(log, 46)
    last, end, total = frame_of(log, 49)
    assert first == last
    set_bytes(log / first, offset, random.Random(46).randbytes(end + total - offset))
    exported, report, _ = salvage(log, tmp_path, 1)
    assert [lsn for lsn, _ in exported] == lsns_except(46, 47, 48, 49)
    (damage,) = report["damage"]
    assert (damage["start"], damage["end"], damage["first_lost_lsn"], damage["last_lost_lsn"]) == (
        offset, end + total, 46, 49)


def test_damage_across_a_segment_boundary(log, tmp_path):
    """The last six frames of one segment zeroed and the first of the next flipped: the search for a
    continuing frame in the next segment allows for the frames the damaged tail before it may have
    held (docs/format.md's LSN window counts the 16-byte headers that fit since the last good frame)."""
    names = segments_of(log)
    i = next(i for i in range(len(names) - 1)
             if min(len(frames_of(log / names[i])), len(frames_of(log / names[i + 1]))) >= 8
             and all(f[2] != 50 for f in frames_of(log / names[i]) + frames_of(log / names[i + 1])))
    tail = frames_of(log / names[i])[-6:]
    head = frames_of(log / names[i + 1])[0]
    set_bytes(log / names[i], tail[0][0], bytes(sum(f[1] for f in tail)))
    flip_bit(log / names[i + 1], head[0] + HEADER)
    lost = [f[2] for f in tail] + [head[2]]
    exported, report, text = salvage(log, tmp_path, 1)
    assert [lsn for lsn, _ in exported] == lsns_except(*lost)
    # One run of lost LSNs, counted once: which range held which is not known.
    ranges = [(d["segment"], d["first_lost_lsn"], d["last_lost_lsn"], d["continues_previous"])
              for d in report["damage"]]
    assert ranges == [(names[i], lost[0], lost[-1], False), (names[i + 1], None, None, True)], ranges
    assert f"LSNs {lost[0]}..{lost[-1]} lost" in text and "counted with the damage before it" in text


def test_the_first_frame_of_the_log_damaged(log, tmp_path):
    flip_bit(log / segments_of(log)[0], HEADER + 1)
    exported, report, _ = salvage(log, tmp_path, 1)
    assert [lsn for lsn, _ in exported] == lsns_except(1)
    assert (report["damage"][0]["first_lost_lsn"], report["damage"][0]["last_lost_lsn"]) == (1, 1)


def test_a_missing_segment_is_reported_with_the_lsns_it_held(log, tmp_path):
    names = segments_of(log)
    held = [f[2] for f in frames_of(log / names[2])]
    os.remove(log / names[2])
    exported, report, text = salvage(log, tmp_path, 1)
    assert [lsn for lsn, _ in exported] == lsns_except(*held)
    (damage,) = report["damage"]
    assert (damage["kind"], damage["segment"], damage["first_lost_lsn"], damage["last_lost_lsn"]) == (
        "missing segments", names[2], held[0], held[-1])
    assert names[2] in text


def test_an_lsn_jump_is_reported_and_the_frames_after_it_kept(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    (log / seg_name(1)).write_bytes(b"".join(make_frame(lsn, EXPECTED[lsn]) for lsn in (*range(1, 6), 9, 10)))
    (log / seg_name(2)).write_bytes(frames(11, [EXPECTED[11], EXPECTED[12]]))
    exported, report, _ = salvage(log, tmp_path, 1)
    assert [lsn for lsn, _ in exported] == [1, 2, 3, 4, 5, 9, 10, 11, 12]
    (damage,) = report["damage"]
    assert (damage["kind"], damage["first_lost_lsn"], damage["last_lost_lsn"]) == ("missing entries", 6, 8)


def test_mid_log_damage_in_the_last_segment(log, tmp_path):
    last = segments_of(log)[-1]
    found = frames_of(log / last)
    assert len(found) >= 3
    flip_bit(log / last, found[1][0] + HEADER)
    exported, report, _ = salvage(log, tmp_path, 1)
    assert [lsn for lsn, _ in exported] == lsns_except(found[1][2])


def test_a_torn_tail_is_not_a_loss(log, tmp_path):
    last = log / segments_of(log)[-1]
    size = os.path.getsize(last)
    append_bytes(last, make_frame(COUNT + 1, b"cut short by a crash")[:20])
    exported, report, text = salvage(log, tmp_path, 3)
    assert [lsn for lsn, _ in exported] == lsns_except()
    (damage,) = report["damage"]
    assert (damage["kind"], damage["start"], damage["first_lost_lsn"]) == ("torn tail", size, None)
    assert report["status"] == "torn"


def test_a_clean_log_exports_everything(log, tmp_path):
    exported, report, text = salvage(log, tmp_path, 0)
    assert exported == sorted(EXPECTED.items())
    assert report["status"] == "clean" and report["damage"] == []
    assert text.startswith(f"salvaged {COUNT} entries (LSN 1..{COUNT})")


def test_a_live_writer_is_read_up_to_its_visible_end_and_not_disturbed(log, tmp_path):
    with walogs.Wal.open(log, walogs.WalConfig(max_segment_size=1024)) as wal:
        settled(wal)  # its segment preparer done: the writer changes nothing while salvage reads
        exported, report, _ = salvage(log, tmp_path, 0)
        assert [lsn for lsn, _ in exported] == lsns_except()
        assert report["live_writer_visible_lsn"] == COUNT
        assert wal.append(b"still writing") == COUNT + 1


@pytest.mark.parametrize("where", ["inside", "not empty", "a file", "no parent"])
def test_out_must_be_a_new_or_empty_directory_outside_the_log(log, tmp_path, where):
    out = {"inside": log / "salvaged", "not empty": tmp_path / "full", "a file": tmp_path / "file",
           "no parent": tmp_path / "missing" / "out"}[where]
    if where == "not empty":
        out.mkdir()
        (out / "keep").write_bytes(b"earlier")
    elif where == "a file":
        out.write_bytes(b"a file")
    before, around = snapshot(log), sorted(os.listdir(tmp_path))
    proc = run("salvage", log, out)
    assert proc.returncode == 2 and proc.stdout == b""
    line = proc.stderr.decode()
    assert len(line.splitlines()) == 1 and "Traceback" not in line and str(out) in line or str(out.parent) in line
    assert snapshot(log) == before and sorted(os.listdir(tmp_path)) == around


def test_an_empty_out_directory_is_accepted(log, tmp_path):
    (tmp_path / "out").mkdir()
    exported, _, _ = salvage(log, tmp_path, 0)
    assert len(exported) == COUNT
