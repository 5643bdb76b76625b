"""The ``walogs`` command: info, verify, dump (read-only) and repair (the one that writes).

Every command but ``repair`` only reads: it takes no lock and creates,
truncates or deletes nothing (P3), so it is safe next to a live writer.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any, Optional, Sequence

from walogs import __version__, _io, _lock, _recovery, _segments
from walogs._codec import codec
from walogs.errors import LsnOutOfRangeError, WalCorruptError, WalError, WalLockedError
from walogs.reader import WalReader

EXIT_OK, EXIT_CORRUPT, EXIT_USAGE, EXIT_TORN = 0, 1, 2, 3


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
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.lexists(directory) else "does not exist"
        raise _Failure(f"{directory} {what}; give the directory of a walogs log", EXIT_USAGE)
    return directory


def _segment_summaries(directory: str) -> list[dict[str, Any]]:
    """Per segment: name, size, first and last LSN, read-only (stops at damage)."""
    files, _ = _recovery.segment_files(directory)
    rows = []
    for seq, name in files.items():
        # Each segment on its own: damage before it must not hide its entries (verify judges the chain).
        scan = _segments.scan_segment(seq, os.path.join(directory, name))
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
            for name in _recovery.segment_files(directory)[0].values():
                self.total += os.path.getsize(os.path.join(directory, name))

    def __call__(self, name: str, size: int) -> None:
        if self.enabled:
            self.done += size
            percent = 100 * self.done // max(self.total, 1)
            sys.stderr.write(f"\rverifying {name}: {self.done >> 20} / {self.total >> 20} MiB ({percent}%)")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")


def _verdict(directory: str, progress: Optional[_Progress] = None) -> dict[str, Any]:
    """Scan the whole log read-only: clean, torn tail or corrupt, with where and why."""
    try:
        layout = _recovery.examine(directory, progress)
    except WalCorruptError as exc:
        return {"status": "corrupt", "segment": exc.segment, "offset": exc.offset,
                "in_last_segment": exc.in_last_segment, "reason": exc.reason}
    finally:
        if progress is not None:
            progress.finish()
    result: dict[str, Any] = {
        "status": "clean", "segments": len(layout.segments),
        "first_lsn": layout.first_stored_lsn, "last_lsn": layout.last_stored_lsn or None,
        "next_lsn": layout.next_lsn,
    }
    if layout.torn_at is not None:
        last = layout.segments[-1]
        result.update(status="torn", segment=last.name, offset=layout.torn_at,
                      torn_bytes=layout.torn_size - layout.torn_at,
                      reason="torn tail: the next writer open will cut it")
    return result


def cmd_info(args: argparse.Namespace) -> int:
    directory = _log_directory(args.dir)
    live, pid = _lock.writer_is_live(directory)
    verdict = _verdict(directory)
    info = {
        "directory": directory,
        "writer": {"live": live, "pid": pid if live else None},
        "segments": _segment_summaries(directory),
        "tail": verdict,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"directory: {directory}")
    print(f"writer:    live, pid {pid or 'unknown'}" if live else "writer:    none")
    print(f"segments:  {len(info['segments'])}")
    for row in info["segments"]:
        lsns = f"LSN {row['first_lsn']}..{row['last_lsn']}" if row["first_lsn"] else "empty"
        print(f"  {row['segment']}  {row['size']:>12} bytes  {lsns}")
    print(f"state:     {_describe(verdict)}")
    return EXIT_OK


def _describe(verdict: dict[str, Any]) -> str:
    if verdict["status"] == "clean":
        first, last = verdict["first_lsn"], verdict["last_lsn"]
        stored = f"LSN {first}..{last}" if first else "no entries"
        return f"clean, {stored}, next LSN {verdict['next_lsn']}"
    if verdict["status"] == "torn":
        return (f"torn tail in {verdict['segment']} at offset {verdict['offset']} "
                f"({verdict['torn_bytes']} bytes); the next writer open will cut it")
    return f"corrupt: {verdict['reason']}"


def cmd_verify(args: argparse.Namespace) -> int:
    directory = _log_directory(args.dir)
    verdict = _verdict(directory, _Progress(directory))
    code = {"clean": EXIT_OK, "torn": EXIT_TORN, "corrupt": EXIT_CORRUPT}[verdict["status"]]
    if args.json:
        print(json.dumps(verdict, indent=2))
    else:
        print(_describe(verdict))
    return code


def _format_entry(lsn: int, data: bytes, fmt: str) -> bytes:
    if fmt == "raw":
        return data
    if fmt == "hex":
        return f"{lsn}\t{data.hex()}\n".encode()
    if fmt == "json":
        try:
            text: dict[str, Any] = {"lsn": lsn, "text": data.decode("utf-8")}
        except UnicodeDecodeError:
            text = {"lsn": lsn, "base64": base64.b64encode(data).decode()}
        return (json.dumps(text) + "\n").encode()
    return f"{lsn}\t{data.decode('utf-8', 'backslashreplace')}\n".encode()


def cmd_dump(args: argparse.Namespace) -> int:
    directory = _log_directory(args.dir)
    reader = WalReader(directory)
    entries = reader.follow(args.start) if args.follow else reader.iter(args.start)
    out = sys.stdout.buffer
    for lsn, data in entries:
        out.write(_format_entry(lsn, data, args.format))
        if args.follow:
            out.flush()
    out.flush()
    return EXIT_OK


def cmd_repair(args: argparse.Namespace) -> int:
    directory = _log_directory(args.dir)
    # Only a real repair takes the lock (refusing while a writer lives); a report touches nothing.
    lock = _lock.WriterLock.acquire(directory, 0) if args.truncate_corrupt_tail else None
    try:
        verdict = _verdict(directory)
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
    """How many valid frames follow the damage, chained from the first continuing one (P10)."""
    scan = _segments.scan_segment(0, path)
    continuing = _segments.find_continuing_frame(path, bad_offset, scan.last_lsn)
    if continuing is None:
        return 0
    with open(path, "rb") as f:  # an operator's one-off on the last segment, bounded by its size
        f.seek(continuing)
        tail = f.read()
    return codec.scan(tail, 0, 0)[1]


def _cut_tail(directory: str, path: str, offset: int) -> str:
    """Save bytes from ``offset`` to a side file (synced), then truncate and sync (P10)."""
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``walogs`` command."""
    parser = _Parser(prog="walogs", description="Inspect, verify, dump and repair walogs logs.")
    parser.add_argument("--version", action="version", version=f"walogs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = commands.add_parser("info", help="segments, sizes, LSN range, tail state, live writer")
    info.add_argument("dir", help="log directory")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(run=cmd_info)

    verify = commands.add_parser(
        "verify", help="check every frame read-only",
        description="Exit 0 clean, 1 unrecoverable corruption, 3 a torn tail the next open will cut.",
    )
    verify.add_argument("dir", help="log directory")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(run=cmd_verify)

    dump = commands.add_parser("dump", help="print entries")
    dump.add_argument("dir", help="log directory")
    dump.add_argument("--start", type=int, default=None, metavar="LSN", help="first LSN to print")
    dump.add_argument("--follow", action="store_true", help="keep printing new entries (Ctrl-C stops)")
    dump.add_argument("--format", choices=["text", "hex", "json", "raw"], default="text")
    dump.set_defaults(run=cmd_dump)

    repair = commands.add_parser(
        "repair", help="cut damage in the last segment (the only command that writes)",
        description="Takes the writer lock. Without --truncate-corrupt-tail only reports.",
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
    except WalLockedError as exc:
        print(f"walogs {args.command}: {exc}", file=sys.stderr)
        return EXIT_CORRUPT
    except (WalCorruptError, LsnOutOfRangeError) as exc:
        print(f"walogs {args.command}: {exc}", file=sys.stderr)
        return EXIT_CORRUPT
    except WalError as exc:
        print(f"walogs {args.command}: {exc}", file=sys.stderr)
        return EXIT_CORRUPT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        print(f"walogs {args.command}: {exc}", file=sys.stderr)
        return EXIT_CORRUPT
