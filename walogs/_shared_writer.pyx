# cython: language_level=3, embedsignature=True
# cython: binding=True, cdivision=True, annotation_typing=False, autotestdict=False
"""A shared writer in C; ``_shared_writer_py`` is the same algorithm in Python, and its specification.

One process's handle on a log that many processes append to
(``Wal.open(path, config, shared=True)``). The twin's docstring and
docs/shared-writers.md describe the design: the state in the mapped
``WRITERS`` file (two slots switched with one store, a dirty flag, the
durable LSN, the poison record), the OFD byte-range locks APPEND and SYNC,
the group commit that gathers on a futex, rotation under APPEND and the
repair a dirty flag calls for. Every step here is the twin's, with the same
names, in the same order; the differences are only in how it runs:

* The append path (APPEND, repair, ``pwrite``, the slot switch, the
  in-flight and published records of VISIBLE), the durable wait (SYNC,
  the gather and the sleep on futexes), the fdatasync and rotation's system
  calls run without the GIL. The shared words are loaded and stored with
  ``__atomic`` builtins through a pointer into the mapping (``_shared_writer.h``),
  whose buffer export is held until ``close`` or ``drop_in_child``.
* ``_local`` and ``_leader`` are pthread mutexes. Lock order, within a
  process and across processes: ``_leader``, SYNC, ``_local``, APPEND. The
  GIL is never held while waiting for any of them; a thread holding them
  may take the GIL (the host callbacks, error objects, a batch's frames,
  opening a segment, the rare repair), as in ``_writer.pyx``. The host
  callbacks ``new_segment`` and ``completed`` are called with ``_local``
  and APPEND held, ``refusal`` with nothing held.
* The fault seam: while a test has wrapped ``walogs._io.pwrite_all``,
  ``fdatasync`` or ``ftruncate``, those calls go through ``walogs._io`` with
  the GIL, so the crash and fault suites drive this code too.
* ``close`` waits for the threads of this process that are still in a
  durable wait to leave it before it releases the mappings; such a thread
  then returns as the twin's would if its entry is durable, and raises
  ``refusal()`` (closed) if it is not.

Every offset and layout is ``walogs._format``'s, read at import.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.errno cimport EINTR, EIO, errno
from libc.stdint cimport UINT64_MAX, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, strerror
from posix.types cimport off_t

from walogs._frame cimport build_frame, build_in_flight, build_visible, entry_view

import os
import sys

from walogs import _frame, _io, _sync_log
from walogs._format import (
    FRAME_HEADER_SIZE,
    IN_FLIGHT_OFFSET,
    MAX_ENTRY_SIZE,
    WRITERS_CURRENT,
    WRITERS_DIRTY,
    WRITERS_DURABLE,
    WRITERS_FILE_SIZE,
    WRITERS_GATHER,
    WRITERS_GATHER_AT,
    WRITERS_LOCK_APPEND,
    WRITERS_LOCK_SYNC,
    WRITERS_POISON,
    WRITERS_POISON_AT,
    WRITERS_SLOT,
    WRITERS_SLOT_FIELDS,
    WRITERS_SLOTS,
    WRITERS_SYNCS,
    WRITERS_UNSYNCED,
    WRITERS_WAIT_GUARD,
    WRITERS_WANT,
    segment_name,
)
from walogs._format import VISIBLE_MAGIC
from walogs._format import VISIBLE_FILE_SIZE as FILE_SIZE
from walogs._format import VISIBLE_PUBLISHED as PUBLISHED
from walogs._types import as_batch
from walogs.config import SYNC_MODES as MODES
from walogs.errors import EntryTooLargeError

cdef extern from "unistd.h" nogil:
    ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
    int fdatasync(int fd)
    int ftruncate(int fd, off_t length)
    int getpid()

cdef extern from "pthread.h" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_trylock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)

cdef extern from "_shared_writer.h" nogil:
    uint64_t wsw_load64(const unsigned char *base, size_t at)
    void wsw_store64(unsigned char *base, size_t at, uint64_t value)
    uint32_t wsw_load32(const unsigned char *base, size_t at)
    void wsw_store32(unsigned char *base, size_t at, uint32_t value)
    uint32_t wsw_load32_sc(const unsigned char *base, size_t at)
    void wsw_store32_sc(unsigned char *base, size_t at, uint32_t value)
    int wsw_iload(const int *p)
    void wsw_istore(int *p, int value)
    void wsw_iadd(int *p, int value)
    int64_t wsw_now_ns()
    int wsw_lock(int fd, off_t at)
    int wsw_try_lock(int fd, off_t at)
    int wsw_unlock(int fd, off_t at)
    void wsw_futex_wait(unsigned char *base, size_t at, uint32_t expected, int64_t ns)
    void wsw_futex_wake(unsigned char *base, size_t at, int count)
    void wsw_pause_ns(int64_t ns)


cdef enum:
    _HDR = 16
    _STACK_FRAME = 512              # frames up to this size are built on the stack
    _VISIBLE_PUBLISHED = 2
    _VISIBLE_FILE = 80              # the mapping: visible end (32 bytes), then the in-flight record
    _IN_FLIGHT_AT = 32
    _BOOT_ID = 16
    _MODE_ALWAYS = 0
    _MODE_INTERVAL = 1
    _MODE_NONE = 2
    _WINDOW = 256                   # _sync_log.SYNC_WINDOW, checked below
    # A state slot's u64 fields, in WRITERS_SLOT_FIELDS' order.
    _SEQ = 0
    _END = 1
    _FIRST = 2
    _LAST = 3
    _WRITTEN = 4
    _SYNCED_LSN = 5
    _SYNCED_SEQ = 6
    _SYNCED_END = 7
    _FIELDS = 8
    # Outcomes of the C steps; the public methods turn them into a result or a raise.
    _OK = 0
    _R_REFUSED = -1                 # closed or poisoned: raise refusal() (the twin's false value)
    _R_FAILED = -2                  # the call's _Call.exc holds the exception to raise
    _R_GONE = -3                    # the segment to sync was checkpointed: nothing to sync

cdef int64_t _GATHER_MAX_NS = 1000000    # a gathering leader waits at most 1 ms
cdef char _VISIBLE_MAGIC_0 = VISIBLE_MAGIC[0]
cdef int64_t _SLOW_SYNC_NS = <int64_t>(_sync_log.SLOW_SYNC_SECONDS * 1e9)
if _sync_log.SYNC_WINDOW != _WINDOW:
    raise ImportError(f"{__name__} keeps {_WINDOW} sync durations, _sync_log.SYNC_WINDOW says {_sync_log.SYNC_WINDOW}")
cdef uint32_t _MAX_LEN = MAX_ENTRY_SIZE

if FRAME_HEADER_SIZE != _HDR:
    raise ImportError(f"walogs._shared_writer is built for {_HDR}-byte frame headers, not {FRAME_HEADER_SIZE}")
if PUBLISHED != _VISIBLE_PUBLISHED:
    raise ImportError(f"walogs._shared_writer publishes state {_VISIBLE_PUBLISHED}, _format says {PUBLISHED}")
if (FILE_SIZE, IN_FLIGHT_OFFSET) != (_VISIBLE_FILE, _IN_FLIGHT_AT):
    raise ImportError(f"walogs._shared_writer maps a {_VISIBLE_FILE}-byte VISIBLE with the in-flight record at "
                      f"{_IN_FLIGHT_AT}, _format says {FILE_SIZE} and {IN_FLIGHT_OFFSET}")
_C_SLOT = ("seq", "end", "first_lsn", "last_lsn", "written", "synced_lsn", "synced_seq", "synced_end")
if (WRITERS_SLOT.format, WRITERS_SLOT_FIELDS) != ("<QQQQQQQQ", _C_SLOT):
    raise ImportError(f"walogs._shared_writer reads state slots of {_FIELDS} u64 fields {_C_SLOT}, _format "
                      f"says {WRITERS_SLOT.format!r} {WRITERS_SLOT_FIELDS}")
if (WRITERS_POISON.format, WRITERS_GATHER.format) != ("<iI", "<IIQ"):
    raise ImportError(f"walogs._shared_writer reads the poison record as <iI and the gather record as <IIQ, "
                      f"_format says {WRITERS_POISON.format!r} and {WRITERS_GATHER.format!r}")
# Native loads and stores of little-endian fields, each aligned to its size.
if sys.byteorder != "little" or any(at % 8 for at in (WRITERS_DURABLE, WRITERS_GATHER_AT, *WRITERS_SLOTS)) or any(
        at % 4 for at in (WRITERS_CURRENT, WRITERS_DIRTY, WRITERS_POISON_AT, WRITERS_UNSYNCED, WRITERS_WANT,
                          WRITERS_SYNCS)):
    raise ImportError("walogs._shared_writer needs a little-endian machine and aligned WRITERS fields")

# The layout, from walogs._format.
cdef size_t _CURRENT_AT = WRITERS_CURRENT
cdef size_t _DIRTY_AT = WRITERS_DIRTY
cdef size_t _DURABLE_AT = WRITERS_DURABLE
cdef size_t _POISON_AT = WRITERS_POISON_AT            # errno i32, then pid u32
cdef size_t _POISON_PID_AT = WRITERS_POISON_AT + 4
cdef size_t _UNSYNCED_AT = WRITERS_UNSYNCED
cdef size_t _WANT_AT = WRITERS_WANT
cdef size_t _SYNC_ENDS_AT = WRITERS_SYNCS
cdef size_t _GATHER_AT = WRITERS_GATHER_AT            # appends u32, 4 zero bytes, ns u64
cdef size_t _SLOT_AT[2]
_SLOT_AT[0], _SLOT_AT[1] = WRITERS_SLOTS
cdef size_t _FILE_SIZE = WRITERS_FILE_SIZE
cdef off_t _LOCK_APPEND = WRITERS_LOCK_APPEND
cdef off_t _LOCK_SYNC = WRITERS_LOCK_SYNC
cdef int64_t _WAIT_GUARD_NS = <int64_t>(WRITERS_WAIT_GUARD * 1e9)



include "_calls.pxi"


cdef int _errno_failed(_Call *call, int code) noexcept nogil:
    # A system call failed with errno ``code``: keep its OSError, as Python's os module would raise it.
    with gil:
        try:
            _keep(call, OSError(code, strerror(code).decode("utf-8", "replace")))
        except BaseException as exc:   # MemoryError
            _keep(call, exc)
    return _R_FAILED


cdef bint _kept_oserror(_Call *call) noexcept nogil:
    # The twin's ``except OSError``: only those poison; anything else (Ctrl-C) only propagates.
    with gil:
        return call.exc != NULL and isinstance(<object>call.exc, OSError)


cdef class SharedWriter:
    """One process's writer on a log that every attached process appends to.

    Thread-safe. The surface is :class:`walogs._writer_py.SegmentWriter`'s:
    every call that cannot be done raises ``refusal()`` (closed, poisoned in
    any process, or in a forked child), the OSError of a failed write or
    sync (which poisons every process), or the codec's errors for a bad
    entry.
    """

    cdef pthread_mutex_t _local     # before APPEND: one thread of this process in the append section
    cdef pthread_mutex_t _leader    # before SYNC: one thread of this process leads or waits for a sync
    cdef bint _locks_ready
    cdef object _dir, _map, _locks, _publisher
    cdef object _new_segment, _completed, _refusal
    cdef object _poison             # the failure this process hit (others: see poison)
    cdef bint _poisoned_here        # _poison is set (read without the GIL)
    cdef int _mode
    cdef uint64_t _limit
    cdef Py_buffer _state           # the WRITERS mapping, exported until close / drop_in_child
    cdef bint _has_state
    cdef unsigned char *_base
    cdef Py_buffer _visible         # the VISIBLE mapping, likewise
    cdef bint _has_visible
    cdef int _visible_fd            # VISIBLE's descriptor, the publisher's: written to wake followers
    cdef unsigned char _boot[_BOOT_ID]
    cdef int _lock_fd               # the open file of WRITERS that carries the byte-range locks
    cdef int _closed                # read and stored atomically (wsw_iload / wsw_istore)
    cdef int _users                 # threads in a durable wait: close releases the mappings after they left
    cdef bint _in_child, _wrapped
    cdef int _fd, _sync_fd          # the active segment, for writing (under _local); a segment, for fdatasync (under _leader)
    cdef uint64_t _seq, _sync_seq
    cdef uint64_t _syncs
    cdef int64_t _sync_ns
    cdef int64_t _recent[_WINDOW]   # the latest group-commit fdatasync durations (a ring)
    cdef object _closed_snapshot
    cdef uint64_t _closed_durable

    def __cinit__(self):
        self._fd = -1
        self._sync_fd = -1
        self._lock_fd = -1
        self._closed = 1   # until __init__ has mapped the state
        self._closed_snapshot = (0, 0, 0, 0, 1)
        self._init_locks()
        self._locks_ready = True

    cdef void _init_locks(self) noexcept:
        pthread_mutex_init(&self._local, NULL)
        pthread_mutex_init(&self._leader, NULL)

    def __init__(self, directory: str, state: object, locks: object, limit: int, mode: str,
                 publisher: object, *, new_segment: object, completed: object, refusal: object) -> None:
        """Attach to the state in ``state`` (the mapped WRITERS file); ``locks`` is its open file."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._dir = directory
        self._mode = MODES.index(mode)
        self._limit = min(limit, (1 << 64) - 1)
        self._map = state
        boot = bytes(publisher.boot_id)
        if len(boot) != _BOOT_ID:
            raise ValueError(f"a boot id has {_BOOT_ID} bytes, not {len(boot)}")
        memcpy(self._boot, PyBytes_AS_STRING(boot), _BOOT_ID)
        PyObject_GetBuffer(state, &self._state, PyBUF_WRITABLE)
        self._has_state = True
        if self._state.len < <Py_ssize_t>_FILE_SIZE:
            raise ValueError(f"the WRITERS mapping has {self._state.len} bytes, not {_FILE_SIZE}")
        self._base = <unsigned char *>self._state.buf
        PyObject_GetBuffer(publisher.buffer(), &self._visible, PyBUF_WRITABLE)
        self._has_visible = True
        self._visible_fd = publisher.fd
        if self._visible.len < _VISIBLE_FILE:
            raise ValueError(f"the VISIBLE mapping has {self._visible.len} bytes, not {_VISIBLE_FILE}")
        self._locks = locks
        self._lock_fd = locks.fd
        self._publisher = publisher
        self._new_segment, self._completed, self._refusal = new_segment, completed, refusal
        self._poison = None
        self._fd, self._seq = -1, 0
        self._sync_fd, self._sync_seq = -1, 0
        self._syncs = 0
        self._sync_ns = 0
        wsw_istore(&self._closed, 0)

    def __dealloc__(self):
        self._release_mappings()
        if self._locks_ready:
            pthread_mutex_destroy(&self._leader)
            pthread_mutex_destroy(&self._local)

    cdef void _release_mappings(self) noexcept:
        # GIL held; no thread of this process reads the mappings any more.
        if self._has_state:
            self._has_state = False
            self._base = NULL
            PyBuffer_Release(&self._state)
        if self._has_visible:
            self._has_visible = False
            PyBuffer_Release(&self._visible)

    # ------------------------------------------------------------------ state

    @property
    def next_lsn(self) -> int:
        """The LSN the next append gets, in any process."""
        return self.snapshot()[4]

    @property
    def durable_lsn(self) -> int:
        """The highest LSN an fdatasync made durable, in any process."""
        return wsw_load64(self._base, _DURABLE_AT) if not wsw_iload(&self._closed) else self._closed_durable

    @property
    def poison(self):
        """The error that poisoned the log's shared writers, or None."""
        if self._poison is not None or wsw_iload(&self._closed):
            return self._poison
        code = <int>wsw_load32(self._base, _POISON_AT)
        if not code:
            return None
        pid = wsw_load32(self._base, _POISON_PID_AT)
        return OSError(code, f"{os.strerror(code)} (in process {pid})")

    @property
    def syncs(self) -> int:
        """fdatasync calls this process made."""
        return self._syncs

    @property
    def sync_seconds(self) -> float:
        """Wall time this process spent in them."""
        return self._sync_ns * 1e-9

    def sync_latencies(self) -> list:
        """The latest fdatasync durations this process led, in ns (up to ``_sync_log.SYNC_WINDOW``), oldest first."""
        cdef uint64_t i, n
        cdef list out = []
        with nogil:
            pthread_mutex_lock(&self._leader)
        try:
            n = self._syncs if self._syncs < _WINDOW else _WINDOW
            for i in range(self._syncs - n, self._syncs):
                out.append(self._recent[i % _WINDOW])
        finally:
            pthread_mutex_unlock(&self._leader)
        return out

    def snapshot(self) -> tuple:
        """(seq, end, first_lsn, last_lsn, next_lsn) of the active segment, taken at one instant."""
        cdef uint64_t slot[_FIELDS]
        cdef int rc = _OK
        cdef bint closed = False
        cdef _Call call
        _new_call(&call)
        with nogil:
            pthread_mutex_lock(&self._local)
            if wsw_iload(&self._closed):
                closed = True
            else:
                rc = self._lock(&call, _LOCK_APPEND)
                if rc == _OK:
                    self._slot(slot)
                    self._unlock(_LOCK_APPEND)
            pthread_mutex_unlock(&self._local)
        if closed:
            return self._closed_snapshot
        if rc != _OK:
            _raise_kept(&call)
        return slot[_SEQ], slot[_END], slot[_FIRST], slot[_LAST], (<object>slot[_WRITTEN]) + 1

    cdef void _slot(self, uint64_t *slot) noexcept nogil:
        # APPEND held: the current state.
        cdef size_t at = _SLOT_AT[wsw_load32(self._base, _CURRENT_AT) & 1]
        cdef int i
        for i in range(_FIELDS):
            slot[i] = wsw_load64(self._base, at + 8 * i)

    cdef void _switch(self, const uint64_t *slot) noexcept nogil:
        # APPEND held: make ``slot`` the state: written whole into the other slot, then one store.
        cdef uint32_t other = 1 - (wsw_load32(self._base, _CURRENT_AT) & 1)
        cdef size_t at = _SLOT_AT[other]
        cdef int i
        for i in range(_FIELDS):
            wsw_store64(self._base, at + 8 * i, slot[i])
        wsw_store32(self._base, _CURRENT_AT, other)

    cdef inline bint _shared_poison(self) noexcept nogil:
        return wsw_load32(self._base, _POISON_AT) != 0

    cdef inline bint _poisoned(self) noexcept nogil:
        # ``self.poison is not None`` of the twin, while this handle is open.
        return self._poisoned_here or self._shared_poison()

    cdef int _lock(self, _Call *call, off_t at) noexcept nogil:
        cdef int code = wsw_lock(self._lock_fd, at)
        if code:
            return _errno_failed(call, code)
        return _OK

    cdef void _unlock(self, off_t at) noexcept nogil:
        # Only EBADF could fail it, and the descriptor stays open while this handle is.
        wsw_unlock(self._lock_fd, at)

    cdef object _result(self, _Call *call, int rc):
        # GIL held, nothing held: what a call returns (the LSN it wrote), or what it raises.
        if rc == _R_REFUSED:
            raise self._refusal()
        if rc != _OK:
            _raise_kept(call)
        return call.lsn

    # ------------------------------------------------------------------ writing

    def append(self, data: object) -> int:
        """Write one entry and return its LSN; under ``"always"`` once it is durable."""
        cdef object view
        cdef Py_buffer buf
        cdef unsigned char stack[_STACK_FRAME]
        cdef unsigned char *frame = stack
        cdef size_t n
        cdef int rc
        cdef _Call call
        if wsw_iload(&self._closed) or self._poisoned():
            raise self._refusal()   # the twin refuses a poisoned log before it looks at the entry
        view = entry_view(data)     # the codec's TypeError
        PyObject_GetBuffer(view, &buf, PyBUF_SIMPLE)
        try:
            if buf.len > <Py_ssize_t>_MAX_LEN:
                raise EntryTooLargeError(buf.len, MAX_ENTRY_SIZE)   # nothing written
            n = _HDR + <size_t>buf.len
            if n > _STACK_FRAME:
                frame = <unsigned char *>malloc(n)
                if frame == NULL:
                    raise MemoryError()
            self._wrapped = _io_wrapped()
            _new_call(&call)
            with nogil:
                pthread_mutex_lock(&self._local)
                rc = self._locked(&call)
                if rc == _OK:
                    rc = self._append_locked(&call, frame, <const unsigned char *>buf.buf, <size_t>buf.len, n)
                    self._unlock(_LOCK_APPEND)
                pthread_mutex_unlock(&self._local)
                if rc == _OK and self._mode == _MODE_ALWAYS:
                    rc = self._wait_durable(&call, call.lsn, True)
        finally:
            if frame != stack:
                free(frame)
            PyBuffer_Release(&buf)
        return self._result(&call, rc)

    cdef int _append_locked(self, _Call *call, unsigned char *frame, const unsigned char *src, size_t size,
                            size_t n) noexcept nogil:
        # APPEND held: the twin's _append_locked. _OK (call.lsn written) or _R_FAILED.
        cdef uint64_t slot[_FIELDS]
        cdef uint64_t lsn
        cdef int rc
        self._slot(slot)
        if slot[_WRITTEN] == UINT64_MAX:
            return self._lsns_exhausted(call, slot[_WRITTEN])
        lsn = slot[_WRITTEN] + 1
        if slot[_END] > 0 and slot[_END] + n > self._limit:
            rc = self._rotate(call, slot)
            if rc != _OK:
                return rc
        build_frame(frame, src, size, lsn)
        rc = self._write(call, slot, frame, n, lsn, lsn)
        if rc == _OK:
            call.lsn = lsn
        return rc

    cdef int _lsns_exhausted(self, _Call *call, uint64_t written) noexcept nogil:
        # No LSN is left; the codec says so, as it does for the twin.
        with gil:
            try:
                _frame.encode((<object>written) + 1, b"")
                _keep(call, SystemError(f"the codec accepted LSN {(<object>written) + 1}"))
            except BaseException as exc:
                _keep(call, exc)
        return _R_FAILED

    def append_batch(self, items: object) -> int:
        """Write every item with one write (never spanning two segments); the first LSN."""
        cdef uint64_t slot[_FIELDS]
        cdef int rc
        cdef uint64_t first = 0, last = 0
        cdef object frames = None
        cdef object first_lsn = None
        cdef const unsigned char *p = NULL
        cdef size_t n = 0
        cdef _Call call
        items = as_batch(items)
        if wsw_iload(&self._closed):
            raise self._refusal()
        self._wrapped = _io_wrapped()
        _new_call(&call)
        with nogil:
            pthread_mutex_lock(&self._local)
            rc = self._locked(&call)
            if rc == _OK:
                self._slot(slot)
                with gil:   # the codec checks every item and builds the frames with these LSNs
                    try:
                        first_lsn = (<object>slot[_WRITTEN]) + 1   # 2**64 when exhausted: the codec refuses it
                        frames = _frame.encode_batch(first_lsn, items)
                        p = <const unsigned char *>PyBytes_AS_STRING(frames)
                        n = <size_t>PyBytes_GET_SIZE(frames)
                        if n:
                            first = first_lsn
                            last = first + len(items) - 1
                    except BaseException as exc:
                        _keep(&call, exc)
                        rc = _R_FAILED
                if rc == _OK and n:
                    if slot[_END] > 0 and slot[_END] + n > self._limit:
                        rc = self._rotate(&call, slot)
                    if rc == _OK:
                        rc = self._write(&call, slot, p, n, first, last)
                self._unlock(_LOCK_APPEND)
            pthread_mutex_unlock(&self._local)
            if rc == _OK and n and self._mode == _MODE_ALWAYS:
                rc = self._wait_durable(&call, last, True)
        self._result(&call, rc)
        return first_lsn

    cdef int _locked(self, _Call *call) noexcept nogil:
        # _local held: take APPEND and repair the state (the twin's _locked before its step). _OK
        # with APPEND held; else APPEND is not held: _R_REFUSED (closed or poisoned) or _R_FAILED.
        cdef int rc
        if wsw_iload(&self._closed):
            return _R_REFUSED
        rc = self._lock(call, _LOCK_APPEND)
        if rc != _OK:
            return rc
        rc = self._enter(call)
        if rc != _OK:
            self._unlock(_LOCK_APPEND)
        return rc

    cdef int _enter(self, _Call *call) noexcept nogil:
        # APPEND held: repair what a dead holder left, follow a rotation another process made.
        # _R_REFUSED if the log is poisoned.
        cdef uint64_t slot[_FIELDS]
        cdef int rc = _OK
        if wsw_load32(self._base, _DIRTY_AT):
            rc = self._repair(call)
            if rc != _OK:
                return rc
        if self._shared_poison():
            return _R_REFUSED
        self._slot(slot)
        if slot[_SEQ] != self._seq:
            with gil:
                try:
                    self._follow(slot[_SEQ])
                except BaseException as exc:
                    _keep(call, exc)
                    rc = _R_FAILED
        return rc

    cdef int _follow(self, uint64_t seq) except -1:
        # GIL held, APPEND held: write to segment seq from now on.
        fd = _io.open_write(os.path.join(self._dir, segment_name(seq)))
        old, self._fd, self._seq = self._fd, fd, seq
        if old >= 0:
            _io.close(old)
        return 0

    cdef int _repair(self, _Call *call) noexcept nogil:
        # APPEND held, dirty: a holder died between setting and clearing it. Cut the active segment
        # back to the state's end and remove the empty next segment a rotation may have created:
        # nobody acknowledged those bytes, and no append may build on them.
        cdef uint64_t slot[_FIELDS]
        cdef int rc = _OK
        self._slot(slot)
        with gil:
            try:
                self._repair_files(slot[_SEQ], slot[_END])
            except BaseException as exc:
                _keep(call, exc)
                rc = _R_FAILED
        if rc == _OK:
            wsw_store32(self._base, _DIRTY_AT, 0)
        return rc

    cdef int _repair_files(self, uint64_t seq, uint64_t end) except -1:
        # GIL held: the files part of _repair, through walogs._io as the twin does (a rare path).
        path = os.path.join(self._dir, segment_name(seq))
        try:
            fd = _io.open_write(path)
            try:
                _io.ftruncate(fd, end)
            finally:
                _io.close(fd)
            _io.unlink_if_empty(os.path.join(self._dir, segment_name(seq + 1)))
        except OSError as exc:
            self._poison_all(exc)
            raise
        return 0

    cdef int _write(self, _Call *call, uint64_t *slot, const unsigned char *p, size_t n, uint64_t first,
                    uint64_t last) noexcept nogil:
        # APPEND held. One write per append or batch. Dirty before it, clean once the state says it.
        cdef uint64_t seq = slot[_SEQ], end = slot[_END]
        cdef uint64_t new[_FIELDS]
        cdef uint32_t unsynced, want
        cdef int rc
        self._mark_in_flight(seq, end, end + n)
        wsw_store32(self._base, _DIRTY_AT, 1)
        rc = self._pwrite_all(call, self._fd, p, n, end)
        if rc != _OK:
            if _kept_oserror(call):
                self._poison_kept(call)
                self._cut_to(self._fd, end)   # whole frames of a failed batch were never acknowledged
                wsw_store32(self._base, _DIRTY_AT, 0)
            return _R_FAILED   # anything else (an interrupt): dirty stays set, the next holder repairs
        memcpy(new, slot, sizeof(new))
        new[_END] = end + n
        new[_FIRST] = slot[_FIRST] if slot[_FIRST] else first
        new[_LAST] = last
        new[_WRITTEN] = last
        self._switch(new)
        wsw_store32(self._base, _DIRTY_AT, 0)
        if self._mode == _MODE_NONE:
            self._publish(seq, last, end + n)
        else:
            unsynced = wsw_load32_sc(self._base, _UNSYNCED_AT) + 1
            wsw_store32_sc(self._base, _UNSYNCED_AT, unsynced)
            want = wsw_load32_sc(self._base, _WANT_AT)
            if want and unsynced >= want:
                wsw_futex_wake(self._base, _UNSYNCED_AT, 1)
        return _OK

    cdef void _publish(self, uint64_t seq, uint64_t lsn, uint64_t end) noexcept nogil:
        # Readers may read up to here (a synced end, or under "none" a written one).
        if self._has_visible:
            build_visible(<unsigned char *>self._visible.buf, _VISIBLE_PUBLISHED, <uint32_t>seq, lsn, end)

    cdef void _notify(self) noexcept nogil:
        # Followers sleep on inotify and a store into the mapping raises no event: rewrite VISIBLE's
        # first byte, unchanged (Publisher.notify says why that is safe).
        if self._has_visible:
            pwrite(self._visible_fd, &_VISIBLE_MAGIC_0, 1, 0)

    cdef void _mark_in_flight(self, uint64_t seq, uint64_t start, uint64_t end) noexcept nogil:
        # A memory store into the page cache, no system call: it survives a kill of this process.
        if self._has_visible:
            build_in_flight(<unsigned char *>self._visible.buf + _IN_FLIGHT_AT, self._boot, seq, start, end)

    # ------------------------------------------------------------------ group commit

    def sync(self) -> None:
        """Make every entry written so far, by any process, durable."""
        cdef uint64_t slot[_FIELDS]
        cdef int rc
        cdef _Call call
        if wsw_iload(&self._closed):
            raise self._refusal()
        self._wrapped = _io_wrapped()
        _new_call(&call)
        with nogil:
            pthread_mutex_lock(&self._local)
            rc = self._locked(&call)
            if rc == _OK:
                self._slot(slot)
                self._unlock(_LOCK_APPEND)
            pthread_mutex_unlock(&self._local)
            if rc == _OK:
                rc = self._wait_durable(&call, slot[_WRITTEN], False)
        self._result(&call, rc)

    cdef int _wait_durable(self, _Call *call, uint64_t lsn, bint gather) noexcept nogil:
        # Nothing held. _OK once lsn is durable; _R_REFUSED if the log was poisoned first (or this
        # handle closed); _R_FAILED if the sync this thread led failed.
        cdef int rc
        wsw_iadd(&self._users, 1)   # before looking at _closed: close waits for it to drop
        rc = self._wait_durable_counted(call, lsn, gather)
        wsw_iadd(&self._users, -1)
        return rc

    cdef int _wait_durable_counted(self, _Call *call, uint64_t lsn, bint gather) noexcept nogil:
        cdef uint32_t ends
        cdef int taken, rc
        while True:
            if wsw_iload(&self._closed):   # a close in another thread: the mappings are going
                return _OK if self._closed_durable >= lsn else _R_REFUSED
            if wsw_load64(self._base, _DURABLE_AT) >= lsn:
                return _OK
            if self._poisoned():
                return _R_REFUSED
            ends = wsw_load32(self._base, _SYNC_ENDS_AT)   # before trying SYNC: a sync ending after this wakes the sleep below
            if pthread_mutex_trylock(&self._leader) == 0:
                if wsw_load64(self._base, _DURABLE_AT) >= lsn:
                    pthread_mutex_unlock(&self._leader)
                    return _OK
                taken = wsw_try_lock(self._lock_fd, _LOCK_SYNC)
                if taken < 0:
                    pthread_mutex_unlock(&self._leader)
                    return _errno_failed(call, -taken)
                if taken:
                    rc = _OK
                    if wsw_load64(self._base, _DURABLE_AT) < lsn:
                        rc = self._lead(call, gather)
                    wsw_store32(self._base, _SYNC_ENDS_AT, wsw_load32(self._base, _SYNC_ENDS_AT) + 1)
                    self._unlock(_LOCK_SYNC)
                    wsw_futex_wake(self._base, _SYNC_ENDS_AT, 1 << 30)
                    pthread_mutex_unlock(&self._leader)
                    if rc != _OK:
                        return rc
                    continue
                pthread_mutex_unlock(&self._leader)
            wsw_futex_wait(self._base, _SYNC_ENDS_AT, ends, _WAIT_GUARD_NS)

    cdef void _gather(self) noexcept nogil:
        # SYNC held: sleep until as many appends as the last sync covered are written again, or
        # as long as that sync took (at most 1 ms). Woken by the appender that reaches the count.
        cdef uint32_t want = wsw_load32(self._base, _GATHER_AT)
        cdef int64_t last_ns = <int64_t>wsw_load64(self._base, _GATHER_AT + 8)
        cdef int64_t deadline, left
        cdef uint32_t unsynced
        if want <= 1:
            return
        deadline = wsw_now_ns() + (last_ns if last_ns < _GATHER_MAX_NS else _GATHER_MAX_NS)
        wsw_store32_sc(self._base, _WANT_AT, want)
        while True:
            unsynced = wsw_load32_sc(self._base, _UNSYNCED_AT)
            left = deadline - wsw_now_ns()
            if unsynced >= want or left <= 0 or self._poisoned():
                break
            wsw_futex_wait(self._base, _UNSYNCED_AT, unsynced, left)
        wsw_store32_sc(self._base, _WANT_AT, 0)

    cdef int _lead(self, _Call *call, bint gather) noexcept nogil:
        # _leader and SYNC held: one fdatasync for everything written so far, by any process.
        # _OK (also when poisoned meanwhile: the caller's loop says so) or _R_FAILED.
        cdef uint64_t slot[_FIELDS]
        cdef uint64_t seq, end, target
        cdef uint32_t calls = 0
        cdef int64_t started, took
        cdef int rc
        if gather:
            self._gather()
        pthread_mutex_lock(&self._local)
        rc = self._locked(call)
        if rc == _OK:   # the twin's _take_target: what the sync covers, and how many appends wrote it
            self._slot(slot)
            calls = wsw_load32_sc(self._base, _UNSYNCED_AT)
            wsw_store32_sc(self._base, _UNSYNCED_AT, 0)
            self._unlock(_LOCK_APPEND)
        pthread_mutex_unlock(&self._local)
        if rc == _R_REFUSED:
            return _OK
        if rc != _OK:
            return rc
        seq, end, target = slot[_SEQ], slot[_END], slot[_WRITTEN]
        if target <= wsw_load64(self._base, _DURABLE_AT):
            return _OK
        if seq != self._sync_seq:
            rc = self._open_for_sync(call, seq)
            if rc == _R_GONE:
                return _OK   # checkpointed: a rotation synced it and raised the durable LSN first
            if rc != _OK:
                return rc
        started = wsw_now_ns()
        rc = self._fdatasync(call, self._sync_fd)
        if rc != _OK:
            if _kept_oserror(call):
                pthread_mutex_lock(&self._local)
                if self._lock(call, _LOCK_APPEND) == _OK:
                    self._poison_kept(call)
                    self._truncate_to_synced()
                    self._unlock(_LOCK_APPEND)
                pthread_mutex_unlock(&self._local)
            return _R_FAILED
        took = wsw_now_ns() - started
        self._recent[self._syncs % _WINDOW] = took
        self._syncs += 1
        self._sync_ns += took
        if took > _SLOW_SYNC_NS:
            with gil:
                _sync_log.slow_sync(self._sync_fd, took * 1e-9)
        if gather:
            wsw_store32(self._base, _GATHER_AT, calls if calls else 1)
            wsw_store32(self._base, _GATHER_AT + 4, 0)
            wsw_store64(self._base, _GATHER_AT + 8, <uint64_t>took)
        pthread_mutex_lock(&self._local)
        rc = self._lock(call, _LOCK_APPEND)
        if rc == _OK:
            self._mark_durable(target, seq, end)
            self._unlock(_LOCK_APPEND)
        pthread_mutex_unlock(&self._local)
        return rc

    cdef int _open_for_sync(self, _Call *call, uint64_t seq) noexcept nogil:
        # _leader held: a descriptor of segment seq to fdatasync. _OK, _R_GONE or _R_FAILED.
        cdef int rc = _OK
        with gil:
            try:
                fd = _io.open_write(os.path.join(self._dir, segment_name(seq)))
                old, self._sync_fd, self._sync_seq = self._sync_fd, fd, seq
                if old >= 0:
                    _io.close(old)
            except FileNotFoundError:
                rc = _R_GONE
            except BaseException as exc:
                _keep(call, exc)
                rc = _R_FAILED
        return rc

    cdef void _mark_durable(self, uint64_t lsn, uint64_t seq, uint64_t end) noexcept nogil:
        # APPEND held: an fdatasync of segment seq up to end made lsn durable.
        cdef uint64_t slot[_FIELDS]
        if self._shared_poison():
            return
        self._slot(slot)
        if slot[_SEQ] == seq and lsn > slot[_SYNCED_LSN]:
            slot[_SYNCED_LSN], slot[_SYNCED_SEQ], slot[_SYNCED_END] = lsn, seq, end
            self._switch(slot)
        if lsn > wsw_load64(self._base, _DURABLE_AT):
            wsw_store64(self._base, _DURABLE_AT, lsn)
            if self._mode != _MODE_NONE:   # under "none" the written end is published already
                self._publish(seq, lsn, end)
                self._notify()

    # ------------------------------------------------------------------ rotation

    def rotate(self) -> None:
        """Finish the active segment and continue in a new one; nothing to do when it is empty."""
        cdef uint64_t slot[_FIELDS]
        cdef int rc
        cdef _Call call
        if wsw_iload(&self._closed):
            raise self._refusal()
        self._wrapped = _io_wrapped()
        _new_call(&call)
        with nogil:
            pthread_mutex_lock(&self._local)
            rc = self._locked(&call)
            if rc == _OK:
                self._slot(slot)
                if slot[_END]:
                    rc = self._rotate(&call, slot)
                self._unlock(_LOCK_APPEND)
            pthread_mutex_unlock(&self._local)
        self._result(&call, rc)

    cdef int _rotate(self, _Call *call, uint64_t *slot) noexcept nogil:
        # APPEND held, the active segment not empty: sync it, create the next one and switch to it;
        # on _OK ``slot`` is the new state. An exception before the switch leaves the old segment
        # active (dirty stays set if a new file may be left: the next holder removes it); after it
        # the rotation is complete.
        cdef uint64_t seq = slot[_SEQ], end = slot[_END], written = slot[_WRITTEN]
        cdef uint64_t first = slot[_FIRST], last = slot[_LAST]
        cdef int rc, new_fd = -1, old_fd
        rc = self._fdatasync(call, self._fd)
        if rc != _OK:
            if _kept_oserror(call):
                self._poison_kept(call)
                self._truncate_to_synced()
            return _R_FAILED
        self._mark_durable(written, seq, end)
        wsw_store32(self._base, _UNSYNCED_AT, 0)   # the gather counts appends a leader's sync will cover: none now
        wsw_store32(self._base, _DIRTY_AT, 1)
        with gil:
            try:
                new_fd = self._new_segment(seq + 1)   # created durably before its first frame
            except OSError as exc:
                _keep(call, exc)
                self._poison_all(exc)
                rc = _R_FAILED
            except BaseException as exc:
                _keep(call, exc)
                rc = _R_FAILED
        if rc != _OK:
            return rc
        slot[_SEQ], slot[_END], slot[_FIRST], slot[_LAST] = seq + 1, 0, 0, 0
        slot[_WRITTEN], slot[_SYNCED_LSN], slot[_SYNCED_SEQ], slot[_SYNCED_END] = written, written, seq + 1, 0
        self._switch(slot)
        wsw_store32(self._base, _DIRTY_AT, 0)
        old_fd, self._fd, self._seq = self._fd, new_fd, seq + 1
        with gil:
            try:
                self._completed(old_fd, seq, end, first, last)
            except OSError as exc:
                _keep(call, exc)
                self._poison_all(exc)
                rc = _R_FAILED
            except BaseException as exc:
                _keep(call, exc)
                rc = _R_FAILED
        return rc

    # ------------------------------------------------------------------ failures

    cdef int _poison_all(self, object exc) except -1:
        # GIL held, APPEND held (or the log is being closed): poison every process of the log.
        if self._poison is None:
            self._poison = exc
            self._poisoned_here = True
        if not self._shared_poison():
            wsw_store32(self._base, _POISON_PID_AT, <uint32_t>getpid())
            wsw_store32(self._base, _POISON_AT, <uint32_t>(<int>(exc.errno or 5)))
        return 0

    cdef void _poison_kept(self, _Call *call) noexcept nogil:
        # APPEND held: _poison_all with the OSError the call kept.
        with gil:
            try:
                self._poison_all(<object>call.exc)
            except BaseException:   # no errno attribute to read: poisoned all the same
                if not self._shared_poison():
                    wsw_store32(self._base, _POISON_PID_AT, <uint32_t>getpid())
                    wsw_store32(self._base, _POISON_AT, EIO)

    cdef void _truncate_to_synced(self) noexcept nogil:
        # APPEND held, after a failed sync: cut the active segment back to its last successful
        # sync (Linux may have dropped the pages that failed), never syncing again.
        cdef uint64_t slot[_FIELDS]
        cdef uint64_t new[_FIELDS]
        cdef uint64_t end
        cdef int fd
        self._slot(slot)
        end = slot[_SYNCED_END] if slot[_SYNCED_SEQ] == slot[_SEQ] else 0
        cdef bint cut
        fd = self._fd if self._seq == slot[_SEQ] else -1
        if fd < 0:  # this process has not written since another rotated: open the active segment
            with gil:
                try:
                    fd = _io.open_write(os.path.join(self._dir, segment_name(slot[_SEQ])))
                except BaseException:
                    fd = -1
            if fd < 0:
                return  # poisoned either way; recovery at reopen judges what is left
            cut = self._cut_to(fd, end)
            with gil:
                try:
                    _io.close(fd)
                except BaseException:
                    pass
        else:
            cut = self._cut_to(fd, end)
        if not cut:
            return
        memcpy(new, slot, sizeof(new))
        new[_END] = end
        new[_FIRST] = slot[_FIRST] if end else 0
        new[_LAST] = slot[_SYNCED_LSN] if end else 0
        self._switch(new)
        if self._mode == _MODE_NONE:
            self._publish(slot[_SEQ], slot[_SYNCED_LSN], end)

    cdef bint _cut_to(self, int fd, uint64_t length) noexcept nogil:
        # Clean-up after a failure: its own error is dropped, the first one is what raises.
        cdef _Call scratch
        _new_call(&scratch)
        cdef bint done = self._ftruncate(&scratch, fd, length) == _OK
        _drop_kept(&scratch)
        return done

    def poison_with(self, exc: BaseException) -> None:
        """Refuse every later write in every process (the host's own I/O failed)."""
        cdef int rc = _OK
        cdef bint closed = False
        cdef _Call call
        _new_call(&call)
        with nogil:
            pthread_mutex_lock(&self._local)
            if wsw_iload(&self._closed):
                closed = True
            else:
                rc = self._lock(&call, _LOCK_APPEND)
                if rc == _OK:
                    with gil:
                        try:
                            self._poison_all(exc if isinstance(exc, OSError) else OSError(5, str(exc)))
                        except BaseException as error:
                            _keep(&call, error)
                            rc = _R_FAILED
                    self._unlock(_LOCK_APPEND)
                if rc == _OK:
                    with gil:
                        self._poison = exc
                        self._poisoned_here = True
            pthread_mutex_unlock(&self._local)
        if not closed and rc != _OK:
            _raise_kept(&call)

    # ------------------------------------------------------------------ system calls
    # Each returns _OK, or _R_FAILED with the exception kept in call.exc (the errno's OSError,
    # or what a wrapped _io function raised).

    cdef int _pwrite_all(self, _Call *call, int fd, const unsigned char *p, size_t n,
                         uint64_t offset) noexcept nogil:
        cdef ssize_t done
        if self._wrapped:
            with gil:
                return _call_io_write(call, fd, p, n, offset)
        while n:
            done = pwrite(fd, p, n, <off_t>offset)
            if done < 0:
                if errno == EINTR:
                    continue
                return _errno_failed(call, errno)
            if done == 0:
                return _errno_failed(call, EIO)
            p += done
            n -= <size_t>done
            offset += <uint64_t>done
        return _OK

    cdef int _fdatasync(self, _Call *call, int fd) noexcept nogil:
        if self._wrapped:
            with gil:
                return _call_io(call, _io.fdatasync, (fd,))
        while fdatasync(fd) != 0:
            if errno != EINTR:
                return _errno_failed(call, errno)
        return _OK

    cdef int _ftruncate(self, _Call *call, int fd, uint64_t length) noexcept nogil:
        if self._wrapped:
            with gil:
                return _call_io(call, _io.ftruncate, (fd, length))
        while ftruncate(fd, <off_t>length) != 0:
            if errno != EINTR:
                return _errno_failed(call, errno)
        return _OK

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Sync what this process wrote (unless poisoned), refuse every later call, close descriptors.

        The other processes go on. In a forked child it only closes this
        process's descriptors. Idempotent; raises the last sync's failure
        after everything else is done.
        """
        cdef uint64_t slot[_FIELDS]
        cdef int rc = _OK
        cdef bint closing = False
        cdef _Call call
        failed = None
        if not wsw_iload(&self._closed) and not self._in_child:
            if self.poison is None:
                self._wrapped = _io_wrapped()
                _new_call(&call)
                with nogil:
                    pthread_mutex_lock(&self._local)
                    rc = self._locked(&call)
                    if rc == _OK:
                        self._slot(slot)
                        self._unlock(_LOCK_APPEND)
                    pthread_mutex_unlock(&self._local)
                    if rc == _OK:
                        rc = self._wait_durable(&call, slot[_WRITTEN], True)
                if rc == _R_FAILED:
                    try:
                        _raise_kept(&call)
                    except BaseException as exc:
                        failed = exc
        with nogil:
            pthread_mutex_lock(&self._leader)
            pthread_mutex_lock(&self._local)
            if not wsw_iload(&self._closed):
                self._slot(slot)   # the state as this handle last saw it (calls after close are refused anyway)
                self._closed_durable = wsw_load64(self._base, _DURABLE_AT)
                wsw_istore(&self._closed, 1)
                closing = True
            pthread_mutex_unlock(&self._local)
            pthread_mutex_unlock(&self._leader)
            if closing:
                # Threads of this process in a durable wait see _closed and leave; wake them.
                wsw_futex_wake(self._base, _SYNC_ENDS_AT, 1 << 30)
                while wsw_iload(&self._users):
                    wsw_pause_ns(100000)
        if closing:
            self._closed_snapshot = (slot[_SEQ], slot[_END], slot[_FIRST], slot[_LAST], (<object>slot[_WRITTEN]) + 1)
            self._release_mappings()
        fds = [fd for fd in (self._fd, self._sync_fd) if fd >= 0]
        self._fd = self._sync_fd = -1
        for fd in fds:
            _io.close(fd)
        if failed is not None:
            raise failed

    def drop_in_child(self) -> None:
        """In a process forked after open: refuse every call, touch nothing shared."""
        self._in_child = True
        self._init_locks()   # a parent thread may have held them at the fork; only this thread runs here
        self._closed_snapshot = (0, 0, 0, 0, 1)
        self._closed_durable = 0
        self._users = 0
        wsw_istore(&self._closed, 1)
        self._release_mappings()
