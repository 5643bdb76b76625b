"""The ``walogs`` command: info, verify, dump, salvage (read-only) and repair (the one that writes).

Every command but ``repair`` only reads the log: it takes no lock and
creates, truncates or deletes nothing in it, so it is safe next to a live
writer. With a live writer, ``info`` and ``verify`` judge the log up to the
visible end it publishes: what lies beyond is a write in flight.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import stat
import struct
import sys
from typing import Any, Optional, Sequence

from walogs import __version__, _cursor_file, _damage, _floor, _io, _lock, _recovery, _retention, _salvage
from walogs import _segments, _visible
from walogs._impl import BUILD_INFO, codec
from walogs.errors import LsnOutOfRangeError, WalCorruptError, WalError, WalLockedError
from walogs.reader import WalReader, published_end

EXIT_OK, EXIT_CORRUPT, EXIT_USAGE, EXIT_TORN = 0, 1, 2, 3
RAW_LENGTH = struct.Struct("<I")
"""``dump --format raw``: the length prefix of each entry, u32 little-endian."""
_LOOKS = 20
"""Fresh looks at a live log before a segment that keeps vanishing under the scan is an error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # Bad usage: one clear line, exit 2, no traceback.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Failure(Exception):
    """An error to report as one line on stderr with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _log_directory(path: str) -> str:
    directory = os.path.abspath(path)
    try:
        is_dir = stat.S_ISDIR(os.stat(directory).st_mode)
    except FileNotFoundError:
        raise _Failure(f"{directory} does not exist; give the directory of a walogs log", EXIT_USAGE) from None
    except PermissionError:
        raise _Failure(f"{directory}: permission denied: a directory on the way to it may not be searched by "
                       "this user; run as a user who may read the log", EXIT_USAGE) from None
    except NotADirectoryError:
        is_dir = False
    if not is_dir:
        raise _Failure(f"{directory} is not a directory; give the directory of a walogs log", EXIT_USAGE)
    return directory


def _segment_summaries(directory: str, end: Optional[_visible.VisibleEnd]) -> list[dict[str, Any]]:
    """Per segment: name, size, first and last LSN, read-only (stops at damage).

    With a live writer (``end``), only what is visible counts; a segment a
    checkpoint deleted since the listing is left out.
    """
    files, _ = _segments.segment_files(directory)
    rows = []
    for seq, name in files.items():
        limit = None if end is None else (end.offset if seq == end.seq else 0 if seq > end.seq else None)
        try:
            # Each segment on its own: damage before it must not hide its entries (verify judges the chain).
            scan = _segments.scan_segment(seq, os.path.join(directory, name), 0, limit)
        except FileNotFoundError:
            continue
        rows.append({"segment": name, "size": scan.size, "first_lsn": scan.first_lsn or None,
                     "last_lsn": scan.last_lsn or None, "valid_bytes": scan.end})
    return rows


class _Progress:
    """Segment-by-segment progress on stderr when it is a terminal; silent when piped."""

    def __init__(self, directory: str) -> None:
        self.enabled = sys.stderr.isatty()
        self.total = 0
        self.done = 0
        if self.enabled:
            for name in _segments.segment_files(directory)[0].values():
                try:
                    self.total += os.path.getsize(os.path.join(directory, name))
                except FileNotFoundError:
                    pass  # checkpointed since the listing

    def restart(self) -> None:
        """A new look at the log: count from zero."""
        self.done = 0

    def __call__(self, name: str, size: int) -> None:
        if self.enabled:
            self.done += size
            percent = min(100 * self.done // max(self.total, 1), 100)
            sys.stderr.write(f"\rverifying {name}: {self.done >> 20} / {self.total >> 20} MiB ({percent}%)")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")


class _Moved(Exception):
    """A segment listed a moment ago is gone (a live writer's checkpoint): look at the log again."""


def _examine_live(directory: str, end: _visible.VisibleEnd, progress: Optional[_Progress]) -> _recovery.LogLayout:
    """Judge a live log up to the visible end its writer publishes, read-only.

    Completed segments must be whole frames; the segment of the visible end
    must be whole frames up to it. What lies beyond is a write in flight,
    not judged: a torn tail there is no one's concern until the writer dies,
    and then the next open or ``verify`` judges it.
    """
    files, v1 = _segments.contiguous_segment_files(directory)
    if end.seq not in files:
        raise _Moved
    layout = _recovery.LogLayout(directory, floor=_floor.read_floor(directory), v1=v1)
    expect = 0
    for seq, name in files.items():
        if seq > end.seq:
            break
        visible_end = seq == end.seq
        try:
            scan = _segments.scan_segment(seq, os.path.join(directory, name), expect,
                                          end.offset if visible_end else None)
        except FileNotFoundError:
            raise _Moved from None
        if progress is not None:
            progress(name, scan.size)
        if not scan.clean:
            # Before a live writer's visible end nothing is torn: the judge finds damage.
            after_lsn = _damage.last_good_lsn(scan, expect, layout.floor)
            raise _damage.judge(scan, after_lsn, last_segment=visible_end, live=True).error(directory, scan, expect)
        if visible_end and scan.end < end.offset:
            raise WalCorruptError(
                f"{directory}: segment {name} holds {scan.size} bytes, fewer than the {end.offset} its live "
                "writer published as visible: written entries are gone; stop the writer and run `walogs verify`",
                segment=name, offset=scan.end, in_last_segment=True,
            )
        if not visible_end and scan.size == 0:
            raise WalCorruptError(
                f"{directory}: completed segment {name} is empty; a completed segment always holds entries, "
                "so they were lost: restore the segment from a backup", segment=name, offset=0,
            )
        layout.segments.append(_recovery.SegmentInfo(seq, name, scan.first_lsn, scan.last_lsn, scan.end))
        if scan.count:
            expect = scan.last_lsn + 1
    return layout


def _examine(directory: str, progress: Optional[_Progress],
             locked: bool) -> tuple[_recovery.LogLayout, Optional[_visible.VisibleEnd]]:
    """The log's layout, and the visible end it was judged up to when a writer is live.

    A live log is judged up to its visible end (:func:`_examine_live`). A
    segment that vanishes between listing and reading (a checkpoint) means a
    fresh look, as does damage found while no writer was live if one is live
    now: it was appending behind the scan. ``locked``: this process holds
    the writer lock (repair), so no other writer can be live.
    """
    for look in range(_LOOKS):
        final = look == _LOOKS - 1
        if progress is not None:
            progress.restart()
        end = None if locked else published_end(directory)
        try:
            if end is not None:
                return _examine_live(directory, end, progress), end
            layout = _recovery.examine(directory, progress)
        except (_Moved, FileNotFoundError):
            if final:
                raise _Failure(
                    f"{directory}: segments kept disappearing while being read ({_LOOKS} times): a live "
                    "writer's checkpoints delete them faster than they can be checked; try again", EXIT_CORRUPT,
                ) from None
            continue
        except WalCorruptError:
            # Damage before a live writer's visible end is damage; seen with no writer, it may be one
            # that opened meanwhile and appended behind the scan.
            if end is not None or locked or final or published_end(directory) is None:
                raise
            continue
        if layout.torn_at is not None and not locked and not final and published_end(directory) is not None:
            continue
        return layout, None
    raise AssertionError("unreachable")


def _verdict(directory: str, progress: Optional[_Progress] = None,
             locked: bool = False) -> tuple[dict[str, Any], Optional[_visible.VisibleEnd]]:
    """Scan the whole log read-only: clean, torn tail or corrupt, with where and why.

    Also returns the live writer's visible end the log was judged up to (None: no live writer).
    """
    try:
        layout, end = _examine(directory, progress, locked)
    except WalCorruptError as exc:
        return {"status": "corrupt", "segment": exc.segment, "offset": exc.offset,
                "in_last_segment": exc.in_last_segment, "reason": exc.reason}, (
                    None if locked else published_end(directory))
    finally:
        if progress is not None:
            progress.finish()
    result: dict[str, Any] = {
        "status": "clean", "segments": len(layout.segments),
        "first_lsn": layout.first_stored_lsn, "last_lsn": layout.last_stored_lsn or None,
        "next_lsn": layout.next_lsn if end is None else None,
        "live_writer": end is not None,
    }
    if layout.torn_at is not None:
        last = layout.segments[-1]
        result.update(status="torn", segment=last.name, offset=layout.torn_at,
                      torn_bytes=layout.torn_size - layout.torn_at,
                      reason="torn tail: the next writer open will cut it")
    return result, end


def cmd_info(args: argparse.Namespace) -> int:
    directory = _log_directory(args.dir)
    live, pid = _lock.writer_is_live(directory)
    shared = live and _lock.shared_writers_attached(directory)
    verdict, end = _verdict(directory)
    info: dict[str, Any] = {
        "directory": directory,
        "writer": {"live": live, "pid": pid if live else None, "shared": shared},
        "segments": _segment_summaries(directory, end),
        "tail": verdict,
        "build": dataclasses.asdict(BUILD_INFO),
        "cursors": _cursor_rows(directory, verdict),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"directory: {directory}")
    print(f"build:     {BUILD_INFO.describe()}")
    if shared:
        print("writer:    live: shared writers (Wal.open(..., shared=True))")
    else:
        print(f"writer:    live, pid {pid or 'unknown'}" if live else "writer:    none")
    print(f"segments:  {len(info['segments'])}")
    for row in info["segments"]:
        lsns = f"LSN {row['first_lsn']}..{row['last_lsn']}" if row["first_lsn"] else "empty"
        print(f"  {row['segment']}  {row['size']:>12} bytes  {lsns}")
    print(f"state:     {_describe(verdict)}")
    print(f"cursors:   {len(info['cursors'])}")
    for row in info["cursors"]:
        owner = f"owned by pid {row['owner_pid'] or 'unknown'}" if row["owned"] else "not owned"
        lost = "  LOST: entries it had not committed were checkpointed away" if row["lost"] else ""
        print(f"  {row['name']}  position {row['position']}  lag {row['lag']} entries, "
              f"{row['lag_bytes']} bytes  {owner}{lost}")
    return EXIT_OK


def _cursor_rows(directory: str, verdict: dict[str, Any]) -> list[dict[str, Any]]:
    """Each named cursor: position, lag in entries and bytes, owner, lost (read without taking any)."""
    if not _cursor_file.names(directory):
        return []
    try:
        with WalReader(directory) as reader:
            end = reader.durable_lsn
    except WalError:
        end = verdict.get("last_lsn") or 0  # a damaged log: lag up to what the scan found
    return [dataclasses.asdict(info) for info in _retention.describe(directory, end)]


def _describe(verdict: dict[str, Any]) -> str:
    if verdict["status"] == "clean":
        first, last = verdict["first_lsn"], verdict["last_lsn"]
        stored = f"LSN {first}..{last}" if first else "no entries"
        if verdict["live_writer"]:
            return f"clean up to the live writer's visible end, {stored} (it may have written more since)"
        return f"clean, {stored}, next LSN {verdict['next_lsn']}"
    if verdict["status"] == "torn":
        return (f"torn tail in {verdict['segment']} at offset {verdict['offset']} "
                f"({verdict['torn_bytes']} bytes); the next writer open will cut it")
    return f"corrupt: {verdict['reason']}"


def cmd_verify(args: argparse.Namespace) -> int:
    directory = _log_directory(args.dir)
    verdict, _ = _verdict(directory, _Progress(directory))
    code = {"clean": EXIT_OK, "torn": EXIT_TORN, "corrupt": EXIT_CORRUPT}[verdict["status"]]
    if args.json:
        print(json.dumps(verdict, indent=2))
    else:
        print(_describe(verdict))
    return code


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    named = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(ch)
    if named is not None:
        return named
    if code < 0x80:  # \\xNN above 0x7f would read as a byte that is not UTF-8
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_text(data: bytes) -> str:
    """An entry as one line of text: UTF-8 as is, with backslash escapes for what a terminal would act on.

    Control characters (newline, tab, escape...), other characters that do
    not print, bytes that are not UTF-8 (``\\xff``) and the backslash itself
    (``\\\\``) are escaped, so every entry is exactly one line and the text
    can be told apart from the escapes.
    """
    text = data.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(ch if ch.isprintable() and ch != "\\" else _escape_char(ch) for ch in text)


def _format_entry(lsn: int, data: bytes, fmt: str) -> bytes:
    if fmt == "raw":
        return RAW_LENGTH.pack(len(data)) + data
    if fmt == "hex":
        return f"{lsn}\t{data.hex()}\n".encode()
    if fmt == "json":
        try:
            text: dict[str, Any] = {"lsn": lsn, "text": data.decode("utf-8")}
        except UnicodeDecodeError:
            text = {"lsn": lsn, "base64": base64.b64encode(data).decode()}
        return (json.dumps(text) + "\n").encode()
    return f"{lsn}\t{escape_text(data)}\n".encode()


def cmd_dump(args: argparse.Namespace) -> int:
    directory = _log_directory(args.dir)
    if args.end is not None and args.start is not None and args.end < args.start:
        raise _Failure(f"--end {args.end} is before --start {args.start}: nothing to print", EXIT_USAGE)
    reader = WalReader(directory)
    entries = reader.follow(args.start) if args.follow else reader.iter(args.start)
    out = sys.stdout.buffer
    printed = 0
    try:
        for lsn, data in entries:
            if args.end is not None and lsn > args.end:
                break
            out.write(_format_entry(lsn, data, args.format))
            printed += 1
            if args.follow:
                out.flush()
            if printed == args.limit or lsn == args.end:
                break
    finally:
        entries.close()  # type: ignore[attr-defined]
    out.flush()
    return EXIT_OK


def cmd_salvage(args: argparse.Namespace) -> int:
    directory = _log_directory(args.dir)
    out = os.path.abspath(args.out)
    try:
        _salvage.prepare_output(directory, out)
    except _salvage.OutputError as exc:
        raise _Failure(str(exc), EXIT_USAGE) from None
    result = _salvage.salvage(directory, out)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        span = f"LSN {result.first_lsn}..{result.last_lsn}" if result.entries else "none"
        print(f"salvaged {result.entries} entries ({span}) into {os.path.join(out, _salvage.ENTRIES_NAME)}")
        if result.visible_lsn is not None:
            print(f"a writer is live: read up to its visible end, LSN {result.visible_lsn}")
        for damage in result.damage:
            print(damage.describe())
        print(f"report: {os.path.join(out, _salvage.REPORT_NAME)}")
    return {"clean": EXIT_OK, "torn": EXIT_TORN, "damaged": EXIT_CORRUPT}[result.status]


def cmd_repair(args: argparse.Namespace) -> int:
    directory = _log_directory(args.dir)
    # Only a real repair takes the lock (refusing while a writer lives); a report touches nothing.
    lock = _lock.WriterLock.acquire(directory, 0) if args.truncate_corrupt_tail else None
    try:
        verdict, _ = _verdict(directory, locked=lock is not None)
        if verdict["status"] == "clean":
            print(f"{directory}: clean, nothing to repair")
            return EXIT_OK
        if verdict["status"] == "corrupt" and not verdict["in_last_segment"]:
            raise _Failure(f"refusing to repair: {verdict['reason']}", EXIT_CORRUPT)
        path = os.path.join(directory, verdict["segment"])
        offset = verdict["offset"]
        size = os.path.getsize(path)
        beyond = _count_valid_frames_after(path, offset)
        print(f"{verdict['segment']}: first bad frame at offset {offset}; cutting would remove "
              f"{size - offset} bytes holding {beyond} valid-looking frames beyond the damage")
        if not args.truncate_corrupt_tail:
            print("nothing changed; pass --truncate-corrupt-tail to cut it (the cut bytes are saved first)")
            return EXIT_TORN if verdict["status"] == "torn" else EXIT_CORRUPT
        saved = _cut_tail(directory, path, offset)
        print(f"cut {verdict['segment']} at offset {offset}; the {size - offset} cut bytes are in {saved}")
        return EXIT_OK
    finally:
        if lock is not None:
            lock.release()


def _count_valid_frames_after(path: str, bad_offset: int) -> int:
    """How many valid frames follow the damage, chained from the first one that could continue the log."""
    scan = _segments.scan_segment(0, path)
    continuing = _damage.find_continuing_frame(path, bad_offset, scan.last_lsn)
    if continuing is None:
        return 0
    with open(path, "rb") as f:  # an operator's one-off on the last segment, bounded by its size
        f.seek(continuing)
        tail = f.read()
    return codec.scan(tail, 0, 0)[1]


def _cut_tail(directory: str, path: str, offset: int) -> str:
    """Save bytes from ``offset`` to a side file (synced), then truncate and sync: nothing cut is lost."""
    saved = f"{path}.cut-at-{offset}"
    source = _io.open_read(path)
    try:
        size = _io.file_size(source)
        fd = _io.create_new(saved)
        try:
            pos = offset
            while pos < size:
                chunk = os.pread(source, min(1 << 20, size - pos), pos)
                if not chunk:
                    break
                _io.pwrite_all(fd, chunk, pos - offset)
                pos += len(chunk)
            _io.fsync(fd)
        finally:
            _io.close(fd)
    finally:
        _io.close(source)
    _io.sync_dir(directory)
    fd = _io.open_write(path)
    try:
        _io.ftruncate(fd, offset)
        _io.fsync(fd)
    finally:
        _io.close(fd)
    _io.sync_dir(directory)
    return saved


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


_VERIFY_EXITS = ("exit 0 clean, 1 unrecoverable corruption (or the log cannot be read), "
                 "3 a torn tail that the next writer open will cut")

_DUMP_FORMATS = """formats (one entry at a time, in LSN order):
  text  LSN, a tab, the entry as UTF-8 on one line; control characters, other
        characters that do not print, bytes that are not UTF-8 and the
        backslash itself are written as escapes (\\n, \\t, \\x1b, \\xff, \\u2028, \\\\)
  hex   LSN, a tab, the entry in hexadecimal
  json  one object per line: {"lsn": N, "text": "..."}, or {"lsn": N, "base64": "..."}
        when the entry is not UTF-8
  raw   no LSN: each entry's length as 4 bytes (unsigned, little-endian), then
        its bytes; Python: n, = struct.unpack("<I", f.read(4)); data = f.read(n)

exit 0 when every entry asked for was printed; 1 when the log is damaged before
them or --start is not stored (one line on stderr); 2 bad usage"""

_REPAIR_HELP = """Reports the first bad frame of the last segment; with --truncate-corrupt-tail
takes the writer lock (refusing while a writer holds it), saves the bytes from
the bad frame on to SEGMENT.cut-at-OFFSET (synced), then cuts the segment there.
Never cuts a completed segment: see `walogs salvage` for those.

exit codes:
  0  the log is clean, or the cut was made
  1  damage it will not cut (a completed segment, a missing segment, an LSN jump),
     a live writer holds the lock, or (without the flag) mid-log damage the flag would cut
  3  without the flag: a torn tail, which the flag or the next writer open cuts
  2  bad usage"""

_SALVAGE_HELP = f"""Reads the log in DIR without changing it (no lock, nothing written there) and
exports every intact entry, reading past damage that stops `Wal.open` and the
readers. OUT must be a new or empty directory outside DIR; it receives:

  {_salvage.ENTRIES_NAME}  every intact entry in LSN order, each as: LSN (8 bytes), length
               (4 bytes), both unsigned little-endian, then the entry's bytes.
               Python: lsn, n = struct.unpack("<QI", f.read(12)); data = f.read(n)
  {_salvage.REPORT_NAME}  entries exported and every damaged range: kind, segment,
               offsets, reason, the LSNs lost where known (written last)

With a live writer, only entries up to its visible end are read.

exit codes:
  0  nothing was damaged: every stored entry was exported
  1  damage was found; every intact entry was exported and the report says what was lost
  3  only a torn tail (a write cut short by a crash), as `walogs verify` says
  2  bad usage, or OUT is not a new or empty directory outside DIR"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``walogs`` command."""
    parser = _Parser(prog="walogs", description="Inspect, verify, dump, salvage and repair walogs logs.")
    parser.add_argument("--version", action="version", version=f"walogs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    raw = argparse.RawDescriptionHelpFormatter

    info = commands.add_parser("info", help="segments, sizes, LSN range, tail state, live writer",
                               description="Exit 0, whatever the log holds; 2 bad usage.")
    info.add_argument("dir", help="log directory")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(run=cmd_info)

    verify = commands.add_parser(
        "verify", help="check every frame read-only",
        description=f"Checks every frame without changing anything; with a live writer, up to its visible end. "
                    f"{_VERIFY_EXITS[0].upper()}{_VERIFY_EXITS[1:]}; 2 bad usage.",
    )
    verify.add_argument("dir", help="log directory")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(run=cmd_verify)

    dump = commands.add_parser("dump", help="print entries", epilog=_DUMP_FORMATS, formatter_class=raw)
    dump.add_argument("dir", help="log directory")
    dump.add_argument("--start", type=int, default=None, metavar="LSN", help="first LSN to print")
    dump.add_argument("--end", type=_positive, default=None, metavar="LSN",
                      help="last LSN to print (with --follow: wait for it, then stop)")
    dump.add_argument("--limit", type=_positive, default=None, metavar="N", help="print at most N entries")
    dump.add_argument("--follow", action="store_true", help="keep printing new entries (Ctrl-C stops)")
    dump.add_argument("--format", choices=["text", "hex", "json", "raw"], default="text",
                      help="output format (default text; see below)")
    dump.set_defaults(run=cmd_dump)

    salvage = commands.add_parser(
        "salvage", help="export every intact entry of a damaged log, and report what was lost",
        description=_SALVAGE_HELP, formatter_class=raw,
    )
    salvage.add_argument("dir", help="log directory (read only)")
    salvage.add_argument("out", help="new or empty directory for entries.bin and report.json")
    salvage.add_argument("--json", action="store_true", help="print the report as JSON")
    salvage.set_defaults(run=cmd_salvage)

    repair = commands.add_parser(
        "repair", help="cut damage in the last segment (the only command that writes)",
        description=_REPAIR_HELP, formatter_class=raw,
    )
    repair.add_argument("dir", help="log directory")
    repair.add_argument("--truncate-corrupt-tail", action="store_true",
                        help="cut the last segment at its first bad frame, saving the cut bytes first")
    repair.set_defaults(run=cmd_repair)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``walogs`` console script and ``python -m walogs``."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except _Failure as exc:
        print(f"walogs {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except (WalLockedError, WalCorruptError, LsnOutOfRangeError, WalError) as exc:
        print(f"walogs {args.command}: {exc}", file=sys.stderr)
        return EXIT_CORRUPT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except PermissionError as exc:
        print(f"walogs {args.command}: permission denied: {exc.filename}; run as a user who may read the log "
              f"directory and its files{' (and write them, for repair)' if args.command == 'repair' else ''}",
              file=sys.stderr)
        return EXIT_CORRUPT
    except OSError as exc:
        print(f"walogs {args.command}: {exc}", file=sys.stderr)
        return EXIT_CORRUPT
