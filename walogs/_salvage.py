"""``walogs salvage DIR OUT``: every intact entry of a damaged log, and what was lost.

A flipped bit in a completed segment stops the writer's open and every
reader at the damage (a reader never skips an entry): the intact entries
after it cannot be read through the API. Salvage reads past the damage with
the judge the writer's recovery uses (``walogs._damage``: its search for a
frame that continues the log, and its torn-or-damaged verdict) and exports
what it finds intact. It is read-only on the log: no lock, nothing written
in ``DIR``; with a live writer it reads only up to the writer's visible end.

``OUT`` is a new directory (or an empty one) outside ``DIR`` that receives:

``entries.bin``
    Every intact entry in LSN order, one record each, back to back::

        lsn  u64 little-endian
        len  u32 little-endian
        data len bytes

    LSNs jump where entries were lost. Written and fsynced before the report.
``report.json``
    What was exported and every damaged range (see :meth:`Damage.as_json`),
    written last: a salvage that failed midway leaves no report.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Optional

from walogs import _damage, _floor, _io, _segments
from walogs._format import segment_name
from walogs._impl import codec
from walogs.errors import LsnOutOfRangeError
from walogs.reader import published_end

ENTRIES_NAME = "entries.bin"
REPORT_NAME = "report.json"
RECORD = struct.Struct("<QI")
"""The header of one exported entry: LSN u64, length u32, little-endian; the data follows."""

# Kinds of damage, as the report names them.
DAMAGED = "damaged frames"
TORN = "torn tail"
MISSING_SEGMENTS = "missing segments"
MISSING_ENTRIES = "missing entries"
EMPTY_SEGMENT = "empty completed segment"
REMOVED = "removed during salvage"


@dataclass
class Damage:
    """One damaged range of the log and the LSNs it cost, as far as they are known."""

    kind: str
    """One of the kinds above."""
    segment: Optional[str]
    """The segment file it is in (for missing segments: the first one missing)."""
    start: Optional[int]
    """Offset of the first byte that is not an intact frame."""
    end: Optional[int]
    """Offset where intact frames resume, or the size read of the segment."""
    reason: str
    """What was found there, in words."""
    first_lost_lsn: Optional[int] = None
    """The first LSN lost (None: no entry is known lost)."""
    last_lost_lsn: Optional[int] = None
    """The last LSN lost; None while unknown (no intact entry follows the damage)."""
    continues_previous: bool = False
    """No intact entry lies between this range and the previous one: the LSNs lost in both are
    counted once, on the previous one (which of them held which is unknown)."""

    def as_json(self) -> dict[str, Any]:
        """The report's record of this range."""
        return {"kind": self.kind, "segment": self.segment, "start": self.start, "end": self.end,
                "reason": self.reason, "first_lost_lsn": self.first_lost_lsn,
                "last_lost_lsn": self.last_lost_lsn, "continues_previous": self.continues_previous}

    def describe(self) -> str:
        """One line for an operator."""
        where = self.segment or ""
        if self.start is not None and self.end is not None:
            where += f" bytes {self.start}..{self.end}" if self.end > self.start else f" offset {self.start}"
        if self.continues_previous:
            lost = "entries lost here are counted with the damage before it"
        elif self.first_lost_lsn is None:
            lost = "no entry lost"
        elif self.last_lost_lsn is None:
            lost = f"entries from LSN {self.first_lost_lsn} on lost, if any were written"
        elif self.last_lost_lsn == self.first_lost_lsn:
            lost = f"LSN {self.first_lost_lsn} lost"
        else:
            lost = f"LSNs {self.first_lost_lsn}..{self.last_lost_lsn} lost"
        return f"{self.kind}: {where.strip()}: {self.reason}; {lost}"


@dataclass
class SalvageResult:
    """What ``salvage`` exported and found."""

    directory: str
    out: str
    entries: int = 0
    first_lsn: Optional[int] = None
    last_lsn: Optional[int] = None
    damage: list[Damage] = field(default_factory=list)
    visible_lsn: Optional[int] = None
    """A live writer's visible end, when one was publishing (nothing after it was read)."""

    @property
    def status(self) -> str:
        """"clean" (nothing damaged), "torn" (only a torn tail the next writer open cuts) or "damaged"."""
        if not self.damage:
            return "clean"
        return "torn" if all(d.kind == TORN for d in self.damage) else "damaged"

    def as_json(self) -> dict[str, Any]:
        """The contents of ``report.json``."""
        return {"directory": self.directory, "status": self.status,
                "entries_file": os.path.join(self.out, ENTRIES_NAME), "entries": self.entries,
                "first_lsn": self.first_lsn, "last_lsn": self.last_lsn, "live_writer_visible_lsn": self.visible_lsn,
                "damage": [d.as_json() for d in self.damage]}


