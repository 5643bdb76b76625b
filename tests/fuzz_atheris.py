"""Coverage-guided fuzzing of the frame codecs and of recovery's judgement with atheris.

Not collected by pytest (no ``test_`` prefix). For long runs (``make stress``)::

    pip install atheris
    python3 tests/fuzz_atheris.py -atheris_runs=200000          # or -max_total_time=300
    python3 tests/fuzz_atheris.py CORPUS_DIR -max_total_time=600  # keep a corpus

Each input is split by atheris' FuzzedDataProvider into codec arguments and a
segment image. The harness checks what tests/test_fuzz.py checks, but guided
by coverage of the pure-Python codec and of walogs._segments/_recovery
(instrumented at import; the compiled module is a black box to atheris):

* both codecs (``walogs._frame_py`` and ``walogs._frame``, as tests/_impls.py lists them) give
  identical results or identical ValueError/TypeError for scan, decode,
  FrameReader and find_frame (P8); any other exception is a crash;
* every decoded frame re-encodes (``_frame_py.encode``) to exactly its bytes
  (I1, I10);
* ``walogs._recovery.examine`` on a directory holding the image as the last
  segment (alone, or after a valid segment) returns or raises WalCorruptError,
  identically with either codec; a torn tail is cut exactly at the end of the
  valid prefix (I5).

Without atheris installed the script says so and exits 0, so a stress target
can call it unconditionally. The compiled codec must be built unless
WALOGS_PURE_PYTHON=1 is set (then it is fuzzed only where it was built).
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import sys
import tempfile

try:
    import atheris
except ImportError:  # pragma: no cover - optional tool
    atheris = None

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository root: import the walogs under test

if atheris is not None:
    with atheris.instrument_imports(include=["walogs"]):
        import walogs
        from _impls import CODECS, py  # tests/_impls.py: the codecs every suite tests
        from walogs import _damage, _recovery, _segments
else:  # pragma: no cover
    import walogs
    from _impls import CODECS, py
    from walogs import _damage, _recovery, _segments

HDR = walogs.FRAME_HEADER_SIZE
MAX_LSN = 2**64 - 1
VALID_FIRST = b"".join(py.encode(lsn, b"entry %d" % lsn) for lsn in (1, 2, 3))
SCRATCH = tempfile.mkdtemp(prefix="walogs-atheris-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
atexit.register(shutil.rmtree, SCRATCH, True)  # libFuzzer ends the process with exit()


def _outcome(fn):
    try:
        return ("ok", fn())
    except (ValueError, TypeError) as exc:
        return ("raise", type(exc).__name__, str(exc))


def _same(fn):
    results = [_outcome(lambda m=m: fn(m)) for m in CODECS.values()]
    for other in results[1:]:
        if other != results[0]:
            raise AssertionError(f"P8: compiled codec differs: {other!r} != {results[0]!r}")
    return results[0]


def _read_all(m, buf, offset, expect, skip):
    reader = m.FrameReader(buf, offset, expect, skip)
    frames = list(reader)
    return frames, reader.offset, reader.status, reader.last_lsn


def _check_reencodes(buf, offset, frames, end):
    pos = offset
    for lsn, data in frames:
        frame = py.encode(lsn, data)
        if buf[pos : pos + len(frame)] != frame:
            raise AssertionError(f"I10: the frame decoded at {pos} does not re-encode to its bytes")
        pos += len(frame)
    if pos != end:
        raise AssertionError(f"decoded frames end at {pos}, scan says {end}")


def _examine(directory, m):
    saved = (_segments.codec, _damage.codec)
    _segments.codec = _damage.codec = m
    try:
        layout = _recovery.examine(directory)
        return ("ok", layout.torn_at, [(s.seq, s.first_lsn, s.last_lsn, s.end) for s in layout.segments])
    except walogs.WalCorruptError as exc:
        return ("corrupt", exc.segment, exc.offset)
    finally:
        _segments.codec, _damage.codec = saved


def _ints(fdp, choices):
    pick = fdp.ConsumeIntInRange(0, 3)
    if pick == 0:
        return fdp.PickValueInList(choices)
    if pick == 1:
        return fdp.ConsumeIntInRange(0, 64)
    if pick == 2:
        return fdp.ConsumeIntInRange(0, MAX_LSN)
    return fdp.ConsumeInt(9)  # any sign, up to 72 bits


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    offset = _ints(fdp, [0, 1, 16, -1])
    expect = _ints(fdp, [0, 1, 4, MAX_LSN])
    skip = _ints(fdp, [0, 1, 4, MAX_LSN])
    after = _ints(fdp, [0, 1, 3, MAX_LSN - 1])
    bad = _ints(fdp, [0, -16, 16, -(1 << 60)])
    layout = fdp.ConsumeIntInRange(0, 2)
    buf = fdp.ConsumeBytes(fdp.remaining_bytes())[:4096]
    if not 0 <= offset <= len(buf):
        offset %= len(buf) + 1

    s = _same(lambda m: m.scan(buf, offset, expect))
    d = _same(lambda m: m.decode(buf, offset, expect))
    _same(lambda m: _read_all(m, buf, offset, expect, skip))
    f = _same(lambda m: m.find_frame(buf, offset, after, bad))
    if s[0] == "ok" and d[0] == "ok":
        frames, end, status = d[1]
        if (end, status, len(frames)) != (s[1][0], s[1][4], s[1][1]):
            raise AssertionError(f"scan {s[1]} and decode {(end, status, len(frames))} disagree")
        _check_reencodes(buf, offset, frames, end)
    if f[0] == "ok" and f[1][1] == py.FIND_FRAME:
        o = f[1][0]
        length, _crc, lsn = struct.unpack_from("<IIQ", buf, o)
        if py.encode(lsn, buf[o + HDR : o + HDR + length]) != buf[o : o + HDR + length]:
            raise AssertionError(f"find_frame returned an invalid frame at {o}")

    # Recovery's judgement on the image as a segment file.
    directory = os.path.join(SCRATCH, "log")
    shutil.rmtree(directory, ignore_errors=True)
    os.mkdir(directory)
    files = {0: {"wal-000003.log": buf}, 1: {"wal-000001.log": VALID_FIRST, "wal-000002.log": buf},
             2: {"wal-000001.log": buf, "wal-000002.log": py.encode(1, b"next")}}[layout]
    for name, raw in files.items():
        with open(os.path.join(directory, name), "wb") as fh:
            fh.write(raw)
    results = [_examine(directory, m) for m in CODECS.values()]
    for other in results[1:]:
        if other != results[0]:
            raise AssertionError(f"P8: examine differs between codecs: {other!r} != {results[0]!r}")
    got = results[0]
    if got[0] == "ok" and got[1] is not None:
        expect_first = 4 if layout == 1 else 0
        end = py.scan(buf, 0, expect_first)[0]
        if got[1] != end:
            raise AssertionError(f"I5: torn tail cut at {got[1]}, the valid prefix ends at {end}")


def main() -> int:
    if atheris is None:
        print("fuzz_atheris: atheris is not installed (pip install atheris); nothing to do")
        return 0
    argv = list(sys.argv)
    if not any(a.startswith(("-atheris_runs", "-runs", "-max_total_time")) for a in argv[1:]):
        argv.append("-atheris_runs=20000")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()  # does not return: libFuzzer exits when the runs are done or on a crash
    return 0


if __name__ == "__main__":
    sys.exit(main())
