"""A recording file system layer for power-loss tests (LevelDB/RocksDB fault-injection env, ALICE).

:class:`Recorder` wraps the module-level functions of ``walogs._io`` (installed
with monkeypatch). Every wrapper calls the real function and, for a path under
the recorder's root, appends to one ordered operation log:

======== ============================================================ ==========================
kind     what happened                                                durable once
======== ============================================================ ==========================
create   a file got a directory entry (create_new, open_or_create)    ``sync_dir`` of its dir
mkdir    a directory got an entry in its parent                       ``sync_dir`` of the parent
rename   an entry moved (same directory)                              ``sync_dir`` of the dir
unlink   an entry was removed                                         ``sync_dir`` of the dir
write    ``pwrite_all(fd, data, offset)``                             ``fdatasync``/``fsync`` of the file
truncate ``ftruncate``, or ``open_or_create(..., O_TRUNC)``           ``fdatasync``/``fsync`` of the file
sync     ``fdatasync``/``fsync``: the file's data and size as of now  --
sync_dir ``sync_dir``: the directory's entries as of now              --
sync_failed an fdatasync/fsync/sync_dir the recorder failed with EIO  makes nothing durable
======== ============================================================ ==========================

Files are tracked as inodes (a rename keeps the inode, an unlinked inode keeps
its data), descriptors map to inodes. Each create/mkdir/rename/unlink op gets
``durable_at``: the index of the ``sync_dir`` that made it durable (None: never).

A *crash point* ``i`` is an index into the log: ops ``0 .. i-1`` happened,
op ``i`` did not. :meth:`Recorder.build_image` writes the whole root as it could
be found after a power failure at ``i`` into a fresh directory of real files:

- data, per file: its content as of its last successful sync (``durable``,
  variant a), plus one of the ways unsynced writes can reach the disk:
  ``prefix`` (b: the first k unsynced ops in order, the next write cut at a
  random byte), ``zero`` (c: the final size, every unsynced byte zero),
  ``random`` (d: every unsynced byte random), ``sectors`` (each 512-byte sector
  an unsynced write touched reached the disk or not, independently: pages of
  one sync window land out of order), ``volatile`` (everything reached the
  disk); image variant ``mixed`` (e) picks one of these per file independently;
- namespace, per directory: entries as of its last ``sync_dir`` (``durable``:
  files created since missing, files unlinked since present again with their
  durable data, renames since not applied), ``volatile`` (all applied),
  ``prefix`` (the first k pending directory ops, in order), ``subset`` (each
  pending op independently; a rename applied alone moves the inode).

Failures: :meth:`Recorder.fail_nth` makes the n-th fdatasync/fsync/sync_dir (or
pwrite_all) raise EIO without calling the real function; whether the data pending
at a failed sync is retried later or lost for good is the ``failed_sync_loses``
choice.

Only syscalls made through ``walogs._io`` are seen. Content written behind its
back (the writer's ``VISIBLE`` mapping, the pid in ``LOCK``) can be supplied
per image with the ``opaque`` hook.
"""

from __future__ import annotations

import bisect
import errno
import os
import random
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from walogs import _io

_IO_FILE = os.path.abspath(_io.__file__)
_PACKAGE = os.path.dirname(_IO_FILE)

SECTOR = 512
DATA_VARIANTS = ("durable", "prefix", "zero", "random", "sectors", "volatile")
"""Per-file choices of what became of unsynced data."""
IMAGE_VARIANTS = ("durable", "prefix", "zero", "random", "mixed", "sectors", "volatile")
"""Whole-image variants: one data choice for every file, or ``mixed`` (one per file)."""
MIXED_CHOICES = ("durable", "prefix", "zero", "random")  # variant e: per file among a-d
NAMESPACE_MODES = ("durable", "volatile", "prefix", "subset")
SYNC_KINDS = frozenset({"sync", "sync_dir"})
DIR_KINDS = frozenset({"create", "mkdir", "rename", "unlink"})
DATA_KINDS = frozenset({"write", "truncate"})

WRAPPED = ("open_read", "open_write", "open_read_write", "create_new", "open_or_create", "close", "pwrite_all",
           "fdatasync", "fsync", "ftruncate", "rename", "unlink", "mkdir", "sync_dir")

Opaque = Callable[[str, bytes, random.Random], Optional[bytes]]
"""``opaque(relative_path, built_content, rng)``: replacement content, or None to keep it."""


