"""The ``walogs`` command line (README.md "Command line"; P3, P10).

The commands run for real, as ``python -m walogs`` subprocesses from the repo
root with this process's environment (so WALOGS_PURE_PYTHON picks the same
implementation), every call with a timeout; a few run in-process through
``walogs.cli.main`` where that is quicker. Sample logs are written by the
real writer once per worker and damaged in copies: a torn tail, mid-log
damage in the last segment, damage in a completed segment, a segment gap.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest

import walogs
from walogs import cli
from _procs import ROOT, read_ready, stop, walogs_cmd
from _procs import run_walogs as run
from _damage import HEADER, append_bytes, flip_bit, frames, frames_of, seg_name, segments_of
from conftest import entry, make_frame, settled, snapshot

TIMEOUT = 30  # seconds, for every subprocess call
LIMIT = 160
CONFIG = walogs.WalConfig(max_segment_size=LIMIT)
BINARY = b"\xff\xfe\x80 not utf-8"  # LSN 9: json must carry it as base64
UNICODE = "caf\u00e9 \u2713".encode()  # LSN 11: valid UTF-8, json must carry it as text


def _data(lsn: int) -> bytes:
    if lsn == 6:
        return b""
    if lsn == 9:
        return BINARY
    if lsn == 11:
        return UNICODE
    return entry(lsn, 12 + (lsn * 7) % 23 if lsn < 12 else 16)


# Laid out by the rotation rule (docs/api.rst) as segments of LSNs 1-4, 5-9, 10-14, 15-18.
ENTRIES = [(lsn, _data(lsn)) for lsn in range(1, 19)]
N = len(ENTRIES)
KINDS = ["clean", "torn", "mid", "completed", "gap"]
FORMATS = ["text", "hex", "json", "raw"]


# ---------------------------------------------------------------- helpers


def err_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return proc.stderr.decode().splitlines()


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int) -> str:
    """Exit ``code``, exactly one line on stderr, no traceback; returns the line."""
    stderr = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, proc.stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert len(stderr.splitlines()) == 1 and stderr.endswith("\n"), stderr
    return stderr.strip()


def text_lines(entries) -> list[str]:
    return [f"{lsn}\t{data.decode('utf-8', 'backslashreplace')}" for lsn, data in entries]


def parse_raw(out: bytes) -> list[bytes]:
    """Split ``dump --format raw`` output: each entry is a u32 little-endian length, then its bytes."""
    entries, pos = [], 0
    while pos < len(out):
        (length,) = struct.unpack_from("<I", out, pos)
        assert pos + 4 + length <= len(out), f"entry at byte {pos} runs past the output"
        entries.append(out[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return entries


def parse_output(fmt: str, out: bytes) -> list[tuple[int, bytes]] | list[bytes]:
    """Decode ``dump --format fmt`` output back into entries (raw: their bytes, without LSNs)."""
    if fmt == "raw":
        return parse_raw(out)
    result = []
    for line in out.decode().splitlines():
        if fmt == "json":
            record = json.loads(line)
            assert set(record) in ({"lsn", "text"}, {"lsn", "base64"}), record
            data = record["text"].encode() if "text" in record else base64.b64decode(record["base64"])
            result.append((record["lsn"], data))
        elif fmt == "hex":
            lsn, hexdata = line.split("\t")
            result.append((int(lsn), bytes.fromhex(hexdata)))
        else:
            lsn, text = line.split("\t", 1)
            result.append((int(lsn), text))
    return result


def expected_output(fmt: str, entries):
    if fmt == "raw":
        return [data for _, data in entries]
    if fmt == "text":
        return [(lsn, data.decode("utf-8", "backslashreplace")) for lsn, data in entries]
    return list(entries)


# ---------------------------------------------------------------- sample logs


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The clean sample log: 18 entries in four segments, written by the real writer."""
    path = tmp_path_factory.mktemp("cli-template") / "log"
    with walogs.Wal.open(path, CONFIG) as wal:
        for lsn, data in ENTRIES:
            assert wal.append(data) == lsn
    names = segments_of(path)
    assert len(names) == 4, names
    last = frames_of(path / names[-1])
    assert len(last) >= 4 and all(length > HEADER for _, length, _ in last), last
    assert len(frames_of(path / names[1])) >= 3
    return path


class Sample:
    """A copy of the template, maybe damaged, and what the damage should be reported as."""

    def __init__(self, directory, kind: str, segment=None, offset=None, kept=ENTRIES, original=None):
        self.dir = directory
        self.kind = kind
        self.segment = segment  # file name of the damaged segment
        self.offset = offset  # offset of the first bad frame in it
        self.kept = kept  # the entries before the damage
        self.original = original  # the damaged segment's bytes after damage