class OutputError(Exception):
    """OUT cannot receive a salvage (exists with files, lies inside the log, parent missing)."""


def prepare_output(directory: str, out: str) -> None:
    """Create ``out`` (or accept it empty); refuse a place inside the log directory, which salvage never writes."""
    real_dir = os.path.realpath(directory)
    real_out = os.path.realpath(out)
    if real_out == real_dir or real_out.startswith(real_dir + os.sep):
        raise OutputError(f"{out} is inside the log directory {directory}; salvage writes nothing there: "
                          "choose a directory outside it")
    if os.path.lexists(out):
        if not os.path.isdir(out):
            raise OutputError(f"{out} exists and is not a directory; give a new or empty directory")
        if os.listdir(out):
            raise OutputError(f"{out} is not empty; give a new or empty directory, so no earlier salvage is mixed in")
        return
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise OutputError(f"{parent} does not exist; create it first, or give another place for {out}")
    _io.mkdir(out)
    _io.sync_dir(parent)


class _Export:
    """Writes the records of ``entries.bin`` and keeps count; settles the LSNs a damage cost."""

    def __init__(self, f: BinaryIO, result: SalvageResult) -> None:
        self._f = f
        self._result = result
        self.last = 0
        """The last LSN exported, 0 before the first."""
        self.pending: Optional[Damage] = None
        """The latest damage whose last lost LSN the next exported entry tells."""

    def lost(self, damage: Damage) -> None:
        """Record ``damage``; the next exported entry settles the LSNs it cost.

        With no intact entry since an earlier damage still waiting, the two lost one run of
        LSNs together: it stays counted on the earlier one.
        """
        self._result.damage.append(damage)
        if damage.first_lost_lsn is None:
            return
        if self.pending is None:
            self.pending = damage
        else:
            damage.first_lost_lsn = None
            damage.continues_previous = True

    def entries(self, frames: Any) -> None:
        """Export every ``(lsn, data)`` of ``frames``."""
        write, pack = self._f.write, RECORD.pack
        lsn = 0
        for lsn, data in frames:
            if self.pending is not None:
                self._settle(lsn)
            write(pack(lsn, len(data)))
            write(data)
            self._result.entries += 1
            if self._result.first_lsn is None:
                self._result.first_lsn = lsn
        if lsn:
            self.last = self._result.last_lsn = lsn

    def _settle(self, lsn: int) -> None:
        pending, self.pending = self.pending, None
        assert pending is not None and pending.first_lost_lsn is not None
        if lsn > pending.first_lost_lsn:
            pending.last_lost_lsn = lsn - 1
        else:  # the damaged bytes held no entry of their own
            pending.first_lost_lsn = None