@dataclass
class Op:
    """One recorded operation."""

    index: int
    kind: str
    call: str
    """The ``_io`` function that produced it."""
    path: str
    """Absolute path (for a rename: the source)."""
    inode: int
    offset: int = 0
    data: bytes = b""
    length: int = 0
    """New size, for a truncate."""
    dir_inode: int = -1
    """For directory ops: the directory whose entries change."""
    name: str = ""
    dst_name: str = ""
    site: str = ""
    """``module:function`` in walogs that made the call."""
    durable_at: int | None = None
    """Directory ops: index of the sync_dir that made the change durable."""
    lost: bool = False
    """Data ops a failed sync lost (Recorder(failed_sync_loses=True)): in no image."""

    def describe(self) -> str:
        """One line for reports."""
        base = os.path.basename(self.path)
        if self.kind == "write":
            what = f"write {base} @{self.offset} +{len(self.data)}"
        elif self.kind == "truncate":
            what = f"truncate {base} to {self.length}"
        elif self.kind == "rename":
            what = f"rename {self.name} -> {self.dst_name}"
        elif self.kind in ("sync", "sync_failed"):
            what = f"{self.kind} ({self.call}) {base}"
        else:
            what = f"{self.kind} {base}"
        return f"#{self.index} {what}{' (lost)' if self.lost else ''} [{self.site}]"


class _Inode:
    def __init__(self, number: int, kind: str, path: str | None) -> None:
        self.number = number
        self.kind = kind  # "file" | "dir"
        self.path = path  # current live path, None once unlinked
        self.initial = b""  # files: content when the recorder started (durable)
        self.initial_entries: dict[str, int] = {}  # dirs: entries when the recorder started
        self.data_ops: list[int] = []
        self.lost_ops: list[int] = []  # writes a failed sync lost (failed_sync_loses)
        self.dir_ops: list[int] = []
        self.syncs: list[int] = []  # files: successful sync ops; dirs: sync_dir ops


@dataclass
class Image:
    """A crash image written to ``path`` (the root as found after the crash)."""

    path: str
    point: int
    variant: str
    namespace: str
    files: dict[str, str] = field(default_factory=dict)
    """Relative path -> the data choice made for it ("prefix 2/3+17B", ...)."""
    dirs: dict[str, str] = field(default_factory=dict)
    """Relative dir path -> the namespace choice ("2/3 pending applied", ...)."""

    def describe(self) -> str:
        files = ", ".join(f"{k}: {v}" for k, v in sorted(self.files.items()))
        dirs = ", ".join(f"{k or '.'}: {v}" for k, v in sorted(self.dirs.items()))
        return f"point {self.point} variant {self.variant} namespace {self.namespace}; dirs [{dirs}]; files [{files}]"


def _replay(base: bytes, ops: list[Op]) -> bytearray:
    buf = bytearray(base)
    for op in ops:
        _apply(buf, op)
    return buf


def _apply(buf: bytearray, op: Op, data: bytes | None = None) -> None:
    if op.kind == "write":
        data = op.data if data is None else data
        if not data:
            return
        if op.offset > len(buf):
            buf.extend(bytes(op.offset - len(buf)))
        buf[op.offset:op.offset + len(data)] = data
    else:
        if op.length < len(buf):
            del buf[op.length:]
        else:
            buf.extend(bytes(op.length - len(buf)))


def _touched(base_len: int, ops: list[Op]) -> list[tuple[int, int]]:
    """Byte ranges of the final content that the ops wrote or created (merged, sorted)."""
    ranges: list[tuple[int, int]] = []
    size = base_len
    for op in ops:
        if op.kind == "write":
            if op.data:
                start = min(op.offset, size)  # a write past the end also creates the hole before it
                ranges.append((start, op.offset + len(op.data)))
                size = max(size, op.offset + len(op.data))
        else:
            if op.length < size:
                ranges = [(a, min(b, op.length)) for a, b in ranges if a < op.length]
            else:
                ranges.append((size, op.length))
            size = op.length
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for a, b in ranges:
        if b <= a:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