def make_sample(template, tmp_path, kind: str) -> Sample:
    directory = tmp_path / kind
    shutil.copytree(template, directory)
    names = segments_of(directory)
    if kind == "clean":
        return Sample(directory, kind)
    if kind == "torn":
        # Half a frame appended to the last segment: a crash mid-write.
        last = directory / names[-1]
        offset = os.path.getsize(last)
        frame = make_frame(len(ENTRIES) + 1, entry(99, 40))
        append_bytes(last, frame[: HEADER + 12])
        return Sample(directory, kind, names[-1], offset, ENTRIES, last.read_bytes())
    if kind == "mid":
        # A flipped bit in the second frame of the last segment; valid frames continue after it (P10).
        last = directory / names[-1]
        offset, _, lsn = frames_of(last)[1]
        flip_bit(last, offset + HEADER + 1)
        return Sample(directory, kind, names[-1], offset, ENTRIES[: lsn - 1], last.read_bytes())
    if kind == "completed":
        # A flipped bit in the data of the third frame of segment 2 (a completed one; its second is empty).
        second = directory / names[1]
        offset, length, lsn = frames_of(second)[2]
        assert length > HEADER + 1
        flip_bit(second, offset + HEADER + 1)
        return Sample(directory, kind, names[1], offset, ENTRIES[: lsn - 1], second.read_bytes())
    if kind == "gap":
        # Segment 3 is gone (I11).
        first_missing = frames_of(directory / names[2])[0][2]
        os.remove(directory / names[2])
        return Sample(directory, kind, names[2], None, ENTRIES[: first_missing - 1])
    raise AssertionError(kind)


@pytest.fixture
def sample(template, tmp_path):
    return lambda kind: make_sample(template, tmp_path, kind)


# ---------------------------------------------------------------- the environment