def salvage(directory: str, out: str) -> SalvageResult:
    """Export every intact entry of the log in ``directory`` to ``out``; report the damaged ranges.

    ``out`` must have been made ready by :func:`prepare_output`. Raises
    WalCorruptError only when the segment files cannot be told apart (two
    names for one number).
    """
    result = SalvageResult(directory, out)
    with open(os.path.join(out, ENTRIES_NAME), "xb", buffering=1 << 20) as f:
        export = _Export(f, result)
        _walk(directory, export, result)
        f.flush()
        os.fsync(f.fileno())
    report = os.path.join(out, REPORT_NAME)
    with open(report, "x") as f:
        json.dump(result.as_json(), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    _io.sync_dir(out)
    return result


def _walk(directory: str, export: _Export, result: SalvageResult) -> None:
    files, _ = _segments.segment_files(directory)  # a gap is reported below, not fatal
    end = published_end(directory)
    if end is not None:
        result.visible_lsn = end.lsn
    recorded = _floor.read(directory)
    last_seq = max(files, default=0)
    previous: Optional[int] = None
    # Bytes of damage since the last exported entry that may have held frames: they widen the
    # LSN window of the continuing-frame search (None: unknown, after missing segments).
    carried: Optional[int] = 0
    for seq, name in files.items():
        if end is not None and seq > end.seq:
            break  # P4: beyond the live writer's visible end, still being written
        if previous is not None and seq != previous + 1:
            missing = (f"{segment_name(previous + 1)}..{segment_name(seq - 1)}"
                       if seq > previous + 2 else segment_name(previous + 1))
            export.lost(Damage(MISSING_SEGMENTS, segment_name(previous + 1), None, None,
                               f"segment files {missing} are missing", export.last + 1))
            carried = None
        previous = seq
        try:
            cursor = _segments.SegmentCursor(directory, seq, name, export.last + 1 if export.last else 0)
        except LsnOutOfRangeError:
            export.lost(Damage(REMOVED, name, None, None, "a checkpoint of the live writer deleted it "
                               "before it was read", export.last + 1))
            carried = None
            continue
        try:
            limit = end.offset if end is not None and seq == end.seq else cursor.size()
            completed = seq < end.seq if end is not None else seq != last_seq
            carried = _segment(cursor, name, limit, not completed and end is None, export,
                               _first_lsn_known(recorded, seq), carried)
            if limit == 0 and completed:
                export.lost(Damage(EMPTY_SEGMENT, name, 0, 0, "a completed segment always holds entries; "
                                   "this one lost them", export.last + 1))
        finally:
            cursor.close()
    pending = export.pending
    if pending is not None and end is not None and pending.first_lost_lsn is not None:
        # Nothing intact after the damage, up to the visible end: everything up to it is lost.
        if end.lsn >= pending.first_lost_lsn:
            pending.last_lost_lsn = end.lsn
        else:
            pending.first_lost_lsn = None


def _first_lsn_known(recorded: _floor.Floor, seq: int) -> int:
    """The first LSN of segment ``seq`` as LSN_FLOOR tells it, 0 when it does not.

    The floor is the first LSN of the segment that was active when it was
    recorded (``recorded.seq``); an old one-record file (seq 0) was written by
    a checkpoint, so its floor is the first LSN of the oldest segment kept.
    """
    return recorded.next_lsn if recorded.seq in (0, seq) else 0


def _segment(cursor: _segments.SegmentCursor, name: str, limit: int, last_segment: bool, export: _Export,
             floor: int, carried: Optional[int]) -> Optional[int]:
    """Export the intact frames of one segment up to ``limit``; returns the damaged bytes it ends in."""
    while True:
        export.entries(cursor.frames(limit))
        if cursor.status == codec.SCAN_END:
            return 0 if cursor.offset else carried
        bad = cursor.offset
        if cursor.status == codec.SCAN_BAD_LSN and cursor.expect and cursor.bad_lsn > cursor.expect:
            # A whole frame with a valid CRC, but LSNs before it are not in the log (I12): export it.
            if export.pending is None:
                export.lost(Damage(MISSING_ENTRIES, name, bad, bad,
                                   f"LSN jumps from {cursor.expect - 1} to {cursor.bad_lsn}", cursor.expect))
            cursor.expect = cursor.bad_lsn
            continue
        after = export.last or max(floor - 1, 0)
        if last_segment and _damage.judge(cursor.scan_view(), after, last_segment=True).clean:
            return 0 if cursor.offset else carried  # a zero tail: the segment ends cleanly here
        reason = cursor.scan_view().reason(cursor.expect)
        anchor = None if carried is None else bad - carried
        found = _damage.find_continuing_frame(cursor.path, bad, after if carried is not None else 0, limit, anchor)
        while found is not None and _lsn_at(cursor, found) <= export.last:
            found = _damage.find_continuing_frame(cursor.path, found, after if carried is not None else 0,
                                                  limit, anchor)
        torn = _damage.judge(cursor.scan_view(), after, last_segment=last_segment).torn
        if found is None:
            if torn:
                export.lost(Damage(TORN, name, bad, limit, f"{reason}; nothing intact follows: the next "
                                   "writer open cuts it (a write cut short by a crash)"))
            else:
                export.lost(Damage(DAMAGED, name, bad, limit, f"{reason}; nothing intact follows in this segment",
                                   after + 1))
            return None if carried is None else carried + limit - bad
        export.lost(Damage(TORN if torn else DAMAGED, name, bad, found, reason, after + 1))
        cursor.offset, cursor.expect = found, _lsn_at(cursor, found)
        carried = 0


def _lsn_at(cursor: _segments.SegmentCursor, offset: int) -> int:
    """The LSN field of the frame header at ``offset`` (a frame find_continuing_frame vouched for)."""
    lsn = _segments.peek_lsn(cursor.path, offset)
    assert lsn is not None
    return lsn