class Recorder:
    """Records the walogs syscalls under ``root`` and builds crash images from them."""

    def __init__(self, root: os.PathLike[str] | str, failed_sync_loses: bool = False) -> None:
        """``failed_sync_loses``: the model of a failed fdatasync/fsync. False: the data stays
        dirty and a later successful sync makes it durable (the kernel retries writeback).
        True: what was pending on that file never reaches the disk (Linux marks the pages
        clean after a writeback error, "fsyncgate"), though reads keep returning it from the
        page cache until eviction; those writes are left out of every image."""
        self.root = os.path.abspath(os.fspath(root))
        self.failed_sync_loses = failed_sync_loses
        if not os.path.isdir(self.root):
            raise NotADirectoryError(self.root)
        self.ops: list[Op] = []
        self._inodes: dict[int, _Inode] = {}
        self._by_path: dict[str, int] = {}
        self._fds: dict[int, int] = {}
        self._real: dict[str, Callable] = {}
        self._mutex = threading.RLock()
        self._calls: Counter[str] = Counter()
        self._fail: dict[str, set[int]] = {}
        self._content_cache: dict[tuple[int, int], bytes] = {}
        self._entries_cache: dict[tuple[int, int], dict[str, int]] = {}
        self.root_inode = self._scan(self.root)

    # ------------------------------------------------------------ setup

    def _new_inode(self, kind: str, path: str | None) -> _Inode:
        ino = _Inode(len(self._inodes), kind, path)
        self._inodes[ino.number] = ino
        if path is not None:
            self._by_path[path] = ino.number
        return ino

    def _scan(self, path: str) -> int:
        """What exists at install time is durable as it is."""
        if os.path.isdir(path):
            ino = self._new_inode("dir", path)
            for name in sorted(os.listdir(path)):
                ino.initial_entries[name] = self._scan(os.path.join(path, name))
        else:
            ino = self._new_inode("file", path)
            with open(path, "rb") as f:
                ino.initial = f.read()
        return ino.number

    def install(self, monkeypatch) -> Recorder:
        """Wrap every ``walogs._io`` function that changes or syncs the directory (and the opens)."""
        for name in WRAPPED:
            self._real[name] = getattr(_io, name)
            monkeypatch.setattr(_io, name, getattr(self, "_" + name))
        return self

    def wrapper(self, name: str) -> Callable:
        """The recording wrapper that :meth:`install` puts over ``_io.<name>`` (to build a
        scratch patch on top of it)."""
        if name not in WRAPPED:
            raise ValueError(name)
        return getattr(self, "_" + name)

    def fail_nth(self, call: str, *nth: int) -> None:
        """Make the given calls (1-based, counted over every call of ``call``) raise EIO.

        For fdatasync/fsync/sync_dir the real call is not made, the op is
        recorded as ``sync_failed`` and makes nothing durable.
        """
        self._fail.setdefault(call, set()).update(nth)

    def calls(self, call: str) -> int:
        """How many times ``call`` was made through the recorder."""
        return self._calls[call]

    # ------------------------------------------------------------ recording

    def _tracked(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    @staticmethod
    def _site() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            filename = os.path.abspath(frame.f_code.co_filename)
            if os.path.dirname(filename) == _PACKAGE and filename != _IO_FILE:
                return f"{os.path.basename(filename)[:-3]}:{frame.f_code.co_name}"
            frame = frame.f_back
        return "?"

    def _record(self, kind: str, call: str, path: str, inode: int, **kw) -> Op:
        op = Op(len(self.ops), kind, call, path, inode, site=self._site(), **kw)
        self.ops.append(op)
        ino = self._inodes[inode]
        if kind in DATA_KINDS:
            ino.data_ops.append(op.index)
        elif kind == "sync":
            ino.syncs.append(op.index)
        return op

    def _dir_op(self, kind: str, call: str, path: str, inode: int, dst: str | None = None) -> None:
        parent = os.path.dirname(path)
        if dst is not None and os.path.dirname(dst) != parent:
            raise AssertionError(f"crashfs models renames within one directory only: {path} -> {dst}")
        dir_ino = self._by_path[parent]
        op = self._record(kind, call, path, inode, dir_inode=dir_ino, name=os.path.basename(path),
                          dst_name=os.path.basename(dst) if dst else "")
        self._inodes[dir_ino].dir_ops.append(op.index)

    def _lookup(self, path: str) -> int:
        try:
            return self._by_path[path]
        except KeyError:
            raise AssertionError(f"crashfs: {path} exists but was not created through walogs._io") from None

    def _open_existing(self, name: str, path: str) -> int:
        """``_io.<name>(path)`` of a file that exists: its descriptor now names its inode."""
        fd = self._real[name](path)
        with self._mutex:
            apath = os.path.abspath(path)
            if self._tracked(apath):
                self._fds[fd] = self._lookup(apath)
        return fd

    def _open_read(self, path: str) -> int:
        return self._open_existing("open_read", path)

    def _open_write(self, path: str) -> int:
        return self._open_existing("open_write", path)

    def _open_read_write(self, path: str) -> int:
        return self._open_existing("open_read_write", path)

    def _create_new(self, path: str) -> int:
        fd = self._real["create_new"](path)
        with self._mutex:
            apath = os.path.abspath(path)
            if self._tracked(apath):
                ino = self._new_inode("file", apath)
                self._dir_op("create", "create_new", apath, ino.number)
                self._fds[fd] = ino.number
        return fd

    def _open_or_create(self, path: str, flags: int = os.O_RDWR) -> int:
        apath = os.path.abspath(path)
        existed = os.path.lexists(apath)
        fd = self._real["open_or_create"](path, flags)
        with self._mutex:
            if self._tracked(apath):
                if existed:
                    number = self._lookup(apath)
                    if flags & os.O_TRUNC:
                        self._record("truncate", "open_or_create", apath, number, length=0)
                else:
                    number = self._new_inode("file", apath).number
                    self._dir_op("create", "open_or_create", apath, number)
                self._fds[fd] = number
        return fd

    def _close(self, fd: int) -> None:
        with self._mutex:
            self._fds.pop(fd, None)
        self._real["close"](fd)

    def _pwrite_all(self, fd: int, data, offset: int) -> None:
        with self._mutex:
            self._calls["pwrite_all"] += 1
            number = self._fds.get(fd)
            if self._calls["pwrite_all"] in self._fail.get("pwrite_all", ()):
                raise OSError(errno.EIO, "crashfs: injected EIO on pwrite_all")
            payload = bytes(data)
            try:
                self._real["pwrite_all"](fd, data, offset)
            except OSError:
                path = self._inodes[number].path if number is not None else None
                if path is not None:  # record what landed before the error
                    with open(path, "rb") as f:
                        f.seek(offset)
                        landed = f.read(len(payload))
                    if landed:
                        self._record("write", "pwrite_all", path, number, offset=offset, data=landed)
                raise
            if number is not None:
                self._record("write", "pwrite_all", self._inodes[number].path or "?", number,
                             offset=offset, data=payload)

    def _sync(self, call: str, fd: int) -> None:
        with self._mutex:
            self._calls[call] += 1
            number = self._fds.get(fd)
            path = self._inodes[number].path or "?" if number is not None else "?"
            if self._calls[call] in self._fail.get(call, ()):
                if number is not None:
                    op = self._record("sync_failed", call, path, number)
                    if self.failed_sync_loses:
                        self._lose_pending(self._inodes[number], op.index)
                raise OSError(errno.EIO, f"crashfs: injected EIO on {call}")
            self._real[call](fd)
            if number is not None:
                self._record("sync", call, path, number)

    def _lose_pending(self, ino: _Inode, point: int) -> None:
        lost = self._pending(ino.data_ops, self._last_sync(ino, point), point)
        for index in lost:
            self.ops[index].lost = True
        ino.lost_ops.extend(lost)
        ino.data_ops = [i for i in ino.data_ops if i not in set(lost)]
        self._content_cache.clear()

    def _fdatasync(self, fd: int) -> None:
        self._sync("fdatasync", fd)

    def _fsync(self, fd: int) -> None:
        self._sync("fsync", fd)

    def _ftruncate(self, fd: int, length: int) -> None:
        with self._mutex:
            self._real["ftruncate"](fd, length)
            number = self._fds.get(fd)
            if number is not None:
                self._record("truncate", "ftruncate", self._inodes[number].path or "?", number, length=length)

    def _rename(self, src: str, dst: str) -> None:
        with self._mutex:
            self._real["rename"](src, dst)
            asrc, adst = os.path.abspath(src), os.path.abspath(dst)
            if self._tracked(asrc):
                number = self._lookup(asrc)
                self._dir_op("rename", "rename", asrc, number, dst=adst)
                del self._by_path[asrc]
                replaced = self._by_path.get(adst)
                if replaced is not None:
                    self._inodes[replaced].path = None
                self._by_path[adst] = number
                self._inodes[number].path = adst

    def _unlink(self, path: str) -> None:
        with self._mutex:
            self._real["unlink"](path)
            apath = os.path.abspath(path)
            if self._tracked(apath):
                number = self._lookup(apath)
                self._dir_op("unlink", "unlink", apath, number)
                del self._by_path[apath]
                self._inodes[number].path = None

    def _mkdir(self, path: str) -> None:
        with self._mutex:
            self._real["mkdir"](path)
            apath = os.path.abspath(path)
            if self._tracked(apath):
                ino = self._new_inode("dir", apath)
                self._dir_op("mkdir", "mkdir", apath, ino.number)

    def _sync_dir(self, path: str) -> None:
        with self._mutex:
            self._calls["sync_dir"] += 1
            apath = os.path.abspath(path)
            number = self._by_path.get(apath) if self._tracked(apath) else None
            if self._calls["sync_dir"] in self._fail.get("sync_dir", ()):
                if number is not None:
                    self._record("sync_failed", "sync_dir", apath, number)
                raise OSError(errno.EIO, "crashfs: injected EIO on sync_dir")
            self._real["sync_dir"](path)
            if number is not None:
                op = self._record("sync_dir", "sync_dir", apath, number)
                ino = self._inodes[number]
                ino.syncs.append(op.index)
                for index in ino.dir_ops:
                    if self.ops[index].durable_at is None:
                        self.ops[index].durable_at = op.index

    # ------------------------------------------------------------ queries

    def path_of(self, fd: int) -> str | None:
        """The live path of a tracked descriptor (None if untracked)."""
        number = self._fds.get(fd)
        return None if number is None else self._inodes[number].path

    def sync_points(self) -> list[int]:
        """Indices of every successful fdatasync/fsync/sync_dir op."""
        return [op.index for op in self.ops if op.kind in SYNC_KINDS]

    def _last_sync(self, ino: _Inode, point: int) -> int:
        at = bisect.bisect_left(ino.syncs, point)
        return ino.syncs[at - 1] if at else -1

    def _pending(self, ops: list[int], after: int, point: int) -> list[int]:
        return ops[bisect.bisect_right(ops, after):bisect.bisect_left(ops, point)]

    def pending_at(self, point: int, ignore: tuple[str, ...] = ()) -> int:
        """How many ops (data or directory) are not yet durable at ``point``.

        ``ignore``: base names of files whose unsynced data does not count.
        """
        total = 0
        for ino in self._inodes.values():
            if ino.kind == "file" and ino.path is not None and os.path.basename(ino.path) in ignore:
                continue
            last = self._last_sync(ino, point)
            total += len(self._pending(ino.dir_ops if ino.kind == "dir" else ino.data_ops, last, point))
        return total

    def durable_content(self, inode: int, point: int) -> bytes:
        """A file's content as of its last sync before ``point``."""
        ino = self._inodes[inode]
        last = self._last_sync(ino, point)
        key = (inode, last)
        cached = self._content_cache.get(key)
        if cached is None:
            done = ino.data_ops[:bisect.bisect_left(ino.data_ops, last)] if last >= 0 else []
            cached = bytes(_replay(ino.initial, [self.ops[i] for i in done]))
            self._content_cache[key] = cached
        return cached

    def _durable_entries(self, ino: _Inode, last: int) -> dict[str, int]:
        key = (ino.number, last)
        cached = self._entries_cache.get(key)
        if cached is None:
            cached = dict(ino.initial_entries)
            if last >= 0:
                for index in ino.dir_ops[:bisect.bisect_left(ino.dir_ops, last)]:
                    self._apply_dir_op(cached, self.ops[index])
            self._entries_cache[key] = cached
        return cached

    @staticmethod
    def _apply_dir_op(entries: dict[str, int], op: Op) -> None:
        if op.kind in ("create", "mkdir"):
            entries[op.name] = op.inode
        elif op.kind == "unlink":
            if entries.get(op.name) == op.inode:
                del entries[op.name]
        else:  # rename; applied alone (subset) it still moves the inode
            if entries.get(op.name) == op.inode:
                del entries[op.name]
            entries[op.dst_name] = op.inode

    # ------------------------------------------------------------ images

    def _file_content(self, number: int, point: int, choice: str, rng: random.Random) -> tuple[bytes, str]:
        ino = self._inodes[number]
        durable = self.durable_content(number, point)
        pending = [self.ops[i] for i in self._pending(ino.data_ops, self._last_sync(ino, point), point)]
        if not pending or choice == "durable":
            return durable, f"durable{f' (-{len(pending)} ops)' if pending else ''}"
        if choice == "volatile":
            return bytes(_replay(durable, pending)), f"volatile {len(pending)} ops"
        if choice == "prefix":
            keep = rng.randint(0, len(pending))
            buf = _replay(durable, pending[:keep])
            note = f"prefix {keep}/{len(pending)}"
            if keep < len(pending) and pending[keep].kind == "write" and len(pending[keep].data) > 1:
                cut = rng.randrange(len(pending[keep].data))  # the next write torn at a byte
                if cut:
                    _apply(buf, pending[keep], pending[keep].data[:cut])
                    note += f"+{cut}B"
            return bytes(buf), note
        final = _replay(durable, pending)
        ranges = _touched(len(durable), pending)
        if choice in ("zero", "random"):
            for a, b in ranges:
                final[a:b] = bytes(b - a) if choice == "zero" else rng.randbytes(b - a)
            return bytes(final), f"{choice} {sum(b - a for a, b in ranges)}B"
        if choice == "sectors":
            old = bytearray(durable[:len(final)])
            old.extend(bytes(len(final) - len(old)))
            sectors = sorted({s for a, b in ranges for s in range(a // SECTOR, (b - 1) // SECTOR + 1)})
            keep_p = rng.random()
            lost = []
            for s in sectors:
                if rng.random() >= keep_p:
                    lo, hi = s * SECTOR, min((s + 1) * SECTOR, len(final))
                    final[lo:hi] = old[lo:hi]
                    lost.append(s)
            return bytes(final), f"sectors lost {lost} of {len(sectors)}"
        raise ValueError(f"unknown data choice {choice!r}")

    def build_image(self, point: int, dest: os.PathLike[str] | str, variant: str = "durable",
                    namespace: str = "durable", rng: random.Random | None = None,
                    opaque: Opaque | None = None) -> Image:
        """Write the root as a power failure at ``point`` could leave it into ``dest`` (created).

        ``variant`` is one of IMAGE_VARIANTS, ``namespace`` one of NAMESPACE_MODES.
        """
        if variant not in IMAGE_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        if namespace not in NAMESPACE_MODES:
            raise ValueError(f"unknown namespace mode {namespace!r}")
        if not 0 <= point <= len(self.ops):
            raise ValueError(f"crash point {point} outside 0..{len(self.ops)}")
        rng = rng or random.Random(point)
        dest = os.path.abspath(os.fspath(dest))
        image = Image(dest, point, variant, namespace)
        os.makedirs(dest)
        self._build_dir(self.root_inode, dest, "", point, image, rng, opaque)
        return image

    def _build_dir(self, number: int, dest: str, rel: str, point: int, image: Image,
                   rng: random.Random, opaque: Opaque | None) -> None:
        ino = self._inodes[number]
        last = self._last_sync(ino, point)
        entries = dict(self._durable_entries(ino, last))
        pending = [self.ops[i] for i in self._pending(ino.dir_ops, last, point)]
        if pending:
            mode = image.namespace
            if mode == "durable":
                chosen = []
            elif mode == "volatile":
                chosen = pending
            elif mode == "prefix":
                chosen = pending[:rng.randint(0, len(pending))]
            else:
                chosen = [op for op in pending if rng.random() < 0.5]
            for op in chosen:
                self._apply_dir_op(entries, op)
            image.dirs[rel] = f"{mode}: applied {[op.index for op in chosen]} of {[op.index for op in pending]}"
        for name, child in sorted(entries.items()):
            path = os.path.join(dest, name)
            child_rel = os.path.join(rel, name) if rel else name
            if self._inodes[child].kind == "dir":
                os.mkdir(path)
                self._build_dir(child, path, child_rel, point, image, rng, opaque)
                continue
            choice = image.variant if image.variant != "mixed" else rng.choice(MIXED_CHOICES)
            content, note = self._file_content(child, point, choice, rng)
            if opaque is not None:
                replaced = opaque(child_rel, content, rng)
                if replaced is not None:
                    content, note = replaced, f"opaque {len(replaced)}B"
            with open(path, "wb") as f:
                f.write(content)
            image.files[child_rel] = note