def test_subprocesses_use_this_implementation():
    """The subprocesses inherit WALOGS_PURE_PYTHON, so they run the implementation under test."""
    proc = subprocess.run([sys.executable, "-c", "import walogs; print(walogs.IMPLEMENTATION)"],
                          cwd=ROOT, env=dict(os.environ), capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == walogs.IMPLEMENTATION
    version = run("--version")
    assert version.returncode == 0 and walogs.__version__ in version.stdout.decode()


# ---------------------------------------------------------------- usage


@pytest.mark.parametrize("command", [[], ["info"], ["verify"], ["dump"], ["salvage"], ["repair"]])
def test_help_exits_zero(command):
    proc = run(*command, "--help")
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    assert out.startswith("usage:") and " ".join(["walogs", *command]) in out
    if command == []:
        for name in ("info", "verify", "dump", "salvage", "repair"):
            assert name in out
    if command == ["dump"]:
        assert all(word in out for word in ("--start", "--follow", "--format"))
    if command == ["repair"]:
        assert "--truncate-corrupt-tail" in out


@pytest.mark.parametrize("args", [
    [],                                   # no command
    ["bogus", "{dir}"],                   # unknown command
    ["info"], ["verify"], ["dump"], ["repair"],  # missing DIR
    ["dump", "{dir}", "--start", "abc"],
    ["dump", "{dir}", "--format", "xml"],
    ["info", "{dir}", "--bogus"],
    ["verify", "{dir}", "extra"],
], ids=lambda a: " ".join(a) or "nothing")
def test_bad_usage_exits_2_with_one_line(template, args):
    before = snapshot(template)
    proc = run(*[a.format(dir=template) for a in args])
    line = assert_one_line_error(proc, 2)
    assert line.startswith("walogs")
    assert proc.stdout == b""
    assert snapshot(template) == before


def test_bad_usage_in_process(template, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["dump", str(template), "--format", "xml"])
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1 and "xml" in captured.err


@pytest.mark.parametrize("args", [
    ["info"], ["info", "--json"], ["verify"], ["verify", "--json"], ["dump"], ["dump", "--follow"],
    ["repair"], ["repair", "--truncate-corrupt-tail"],
], ids=" ".join)
def test_missing_directory_is_one_line_exit_2_and_nothing_created(tmp_path, args):
    missing = tmp_path / "no" / "such-log"
    proc = run(args[0], missing, *args[1:])
    line = assert_one_line_error(proc, 2)
    assert str(missing) in line and "does not exist" in line
    assert proc.stdout == b""
    assert os.listdir(tmp_path) == []


def test_a_file_is_not_a_log_directory(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"not a log")
    for command in ("info", "verify", "dump", "repair"):
        proc = run(command, path)
        line = assert_one_line_error(proc, 2)
        assert str(path) in line and "not a directory" in line
    assert os.listdir(tmp_path) == ["file"] and path.read_bytes() == b"not a log"


# ---------------------------------------------------------------- read-only (P3)

# Exit codes of the read-only commands per sample: info always 0; verify 0/3/1;
# dump stops with 1 where the reader meets corruption before the end.
EXPECTED_CODES = {
    "clean": {"info": 0, "verify": 0, "dump": 0},
    "torn": {"info": 0, "verify": 3, "dump": 0},
    "mid": {"info": 0, "verify": 1, "dump": 1},
    "completed": {"info": 0, "verify": 1, "dump": 1},
    "gap": {"info": 0, "verify": 1, "dump": 1},
}
READ_ONLY = [["info"], ["info", "--json"], ["verify"], ["verify", "--json"]] + [
    ["dump", "--format", fmt] for fmt in FORMATS
] + [["dump", "--start", "3"]]


@pytest.mark.parametrize("kind", KINDS)
def test_read_only_commands_change_nothing(sample, kind):
    """P3: info, verify and dump write, truncate, create and delete nothing, whatever the log holds."""
    s = sample(kind)
    before = snapshot(s.dir)
    parent = sorted(os.listdir(s.dir.parent))
    for args in READ_ONLY:
        proc = run(args[0], s.dir, *args[1:])
        assert "Traceback" not in proc.stderr.decode(), (args, proc.stderr)
        assert proc.returncode == EXPECTED_CODES[kind][args[0]], (args, proc.returncode, proc.stderr)
        assert snapshot(s.dir) == before, args
        assert sorted(os.listdir(s.dir.parent)) == parent, args
    # The untouched log still opens as the next writer would see it.
    if kind in ("clean", "torn"):
        with walogs.WalReader(s.dir) as reader:
            assert list(reader.iter()) == ENTRIES


def test_read_only_commands_create_no_lock_file(tmp_path):
    """A log without LOCK or VISIBLE (e.g. written by the Rust crate): nothing gets created (P3)."""
    directory = tmp_path / "bare"
    directory.mkdir()
    (directory / seg_name(1)).write_bytes(frames(1, [data for _, data in ENTRIES[:5]]))
    before = snapshot(directory)
    assert run("info", directory).returncode == 0
    assert run("verify", directory).returncode == 0
    dumped = run("dump", directory, "--format", "json")
    assert dumped.returncode == 0 and parse_output("json", dumped.stdout) == ENTRIES[:5]
    info = json.loads(run("info", "--json", directory).stdout)
    assert info["writer"] == {"live": False, "pid": None, "shared": False}
    assert snapshot(directory) == before == {seg_name(1): before[seg_name(1)]}


def test_info_with_a_live_writer_reports_it_and_does_not_disturb_it(sample):
    """info finds the writer without taking the lock (P3): the writer keeps appending."""
    s = sample("clean")
    wal = settled(walogs.Wal.open(s.dir, CONFIG, lock_timeout=0))  # the next segment prepared: nothing moves
    try:
        before = snapshot(s.dir)
        proc = run("info", s.dir)
        assert proc.returncode == 0, proc.stderr
        assert f"live, pid {os.getpid()}" in proc.stdout.decode()
        info = json.loads(run("info", "--json", s.dir).stdout)
        assert info["writer"] == {"live": True, "pid": os.getpid(), "shared": False}
        assert run("verify", s.dir).returncode == 0
        assert parse_output("json", run("dump", s.dir, "--format", "json").stdout) == ENTRIES
        assert snapshot(s.dir) == before
        # The writer was not disturbed: it still holds the lock and appends.
        assert wal.append(b"after info") == len(ENTRIES) + 1
        with pytest.raises(walogs.WalLockedError):
            walogs.Wal.open(s.dir, lock_timeout=0)
    finally:
        wal.close()
    info = json.loads(run("info", "--json", s.dir).stdout)
    assert info["writer"] == {"live": False, "pid": None, "shared": False}
    assert info["segments"][-1]["last_lsn"] == len(ENTRIES) + 1


def test_info_in_process_sees_a_writer_of_this_process(sample, capsys):
    s = sample("clean")
    with walogs.Wal.open(s.dir, CONFIG) as wal:
        assert cli.main(["info", "--json", str(s.dir)]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["writer"] == {"live": True, "pid": os.getpid(), "shared": False}
        wal.append(b"still writing")
    assert cli.main(["info", str(s.dir)]) == 0
    assert "writer:    none" in capsys.readouterr().out


# ---------------------------------------------------------------- info


def expected_segments(directory) -> list[dict]:
    rows = []
    for name in segments_of(directory):
        lsns = [lsn for _, _, lsn in frames_of(directory / name)]
        rows.append({"segment": name, "size": os.path.getsize(directory / name),
                     "first_lsn": lsns[0] if lsns else None, "last_lsn": lsns[-1] if lsns else None})
    return rows


def test_info_text_lists_segments_sizes_lsn_ranges_and_state(sample):
    s = sample("clean")
    proc = run("info", s.dir)
    assert proc.returncode == 0 and proc.stderr == b""
    out = proc.stdout.decode()
    assert "writer:    none" in out
    rows = expected_segments(s.dir)
    assert f"segments:  {len(rows)}" in out
    for row in rows:
        assert re.search(rf"{row['segment']}\s+{row['size']} bytes\s+LSN {row['first_lsn']}\.\.{row['last_lsn']}\n", out), row
    assert re.search(rf"state:\s+clean, LSN 1\.\.{len(ENTRIES)}, next LSN {len(ENTRIES) + 1}", out)


def test_info_json(sample):
    s = sample("clean")
    info = json.loads(run("info", "--json", s.dir).stdout)
    assert info["directory"] == str(s.dir)
    assert info["writer"] == {"live": False, "pid": None, "shared": False}
    rows = [{k: row[k] for k in ("segment", "size", "first_lsn", "last_lsn")} for row in info["segments"]]
    assert rows == expected_segments(s.dir)
    assert all(row["valid_bytes"] == row["size"] for row in info["segments"])
    assert info["tail"]["status"] == "clean"
    assert (info["tail"]["first_lsn"], info["tail"]["last_lsn"], info["tail"]["next_lsn"]) == (1, N, N + 1)


def test_info_json_reports_a_torn_tail(sample):
    s = sample("torn")
    info = json.loads(run("info", "--json", s.dir).stdout)
    tail = info["tail"]
    assert (tail["status"], tail["segment"], tail["offset"]) == ("torn", s.segment, s.offset)
    last = info["segments"][-1]
    assert (last["size"], last["valid_bytes"], last["last_lsn"]) == (s.offset + HEADER + 12, s.offset, N)


def test_info_json_reports_mid_log_damage(sample):
    s = sample("mid")
    info = json.loads(run("info", "--json", s.dir).stdout)
    tail = info["tail"]
    assert (tail["status"], tail["segment"], tail["offset"], tail["in_last_segment"]) == (
        "corrupt", s.segment, s.offset, True)
    last = info["segments"][-1]
    assert last["valid_bytes"] == s.offset and last["last_lsn"] == s.kept[-1][0]


@pytest.mark.parametrize("kind", ["completed", "gap"])
def test_info_reports_lsn_ranges_of_intact_segments_after_damage(sample, kind):
    """An operator reads info to learn what each segment holds: an intact segment after the damage
    (or after the gap) still holds its entries and must not be listed as empty."""
    s = sample(kind)
    info = json.loads(run("info", "--json", s.dir).stdout)
    assert info["tail"]["status"] == "corrupt"
    got = {row["segment"]: (row["first_lsn"], row["last_lsn"]) for row in info["segments"]}
    for row in expected_segments(s.dir):
        if row["segment"] > s.segment:  # intact segments after the damage
            assert got[row["segment"]] == (row["first_lsn"], row["last_lsn"]), (row["segment"], got)


# ---------------------------------------------------------------- verify


def test_verify_clean_exits_0(sample, capsys):
    s = sample("clean")
    proc = run("verify", s.dir)
    assert proc.returncode == 0 and proc.stderr == b""
    assert "clean" in proc.stdout.decode()
    assert cli.main(["verify", "--json", str(s.dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "clean" and report["last_lsn"] == len(ENTRIES)


def test_verify_torn_tail_exits_3_naming_segment_and_offset(sample, capsys):
    s = sample("torn")
    proc = run("verify", s.dir)
    assert proc.returncode == 3, proc.stderr
    out = proc.stdout.decode()
    assert s.segment in out and f"offset {s.offset}" in out and "torn" in out
    assert cli.main(["verify", "--json", str(s.dir)]) == 3
    report = json.loads(capsys.readouterr().out)
    assert (report["status"], report["segment"], report["offset"], report["torn_bytes"]) == (
        "torn", s.segment, s.offset, HEADER + 12)


@pytest.mark.parametrize("kind", ["mid", "completed"])
def test_verify_damage_exits_1_naming_segment_offset_and_reason(sample, kind, capsys):
    s = sample(kind)
    proc = run("verify", s.dir)
    assert proc.returncode == 1, proc.stderr
    report_text = proc.stdout.decode() + proc.stderr.decode()
    assert s.segment in report_text and f"offset {s.offset}" in report_text
    assert "CRC mismatch" in report_text
    assert ("mid-log" if kind == "mid" else "completed segment") in report_text
    assert cli.main(["verify", "--json", str(s.dir)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["status"], report["segment"], report["offset"]) == ("corrupt", s.segment, s.offset)
    assert report["in_last_segment"] is (kind == "mid")
    assert "CRC mismatch" in report["reason"]


def test_verify_segment_gap_exits_1_naming_the_missing_segment(sample):
    s = sample("gap")
    proc = run("verify", s.dir)
    assert proc.returncode == 1, proc.stderr
    text = proc.stdout.decode() + proc.stderr.decode()
    missing = int(s.segment[4:10])
    assert "gap" in text and seg_name(missing - 1) in text and seg_name(missing + 1) in text
    report = json.loads(run("verify", "--json", s.dir).stdout)
    assert report["status"] == "corrupt" and "gap" in report["reason"]


# ---------------------------------------------------------------- dump


@pytest.mark.parametrize("fmt", FORMATS)
def test_dump_formats_equal_the_entries(template, fmt):
    proc = run("dump", template, "--format", fmt)
    assert proc.returncode == 0 and proc.stderr == b""
    assert parse_output(fmt, proc.stdout) == expected_output(fmt, ENTRIES)


def test_dump_default_format_is_text_and_json_keeps_binary_as_base64(template):
    out = run("dump", template).stdout
    assert out.decode().splitlines() == text_lines(ENTRIES)
    assert "9\t\\xff\\xfe\\x80 not utf-8" in out.decode()
    records = [json.loads(line) for line in run("dump", template, "--format", "json").stdout.splitlines()]
    assert records[5] == {"lsn": 6, "text": ""}
    assert records[8] == {"lsn": 9, "base64": base64.b64encode(BINARY).decode()}
    assert records[10] == {"lsn": 11, "text": UNICODE.decode()}


@pytest.mark.parametrize("start", [1, 2, 9, 15, N, N + 1])
def test_dump_start_in_process(template, start, capsysbinary):
    assert cli.main(["dump", str(template), "--start", str(start), "--format", "hex"]) == 0
    out = capsysbinary.readouterr().out
    assert parse_output("hex", out) == ENTRIES[start - 1:]


@pytest.mark.parametrize("start", ["0", str(N + 2), "-1"])
def test_dump_start_out_of_range_is_one_line(template, start):
    proc = run("dump", template, "--start", start)
    assert_one_line_error(proc, 1)
    assert proc.stdout == b""


def test_dump_torn_log_prints_every_entry(sample):
    s = sample("torn")
    proc = run("dump", s.dir, "--format", "raw")
    assert proc.returncode == 0 and parse_raw(proc.stdout) == [data for _, data in ENTRIES]


@pytest.mark.parametrize("kind", ["mid", "completed", "gap"])
def test_dump_stops_at_corruption_with_one_line(sample, kind):
    """A reader never yields a damaged entry: dump prints what comes before and fails in one line."""
    s = sample(kind)
    proc = run("dump", s.dir, "--format", "json")
    assert_one_line_error(proc, 1)
    got = parse_output("json", proc.stdout)
    assert got == s.kept[: len(got)]
    if kind != "gap":
        assert got == s.kept
        assert s.segment in proc.stderr.decode()


NL = b"\n"


def _read_until(proc: subprocess.Popen, buf: bytearray, lines: int, deadline: float) -> None:
    while buf.count(b"\n") < lines:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out with {buf.count(NL)} of {lines} lines: {bytes(buf)[-200:]!r}"
        chunk = read_ready(proc.stdout.fileno(), left)
        if chunk is not None:
            assert chunk, f"dump --follow ended early (exit {proc.wait(5)}): {proc.stderr.read()!r}"
            buf += chunk


def test_dump_follow_prints_new_entries_as_they_are_appended(sample):
    s = sample("clean")
    more = [(lsn, entry(lsn, 30)) for lsn in range(len(ENTRIES) + 1, len(ENTRIES) + 13)]
    with walogs.Wal.open(s.dir, CONFIG) as wal:
        proc = subprocess.Popen(walogs_cmd("dump", s.dir, "--follow", "--format", "json", "--start", "5"),
                                cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, bufsize=0)
        try:
            buf = bytearray()
            deadline = time.monotonic() + 20
            _read_until(proc, buf, len(ENTRIES) - 4, deadline)
            segments = wal.segment_count
            for lsn, data in more[:6]:
                assert wal.append(data) == lsn
            wal.append_batch([data for _, data in more[6:]])
            assert wal.segment_count > segments  # the follower crossed rotations
            _read_until(proc, buf, len(ENTRIES) - 4 + len(more), deadline)
            assert proc.poll() is None  # still following
        finally:
            stop(proc)
    assert parse_output("json", bytes(buf)) == (ENTRIES + more)[4:]


def _sigint_as_default() -> None:
    # A non-interactive shell runs background jobs (`make test &`) with SIGINT ignored, and
    # Python keeps an inherited SIG_IGN instead of raising KeyboardInterrupt: the child must
    # start with the disposition a terminal user's process has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_dump_follow_stops_on_sigint_without_traceback(template):
    # -X faulthandler: if SIGINT is ever ignored, SIGABRT makes the child print where it is.
    command = [sys.executable, "-X", "faulthandler", *walogs_cmd("dump", template, "--follow")[1:]]
    proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ), preexec_fn=_sigint_as_default,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        buf = bytearray()
        _read_until(proc, buf, len(ENTRIES), time.monotonic() + 20)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait(TIMEOUT)
            pytest.fail(f"dump --follow did not exit within {TIMEOUT} s of SIGINT; where it was:\n"
                        + proc.stderr.read().decode(errors="replace")[-4000:])
        assert code == 130
        assert b"Traceback" not in proc.stderr.read()
    finally:
        stop(proc)


def test_dump_into_a_closed_pipe_exits_quietly(tmp_path):
    directory = tmp_path / "big"
    with walogs.Wal.open(directory, walogs.WalConfig(sync="none")) as wal:
        wal.append_batch([entry(i, 200) for i in range(3000)])  # ~650 KB of text: more than a pipe holds
    proc = subprocess.Popen(walogs_cmd("dump", directory), cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        buf = bytearray()
        _read_until(proc, buf, 1, time.monotonic() + 20)
        proc.stdout.close()  # like `walogs dump DIR | head -1`
        assert proc.wait(TIMEOUT) == 0
        assert proc.stderr.read() == b""
    finally:
        stop(proc)


# ---------------------------------------------------------------- repair


@pytest.mark.parametrize("kind, code", [("mid", 1), ("torn", 3)])
def test_repair_without_flag_only_reports(sample, kind, code):
    s = sample(kind)
    before = snapshot(s.dir)
    proc = run("repair", s.dir)
    assert proc.returncode == code, proc.stderr
    out = proc.stdout.decode()
    assert s.segment in out and f"offset {s.offset}" in out and "--truncate-corrupt-tail" in out
    assert snapshot(s.dir) == before


def test_repair_cuts_mid_log_damage_in_the_last_segment_keeping_the_cut_bytes(sample):
    """P10: the explicit operator act. The cut bytes go to a side file first."""
    s = sample("mid")
    before = snapshot(s.dir)
    proc = run("repair", s.dir, "--truncate-corrupt-tail")
    assert proc.returncode == 0, proc.stderr
    assert s.segment in proc.stdout.decode() and f"offset {s.offset}" in proc.stdout.decode()
    after = snapshot(s.dir)
    created = set(after) - set(before)
    assert set(before) <= set(after) and len(created) == 1, created
    side = created.pop()
    assert side.startswith(s.segment) and not re.fullmatch(r"wal-[0-9]+\.log", side)
    assert side in proc.stdout.decode()
    assert after[side][0] == s.original[s.offset:]
    assert after[s.segment][0] == s.original[: s.offset] and after[s.segment][1] == s.offset
    for name in before:
        if name != s.segment:
            assert after[name] == before[name], name
    assert run("verify", s.dir).returncode == 0
    with walogs.Wal.open(s.dir, CONFIG) as wal:
        assert list(wal.iter()) == s.kept
        assert wal.next_lsn == s.kept[-1][0] + 1


def test_repair_cuts_a_torn_tail(sample):
    s = sample("torn")
    proc = run("repair", s.dir, "--truncate-corrupt-tail")
    assert proc.returncode == 0, proc.stderr
    assert os.path.getsize(s.dir / s.segment) == s.offset
    assert run("verify", s.dir).returncode == 0
    with walogs.WalReader(s.dir) as reader:
        assert list(reader.iter()) == ENTRIES


def test_repair_reports_how_many_valid_frames_the_cut_would_remove(sample):
    s = sample("mid")
    beyond = [f for f in frames_of(s.dir / s.segment) if f[0] > s.offset]
    assert len(beyond) == 2  # LSNs 17 and 18 follow the damaged frame of LSN 16
    out = run("repair", s.dir).stdout.decode()
    assert re.search(r"\b2 valid", out), out
    assert f"{len(s.original) - s.offset} bytes" in out


def test_repair_never_cuts_when_the_side_file_cannot_be_written(sample):
    """The cut bytes are saved before the truncate: if saving fails, nothing is cut."""
    s = sample("mid")
    # Learn the side file's name from a repair of another copy, then put a file there first.
    other = s.dir.parent / "other"
    shutil.copytree(s.dir, other)
    names = set(os.listdir(other))
    assert run("repair", other, "--truncate-corrupt-tail").returncode == 0
    (side,) = set(os.listdir(other)) - names
    (s.dir / side).write_bytes(b"an earlier repair's side file")
    before = snapshot(s.dir)
    proc = run("repair", s.dir, "--truncate-corrupt-tail")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr.decode() and len(err_lines(proc)) == 1, proc.stderr
    assert snapshot(s.dir) == before


@pytest.mark.parametrize("kind", ["completed", "gap"])
def test_repair_refuses_damage_outside_the_last_segment(sample, kind):
    s = sample(kind)
    before = snapshot(s.dir)
    proc = run("repair", s.dir, "--truncate-corrupt-tail")
    line = assert_one_line_error(proc, 1)
    assert "refus" in line
    assert ("completed segment" if kind == "completed" else "gap") in line
    assert snapshot(s.dir) == before
    assert run("verify", s.dir).returncode == 1


def test_repair_refuses_while_a_writer_holds_the_lock(sample):
    s = sample("clean")
    with settled(walogs.Wal.open(s.dir, CONFIG)) as wal:  # its next segment prepared: it changes nothing now
        # Damage the active segment behind the idle writer's back: repair would cut it if it could.
        last = s.dir / segments_of(s.dir)[-1]
        flip_bit(last, frames_of(last)[1][0] + HEADER + 1)
        before = snapshot(s.dir)
        proc = run("repair", s.dir, "--truncate-corrupt-tail")
        line = assert_one_line_error(proc, 1)
        assert "lock" in line and str(os.getpid()) in line
        assert snapshot(s.dir) == before
        wal.append(b"writer unaffected")  # the writer still holds its lock and writes


def test_repair_on_a_clean_log_has_nothing_to_do(sample, capsys):
    s = sample("clean")
    before = snapshot(s.dir)
    proc = run("repair", s.dir, "--truncate-corrupt-tail")
    assert proc.returncode == 0 and proc.stderr == b""
    assert "nothing to repair" in proc.stdout.decode()
    assert cli.main(["repair", str(s.dir)]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert snapshot(s.dir) == before


def test_verify_shows_progress_on_a_terminal_only(tmp_path):
    """verify reports progress when stderr is a terminal (a real pty here) and stays quiet when piped."""
    import pty

    log = tmp_path / "log"
    with walogs.Wal.open(log, walogs.WalConfig(max_segment_size=4096)) as wal:
        wal.append_batch(bytes(100) for _ in range(200))
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(walogs_cmd("verify", log), cwd=ROOT, stdout=subprocess.PIPE, stderr=secondary,
                              timeout=60)
        os.close(secondary)
        secondary = -1
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO once the child's end is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert proc.returncode == 0
    assert b"verifying wal-000001.log" in b"".join(chunks)
    piped = run("verify", log, timeout=60)
    assert piped.returncode == 0 and piped.stderr == b""


# ---------------------------------------------------------------- rough edges a new user hit (#17)

TRICKY = [
    (b"line one\nline two", "line one\\nline two"),
    (b"tab\there\r", "tab\\there\\r"),
    (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    (b"nul\x00 del\x7f", "nul\\x00 del\\x7f"),
    (b"back\\slash \\n", "back\\\\slash \\\\n"),
    ("sep\u2028 nbsp\u00a0".encode(), "sep\\u2028 nbsp\\u00a0"),
    (b"\xff\xfe\xc2 not utf-8", "\\xff\\xfe\\xc2 not utf-8"),
    (UNICODE, UNICODE.decode()),
    (b"", ""),
]


def unescape(text: str) -> bytes:
    """Undo dump's text escapes (the test's own reading of its --help)."""
    out, i = bytearray(), 0
    while i < len(text):
        if text[i] != "\\":
            out += text[i].encode()
            i += 1
            continue
        kind = text[i + 1]
        if kind in "\\ntr":
            out += {"\\": b"\\", "n": b"\n", "t": b"\t", "r": b"\r"}[kind]
            i += 2
        else:
            width = {"x": 2, "u": 4, "U": 8}[kind]
            code = int(text[i + 2 : i + 2 + width], 16)
            out += bytes([code]) if kind == "x" else chr(code).encode()
            i += 2 + width
    return bytes(out)


def test_dump_text_puts_every_entry_on_one_line_with_control_characters_escaped(tmp_path):
    """Before: control characters went out raw (one binary entry spanned 21 lines, an escape
    sequence recoloured the terminal). Now one line per entry, and the escapes read back exactly."""
    import random

    rnd = random.Random(17)
    binary = [bytes(range(256))] + [rnd.randbytes(rnd.randrange(1, 300)) for _ in range(20)]
    entries = [data for data, _ in TRICKY] + binary
    directory = tmp_path / "log"
    with walogs.Wal.open(directory) as wal:
        wal.append_batch(entries)
    proc = run("dump", directory)
    assert proc.returncode == 0 and proc.stderr == b""
    lines = proc.stdout.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(entries), "one line per entry"
    for lsn, (line, data) in enumerate(zip(lines, entries), start=1):
        number, text = line.split("\t", 1)
        assert int(number) == lsn
        assert text.isprintable(), (lsn, text)
        assert unescape(text) == data, (lsn, text)
    for (data, expected), line in zip(TRICKY, lines):
        assert line.split("\t", 1)[1] == expected, data
    assert "\\n" in run("dump", "--help").stdout.decode()  # the escapes are documented


def test_dump_raw_frames_each_entry_with_its_length(template):
    """Before: raw concatenated the entries, so they could not be told apart. Now each is a u32
    little-endian length, then its bytes, as --help says."""
    out = run("dump", template, "--format", "raw").stdout
    assert len(out) == sum(4 + len(data) for _, data in ENTRIES)
    assert parse_raw(out) == [data for _, data in ENTRIES]
    assert out[:4] == struct.pack("<I", len(ENTRIES[0][1]))
    text = run("dump", "--help").stdout.decode()
    assert "raw" in text and "little-endian" in text and "length" in text


END_LIMIT = [
    (["--end", "5"], range(1, 6)),
    (["--start", "3", "--end", "7"], range(3, 8)),
    (["--limit", "4"], range(1, 5)),
    (["--start", "10", "--limit", "3"], range(10, 13)),
    (["--start", "15", "--end", "15"], [15]),
    (["--end", "100"], range(1, N + 1)),
    (["--limit", "100", "--end", "16"], range(1, 17)),
    (["--start", "4", "--end", "9", "--limit", "2"], [4, 5]),
]


@pytest.mark.parametrize("args, lsns", END_LIMIT, ids=[" ".join(args) for args, _ in END_LIMIT])
def test_dump_end_and_limit(template, args, lsns, capsysbinary):
    assert cli.main(["dump", str(template), "--format", "hex", *args]) == 0
    assert parse_output("hex", capsysbinary.readouterr().out) == [ENTRIES[lsn - 1] for lsn in lsns]


@pytest.mark.parametrize("args", [
    ["--end", "0"], ["--limit", "0"], ["--limit", "-1"], ["--end", "x"], ["--start", "9", "--end", "3"],
], ids=" ".join)
def test_dump_end_and_limit_usage_errors(template, args):
    proc = run("dump", template, *args)
    assert_one_line_error(proc, 2)
    assert proc.stdout == b""


@pytest.mark.parametrize("until", [["--end", str(N + 3)], ["--limit", "7"]], ids=" ".join)
def test_dump_follow_stops_at_end_or_limit(sample, until):
    """--follow with --end waits for that LSN and exits; with --limit it exits after N entries."""
    s = sample("clean")
    with walogs.Wal.open(s.dir, CONFIG) as wal:
        proc = subprocess.Popen(walogs_cmd("dump", s.dir, "--follow", "--format", "hex", "--start", str(N - 3), *until),
                                cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            buf = bytearray()
            _read_until(proc, buf, 4, time.monotonic() + 20)  # LSNs N-3..N, all there is
            for i in range(6):
                wal.append(entry(N + 1 + i, 20))
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            stop(proc)
    assert proc.returncode == 0, err
    got = parse_output("hex", bytes(buf) + out)
    last = N + 3 if until[0] == "--end" else N - 3 + 6
    assert [lsn for lsn, _ in got] == list(range(N - 3, last + 1))


def _without_root_privilege() -> None:
    # As root, drop the capabilities that bypass file permissions (CAP_DAC_OVERRIDE,
    # CAP_DAC_READ_SEARCH) from the bounding set: the exec'd CLI then meets permissions as
    # any user would. Not root: nothing to drop.
    if os.geteuid() == 0:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.parametrize("where", ["parent", "directory"])
def test_permission_denied_is_reported_as_such(template, tmp_path, where):
    """Before: a log behind a directory this user may not search was said not to exist."""
    outer = tmp_path / "outer"
    outer.mkdir()
    log = outer / "log"
    shutil.copytree(template, log)
    locked = outer if where == "parent" else log
    os.chmod(locked, 0)
    try:
        for command in ("info", "verify", "dump"):
            proc = subprocess.run(walogs_cmd(command, log), cwd=ROOT, env=dict(os.environ), capture_output=True,
                                  timeout=TIMEOUT, preexec_fn=_without_root_privilege)
            line = assert_one_line_error(proc, 2 if where == "parent" else 1)
            assert "permission denied" in line and "does not exist" not in line, line
            assert "run as a user who may read" in line, line
    finally:
        os.chmod(locked, 0o755)


def _exit_codes_listed(help_text: str) -> set[int]:
    section = help_text.split("exit codes:", 1)[1]
    return {int(m.group(1)) for m in re.finditer(r"^\s+(\d)\s{2}", section, re.M)}


def test_repair_and_salvage_document_their_exit_codes():
    """Before: repair without --truncate-corrupt-tail exited 3 on a torn tail, documented nowhere."""
    repair = run("repair", "--help").stdout.decode()
    assert _exit_codes_listed(repair) == {0, 1, 2, 3}
    assert re.search(r"3\s+without the flag: a torn tail", repair)
    assert _exit_codes_listed(run("salvage", "--help").stdout.decode()) == {0, 1, 2, 3}
    # The README beside this test suite (the repository, or the copy make wheel-test runs).
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")) as f:
        readme = f.read()
    row = next(line for line in readme.splitlines() if line.startswith("| `walogs repair"))
    assert "3" in row.split("|")[-2], row
    assert "| `walogs salvage DIR OUT" in readme


def test_corruption_messages_name_the_segment_once(sample):
    """Before: "corruption in completed segment in segment wal-000002.log"."""
    s = sample("completed")
    messages = [run("verify", s.dir).stdout.decode(), run("dump", s.dir).stderr.decode()]
    with pytest.raises(walogs.WalCorruptError) as opened:
        walogs.Wal.open(s.dir)
    messages.append(str(opened.value))
    for message in messages:
        assert "segment in segment" not in message, message
        assert f"in segment {s.segment} at offset {s.offset}" in message and "CRC mismatch" in message, message


def test_lock_errors_say_how_long_they_waited_readably(sample):
    """Before: "waited 3.8658e-05 s"."""
    from walogs.errors import format_duration

    assert [format_duration(x) for x in (3.8658e-05, 0.0039, 0.0123, 0.9996, 1.234, 75.2)] == [
        "0.04 ms", "3.9 ms", "12 ms", "1.0 s", "1.2 s", "75 s"]
    s = sample("clean")
    with walogs.Wal.open(s.dir, CONFIG):
        proc = run("repair", s.dir, "--truncate-corrupt-tail")
        line = assert_one_line_error(proc, 1)
        assert re.search(r"\(waited \d+(\.\d+)? (ms|s)\)", line), line
        with pytest.raises(walogs.WalLockedError) as waited:
            walogs.Wal.open(s.dir, lock_timeout=0.05)
    assert re.search(r"\(waited (\d\d ms|0\.\d s)\)", str(waited.value)), str(waited.value)


def test_info_names_the_build_it_runs(sample):
    s = sample("clean")
    text = run("info", s.dir).stdout.decode()
    assert f"build:     {walogs.BUILD_INFO.describe()}\n" in text
    info = json.loads(run("info", "--json", s.dir).stdout)
    assert info["build"]["implementation"] == walogs.IMPLEMENTATION
    assert info["build"]["crc"] == walogs.BUILD_INFO.crc
    assert info["build"]["writer"] == walogs.BUILD_INFO.writer
