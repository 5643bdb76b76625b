# cython: language_level=3, embedsignature=True
# cython: binding=True, cdivision=True, annotation_typing=False, autotestdict=False
"""The active segment's writer in C; ``_writer_py`` is the same algorithm in Python.

A :class:`SegmentWriter` owns what every append touches: the descriptor of
the active segment, its end offset and LSNs, the durable point, group
commit, rotation to the next segment, publishing the visible end to readers,
and closing. Its whole surface is ``append``, ``append_batch``, ``sync``,
``rotate``, ``close``, ``drop_in_child``, ``poison_with``, ``snapshot`` and
five read-only counters. A refused call raises. The host (``Wal``) gives it
three callbacks:

* ``new_segment(seq) -> fd``: create segment file ``seq`` so that it exists
  durably, and return its descriptor;
* ``completed(fd, seq, end, first_lsn, last_lsn)``: segment ``seq`` is
  complete (synced, its successor active): close ``fd``, list it, record
  how far the log has come;
* ``refusal() -> exception``: the error for a call the writer refuses
  (closed, poisoned, or in a forked child), built in that one place.

How a durable append goes (``sync="always"``):

1. With the GIL: check the entry (the codec's TypeError and
   EntryTooLargeError) and pin its buffer.
2. Without it, under the mutex: wait while a rotation or close holds the
   writer; rotate if the frame does not fit a non-empty segment (below);
   take the next LSN, build the frame and ``pwrite`` it: one write, nothing
   kept in user space.
3. Wait until an fdatasync covers it. The first thread to find no sync
   running leads one; if the last sync covered several appends, the leader
   first *gathers*: it waits until as many appends are written again, or at
   most as long as the last sync took (capped at 1 ms), so one sync covers
   every thread instead of the threads splitting into two cohorts that
   alternate. With one thread the last sync covered one append, so nothing
   waits. The sync runs with the mutex released; when it ends the leader
   records it, publishes the new visible end and wakes every waiter.

Rotation, by size or by ``rotate()``, keeps the mutex from start to end
(except while it waits for a running sync to end, with the writer marked
paused so that nothing else writes or syncs), so no other append can take
the fresh segment before the append that needed it: it fdatasyncs the old
segment (a failure poisons the writer), calls ``new_segment``, switches to
the new descriptor, calls ``completed``, and the append then writes its
entry. An OSError from a callback poisons the writer like a failed system
call of its own; any other exception (Ctrl-C's KeyboardInterrupt) only
propagates: before the switch the old segment stays active, after it the
rotation is complete, and the next append works.

Failures: a failed ``pwrite`` or fdatasync poisons the writer: no later
append is acknowledged until the log is opened again, and a failed sync is
never retried. The writer cuts what was not synced and wakes every waiter;
the failing call raises the OSError, the others raise ``refusal()``.

The fault seam: while a test has wrapped ``walogs._io.pwrite_all``,
``fdatasync`` or ``ftruncate`` (crash images, injected EIO), this writer
makes those calls through ``walogs._io`` with the GIL, so the crash and
fault suites drive this code too. Otherwise it calls libc directly.

Lock order: the mutex is only ever waited for without the GIL. A thread
holding the mutex may take the GIL (the callbacks, the wrapped calls above,
building a batch, error objects); a thread holding the GIL never waits for
the mutex. So the two cannot deadlock. ``refusal()`` is called with the
mutex released; ``new_segment`` and ``completed`` with it held, so they must
not call this writer, and whatever lock they take must never be held by a
thread waiting for this mutex.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.errno cimport EINTR, EIO, errno
from libc.stdint cimport UINT64_MAX, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, strerror
from posix.stat cimport fstat, struct_stat
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.types cimport off_t

from walogs._frame cimport build_frame, build_in_flight, build_visible, entry_view

from walogs import _frame, _io, _sync_log
from walogs._format import FRAME_HEADER_SIZE, IN_FLIGHT_OFFSET, MAX_ENTRY_SIZE
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

cdef extern from "pthread.h" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    ctypedef struct pthread_condattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_condattr_init(pthread_condattr_t *a)
    int pthread_condattr_setclock(pthread_condattr_t *a, int clock)
    int pthread_condattr_destroy(pthread_condattr_t *a)
    int pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *a)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const timespec *until)
    int pthread_cond_signal(pthread_cond_t *c)
    int pthread_cond_broadcast(pthread_cond_t *c)


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
    # Outcomes of the C steps (mutex held); the public methods turn them into a result or a raise.
    _OK = 0
    _R_REFUSED = -1                 # closed, poisoned or forked: raise refusal()
    _R_FAILED = -2                  # the call's _Call.exc holds the exception to raise

cdef int64_t _GATHER_MAX_NS = 1000000    # a gathering leader waits at most 1 ms
cdef char _VISIBLE_MAGIC_0 = VISIBLE_MAGIC[0]
cdef int64_t _SLOW_SYNC_NS = <int64_t>(_sync_log.SLOW_SYNC_SECONDS * 1e9)
if _sync_log.SYNC_WINDOW != _WINDOW:
    raise ImportError(f"{__name__} keeps {_WINDOW} sync durations, _sync_log.SYNC_WINDOW says {_sync_log.SYNC_WINDOW}")
cdef uint32_t _MAX_LEN = MAX_ENTRY_SIZE

if FRAME_HEADER_SIZE != _HDR:
    raise ImportError(f"walogs._writer is built for {_HDR}-byte frame headers, not {FRAME_HEADER_SIZE}")
if PUBLISHED != _VISIBLE_PUBLISHED:
    raise ImportError(f"walogs._writer publishes state {_VISIBLE_PUBLISHED}, _visible says {PUBLISHED}")
if (FILE_SIZE, IN_FLIGHT_OFFSET) != (_VISIBLE_FILE, _IN_FLIGHT_AT):
    raise ImportError(f"walogs._writer maps a {_VISIBLE_FILE}-byte VISIBLE with the in-flight record at "
                      f"{_IN_FLIGHT_AT}, _visible says {FILE_SIZE} and {IN_FLIGHT_OFFSET}")



cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


include "_calls.pxi"


cdef class SegmentWriter:
    """Appends frames to the active segment, makes them durable, rotates and closes it.

    Thread-safe. Every call that cannot be done raises: ``refusal()`` once the
    writer is closed, poisoned or in a forked child; the OSError of a failed
    write or sync (which poisons it); the codec's errors for a bad entry.
    """

    cdef pthread_mutex_t _mu
    cdef pthread_cond_t _changed    # broadcast: a sync ended, a pause ended, closed or poisoned
    cdef pthread_cond_t _gathered   # signalled: a gathering leader has the appends it waits for
    cdef bint _locks_ready
    cdef int _fd                    # -1 once close() closed it
    cdef uint64_t _seq, _end, _first, _last, _durable, _limit
    cdef uint64_t _written        # the last LSN written (next - 1): 2**64-1 means no LSN is left (I9)
    cdef uint64_t _synced_lsn, _synced_seq, _synced_end   # the last successful fdatasync (P2 cut)
    cdef int _mode
    cdef bint _syncing              # a leader's fdatasync runs (the mutex released around it)
    cdef bint _paused               # a rotation or close waits for that sync to end: no write, no new leader
    cdef bint _closed, _poisoned, _gathering, _wrapped
    cdef uint64_t _unsynced_calls   # appends written since the running/last sync took its target
    cdef uint64_t _last_batch       # appends the last group-commit sync covered
    cdef uint64_t _want             # appends a gathering leader waits for
    cdef int64_t _last_sync_ns
    cdef uint64_t _syncs
    cdef int64_t _sync_ns
    cdef int64_t _recent[_WINDOW]   # the latest group-commit fdatasync durations (a ring)
    cdef Py_buffer _visible
    cdef bint _has_visible
    cdef int _visible_fd            # VISIBLE's descriptor, the publisher's: written to wake followers
    cdef unsigned char _boot[_BOOT_ID]   # this boot's id, in every in-flight record
    cdef object _poison
    cdef object _new_segment, _completed, _refusal

    def __cinit__(self):
        self._fd = -1
        self._init_locks()
        self._locks_ready = True

    cdef void _init_locks(self) noexcept:
        cdef pthread_condattr_t attr
        pthread_mutex_init(&self._mu, NULL)
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)   # gather deadlines are monotonic
        pthread_cond_init(&self._changed, &attr)
        pthread_cond_init(&self._gathered, &attr)
        pthread_condattr_destroy(&attr)

    def __init__(self, fd: int, seq: int, end: int, first_lsn: int, last_lsn: int, next_lsn: int,
                 limit: int, mode: str, publisher: object, *, new_segment: object, completed: object,
                 refusal: object) -> None:
        """Take over segment ``seq`` (descriptor ``fd``), which recovery left synced up to ``end``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._mode = MODES.index(mode)
        self._fd = fd
        self._seq, self._end, self._first, self._last = seq, end, first_lsn, last_lsn
        self._written = next_lsn - 1
        self._durable = next_lsn - 1
        self._limit = min(limit, (1 << 64) - 1)
        self._synced_lsn, self._synced_seq, self._synced_end = self._durable, seq, end
        self._last_batch = 1
        self._new_segment, self._completed, self._refusal = new_segment, completed, refusal
        boot = bytes(publisher.boot_id)
        if len(boot) != _BOOT_ID:
            raise ValueError(f"a boot id has {_BOOT_ID} bytes, not {len(boot)}")
        memcpy(self._boot, PyBytes_AS_STRING(boot), _BOOT_ID)
        PyObject_GetBuffer(publisher.buffer(), &self._visible, PyBUF_WRITABLE)
        self._has_visible = True
        self._visible_fd = publisher.fd
        if self._visible.len < _VISIBLE_FILE:
            raise ValueError(f"the VISIBLE mapping has {self._visible.len} bytes, not {_VISIBLE_FILE}")
        self._publish(self._durable, seq, end)
        self._mark_in_flight(seq, end, end)

    def __dealloc__(self):
        if self._has_visible:
            PyBuffer_Release(&self._visible)
            self._has_visible = False
        if self._locks_ready:
            pthread_cond_destroy(&self._gathered)
            pthread_cond_destroy(&self._changed)
            pthread_mutex_destroy(&self._mu)

    # ------------------------------------------------------------------ state

    @property
    def next_lsn(self) -> int:
        """The LSN the next append gets."""
        return (<object>self._written) + 1

    @property
    def durable_lsn(self) -> int:
        """The highest LSN an fdatasync made durable."""
        return self._durable

    @property
    def poison(self):
        """The error that poisoned the writer, or None."""
        return self._poison

    @property
    def syncs(self) -> int:
        """fdatasync calls the group commit made (appends' and sync()'s; benchmarks report it)."""
        return self._syncs

    @property
    def sync_seconds(self) -> float:
        """Wall time spent in those fdatasync calls."""
        return self._sync_ns * 1e-9

    def sync_latencies(self) -> list:
        """The latest group-commit fdatasync durations in ns (up to ``_sync_log.SYNC_WINDOW``), oldest first."""
        cdef uint64_t i, n
        cdef list out = []
        with nogil:
            pthread_mutex_lock(&self._mu)
        try:
            n = self._syncs if self._syncs < _WINDOW else _WINDOW
            for i in range(self._syncs - n, self._syncs):
                out.append(self._recent[i % _WINDOW])
        finally:
            pthread_mutex_unlock(&self._mu)
        return out

    def snapshot(self) -> tuple:
        """(seq, end, first_lsn, last_lsn, next_lsn) of the active segment, taken at one instant."""
        cdef uint64_t seq, end, first, last, written
        with nogil:
            pthread_mutex_lock(&self._mu)
            seq, end, first, last, written = self._seq, self._end, self._first, self._last, self._written
            pthread_mutex_unlock(&self._mu)
        return seq, end, first, last, (<object>written) + 1

    cdef object _result(self, _Call *call, int rc):
        # GIL held, mutex released: what a call returns (the LSN it wrote), or what it raises.
        if rc == _R_REFUSED:
            raise self._refusal()
        if rc != _OK:
            _raise_kept(call)
        return call.lsn

    # ------------------------------------------------------------------ writing

    def append(self, data: object) -> int:
        """Write one entry and return its LSN; under ``"always"`` once it is durable.

        Rotates first if its frame does not fit the active segment and that
        segment is not empty.
        """
        cdef object view
        cdef Py_buffer buf
        cdef unsigned char stack[_STACK_FRAME]
        cdef unsigned char *frame = stack
        cdef size_t n
        cdef int rc
        cdef _Call call
        if self._closed or self._poisoned:
            raise self._refusal()   # before looking at the entry, as the twin does
        view = entry_view(data)     # the codec's TypeError
        PyObject_GetBuffer(view, &buf, PyBUF_SIMPLE)
        try:
            if buf.len > <Py_ssize_t>_MAX_LEN:
                raise EntryTooLargeError(buf.len, MAX_ENTRY_SIZE)   # I7: nothing written
            n = _HDR + <size_t>buf.len
            if n > _STACK_FRAME:
                frame = <unsigned char *>malloc(n)
                if frame == NULL:
                    raise MemoryError()
            self._wrapped = _io_wrapped()
            _new_call(&call)
            with nogil:
                pthread_mutex_lock(&self._mu)
                rc = self._append_locked(&call, frame, <const unsigned char *>buf.buf, <size_t>buf.len, n)
                pthread_mutex_unlock(&self._mu)
        finally:
            if frame != stack:
                free(frame)
            PyBuffer_Release(&buf)
        return self._result(&call, rc)

    cdef int _append_locked(self, _Call *call, unsigned char *frame, const unsigned char *src, size_t size,
                            size_t n) noexcept nogil:
        # Mutex held. _OK (call.lsn written, and durable under "always"), _R_REFUSED or _R_FAILED.
        cdef uint64_t lsn
        cdef int rc
        if not self._wait_writable():
            return _R_REFUSED
        if self._written == UINT64_MAX:
            return self._lsns_exhausted(call)
        if self._end > 0 and self._end + n > self._limit:
            rc = self._rotate(call)
            if rc != _OK:
                return rc
        lsn = self._written + 1
        build_frame(frame, src, size, lsn)
        rc = self._write(call, frame, n, lsn, lsn)
        if rc != _OK:
            return rc
        call.lsn = lsn
        if self._mode == _MODE_ALWAYS:
            return self._wait_durable(call, lsn, True)
        return _OK

    cdef int _lsns_exhausted(self, _Call *call) noexcept nogil:
        # I9: no LSN is left; the codec says so, as it does for the twin.
        with gil:
            try:
                _frame.encode((<object>self._written) + 1, b"")
                _keep(call, SystemError(f"the codec accepted LSN {(<object>self._written) + 1}"))
            except BaseException as exc:
                _keep(call, exc)
        return _R_FAILED

    def append_batch(self, items: object) -> int:
        """Write every item with one write (a batch never spans two segments); the first LSN.

        Under ``"always"`` returns once they are durable. Checks every item
        before writing any; an empty batch writes nothing and returns the
        next LSN.
        """
        cdef int rc
        cdef uint64_t first = 0, last = 0
        cdef object frames = None
        cdef object first_lsn = None
        cdef const unsigned char *p = NULL
        cdef size_t n = 0
        cdef _Call call
        items = as_batch(items)
        if self._closed or self._poisoned:
            raise self._refusal()
        self._wrapped = _io_wrapped()
        _new_call(&call)
        with nogil:
            pthread_mutex_lock(&self._mu)
            rc = _OK if self._wait_writable() else _R_REFUSED
            if rc == _OK:
                with gil:   # the codec checks every item (I7) and builds the frames with these LSNs
                    try:
                        first_lsn = (<object>self._written) + 1   # 2**64 when exhausted: the codec refuses it
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
                if self._end > 0 and self._end + n > self._limit:
                    rc = self._rotate(&call)
                if rc == _OK:
                    rc = self._write(&call, p, n, first, last)
                if rc == _OK and self._mode == _MODE_ALWAYS:
                    rc = self._wait_durable(&call, last, True)
            pthread_mutex_unlock(&self._mu)
        self._result(&call, rc)
        return first_lsn

    def sync(self) -> None:
        """Make every written entry durable, leading or joining a group commit."""
        cdef int rc
        cdef _Call call
        self._wrapped = _io_wrapped()
        _new_call(&call)
        with nogil:
            pthread_mutex_lock(&self._mu)
            if self._closed or self._poisoned:
                rc = _R_REFUSED
            else:
                rc = self._wait_durable(&call, self._written, False)
            pthread_mutex_unlock(&self._mu)
        self._result(&call, rc)

    cdef bint _wait_writable(self) noexcept nogil:
        # Mutex held: wait out a pause (a rotation or close waiting for a sync);
        # False once closed or poisoned.
        while self._paused and not (self._closed or self._poisoned):
            pthread_cond_wait(&self._changed, &self._mu)
        return not (self._closed or self._poisoned)

    cdef int _write(self, _Call *call, const unsigned char *p, size_t n, uint64_t first,
                    uint64_t last) noexcept nogil:
        # Mutex held. P7: one write per append or batch, nothing kept in user space.
        # Before the write: if a kill cuts it short, recovery cuts all of it (_damage.killed_write_cut).
        self._mark_in_flight(self._seq, self._end, self._end + n)
        cdef int rc = self._pwrite_all(call, p, n, self._end)
        if rc != _OK:
            if self._fail(call, rc):
                # Whole frames of a failed batch that reached the file were never
                # acknowledged: cut them, so a reopen cannot keep half a batch.
                self._cut_to(self._end)
            return _R_FAILED
        self._end += n
        if not self._first:
            self._first = first
        self._last = last
        self._written = last
        if self._mode == _MODE_NONE:
            self._publish(last, self._seq, self._end)
        else:
            self._unsynced_calls += 1
            if self._gathering and self._unsynced_calls >= self._want:
                pthread_cond_signal(&self._gathered)
        return _OK

    # ------------------------------------------------------------------ group commit

    cdef int _wait_durable(self, _Call *call, uint64_t lsn, bint gather) noexcept nogil:
        # Mutex held. _OK once lsn is durable; _R_REFUSED if the writer was poisoned,
        # or closed before lsn was synced; _R_FAILED if the sync this thread led failed.
        cdef int rc
        cdef uint64_t synced = 0
        while self._durable < lsn:
            if self._poisoned or self._closed:
                return _R_REFUSED
            if self._syncing or self._paused:   # a leader's sync covers lsn, or fails; or a pause ends
                pthread_cond_wait(&self._changed, &self._mu)
                continue
            rc = self._lead(call, gather, &synced)
            if rc != _OK:
                return rc
            if synced >= lsn:
                return _OK   # its own sync covered it, even if another call poisoned the writer since
        return _OK

    cdef void _gather(self) noexcept nogil:
        # Mutex held, _syncing set. Wait until as many appends as the last sync covered
        # are written (or as long as that sync took, at most 1 ms).
        cdef int64_t wait_ns = self._last_sync_ns if self._last_sync_ns < _GATHER_MAX_NS else _GATHER_MAX_NS
        cdef int64_t deadline = _now_ns() + wait_ns
        cdef timespec until
        until.tv_sec = deadline // 1000000000
        until.tv_nsec = deadline % 1000000000
        self._want = self._last_batch
        self._gathering = True
        while (self._unsynced_calls < self._want and not (self._paused or self._closed or self._poisoned)
               and _now_ns() < deadline):
            pthread_cond_timedwait(&self._gathered, &self._mu, &until)
        self._gathering = False

    cdef int _lead(self, _Call *call, bint gather, uint64_t *synced) noexcept nogil:
        # Mutex held: one fdatasync for everything written so far, the mutex released
        # around it. _OK (*synced: the LSN it made durable), or _R_FAILED (poisoned if
        # the sync failed; a wrapped _io's other exceptions only propagate).
        cdef int fd, rc
        cdef uint64_t lsn, seq, end, calls
        cdef int64_t started
        self._syncing = True
        if gather and self._last_batch > 1:
            self._gather()
        fd, lsn, seq, end = self._fd, self._written, self._seq, self._end
        calls, self._unsynced_calls = self._unsynced_calls, 0
        pthread_mutex_unlock(&self._mu)
        started = _now_ns()
        rc = self._fdatasync(call, fd)
        pthread_mutex_lock(&self._mu)
        self._syncing = False
        if rc == _OK:
            self._last_sync_ns = _now_ns() - started
            self._recent[self._syncs % _WINDOW] = self._last_sync_ns
            self._syncs += 1
            self._sync_ns += self._last_sync_ns
            if self._last_sync_ns > _SLOW_SYNC_NS:
                with gil:
                    _sync_log.slow_sync(fd, self._last_sync_ns * 1e-9)
            # Recorded at once: a failing rotation's sync next must not cut these frames.
            self._synced_lsn, self._synced_seq, self._synced_end = lsn, seq, end
            synced[0] = lsn
            if lsn > self._durable and not self._poisoned:
                self._mark_durable(lsn, seq, end)
                if gather:
                    self._last_batch = calls if calls else 1
        elif self._fail(call, rc):
            self._truncate_to_synced()
        pthread_cond_broadcast(&self._changed)
        return _OK if rc == _OK else _R_FAILED

    cdef int _sync_locked(self, _Call *call) noexcept nogil:
        # Mutex held, paused, no sync running (rotation, close): fdatasync everything
        # written, mark it durable and wake its waiters. _OK or _R_FAILED (poisoned and cut).
        cdef int rc = self._fdatasync(call, self._fd)
        if rc != _OK:
            if self._fail(call, rc):
                self._truncate_to_synced()
            return _R_FAILED
        self._synced_lsn, self._synced_seq, self._synced_end = self._written, self._seq, self._end
        if self._written > self._durable:
            self._mark_durable(self._written, self._seq, self._end)
        pthread_cond_broadcast(&self._changed)
        return _OK

    cdef void _mark_durable(self, uint64_t lsn, uint64_t seq, uint64_t end) noexcept nogil:
        # Mutex held. Under "none" the written end is already published.
        self._durable = lsn
        if self._mode != _MODE_NONE:
            self._publish(lsn, seq, end)
            self._notify()

    cdef void _publish(self, uint64_t lsn, uint64_t seq, uint64_t end) noexcept nogil:
        # P4: readers may read up to here (a synced end, or under "none" a written one).
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

    # ------------------------------------------------------------------ rotation

    def rotate(self) -> None:
        """Finish the active segment and continue in a new one; nothing to do when it is empty."""
        cdef int rc
        cdef _Call call
        self._wrapped = _io_wrapped()
        _new_call(&call)
        with nogil:
            pthread_mutex_lock(&self._mu)
            rc = self._rotate(&call) if self._wait_writable() else _R_REFUSED
            pthread_mutex_unlock(&self._mu)
        self._result(&call, rc)

    cdef int _rotate(self, _Call *call) noexcept nogil:
        # Mutex held, writable. Paused while a running sync ends (its descriptor must stay
        # open, and nothing may write meanwhile); from then on the mutex is held to the end,
        # so the caller writes into the fresh segment before any other append can.
        cdef int rc
        self._paused = True
        pthread_cond_signal(&self._gathered)   # a gathering leader syncs now
        while self._syncing:
            pthread_cond_wait(&self._changed, &self._mu)
        rc = self._rotate_paused(call)
        self._paused = False
        pthread_cond_broadcast(&self._changed)
        return rc

    cdef int _rotate_paused(self, _Call *call) noexcept nogil:
        # Mutex held, paused, no sync running. An exception at any step (Ctrl-C, a signal
        # handler's) leaves a writer the next call can use: before the switch the old
        # segment stays active (the host removed what it created), after it the rotation
        # is complete. Only an OSError poisons (P2): an interrupt lost nothing.
        cdef int rc, new_fd = -1
        cdef int old_fd
        cdef bint cut
        cdef uint64_t old_seq, old_end, old_first, old_last
        if self._closed or self._poisoned:
            return _R_REFUSED   # the sync it waited for failed: never sync again (P2)
        if self._end == 0:
            return _OK
        rc = self._trim(call, &cut)   # a completed segment ends at its last frame; the sync next makes the cut durable
        if rc != _OK:
            return rc
        rc = self._sync_locked(call)   # P2 if it fails; else the old segment's entries are durable
        if rc != _OK:
            return rc
        with gil:   # I15: the host creates the next segment durably before its first frame
            try:
                new_fd = self._new_segment((<object>self._seq) + 1)
            except BaseException as exc:
                _keep(call, exc)
        if new_fd < 0:
            self._fail(call, _R_FAILED)
            return _R_FAILED
        old_fd, old_seq, old_end, old_first, old_last = self._fd, self._seq, self._end, self._first, self._last
        self._fd, self._seq, self._end, self._first, self._last = new_fd, old_seq + 1, 0, 0, 0
        self._synced_lsn, self._synced_seq, self._synced_end = self._written, old_seq + 1, 0
        with gil:
            rc = _call_io(call, self._completed, (old_fd, old_seq, old_end, old_first, old_last))
        if rc != _OK:
            self._fail(call, rc)
        return rc

    cdef int _trim(self, _Call *call, bint *cut) noexcept nogil:
        # Mutex held, paused, no sync running (rotation, close): cut the zeros of a segment
        # prepared with them past the last frame (docs/format.md); *cut says if it cut. The
        # caller syncs. _OK, or _R_FAILED (a failure poisons, P2).
        cdef struct_stat st
        cdef int rc
        cut[0] = False
        if fstat(self._fd, &st) != 0:
            rc = errno
        elif <uint64_t>st.st_size <= self._end:
            return _OK
        else:
            rc = self._ftruncate(call, self._end)
            cut[0] = rc == _OK
        if rc == _OK:
            return _OK
        self._fail(call, rc)
        return _R_FAILED

    # ------------------------------------------------------------------ failures

    cdef bint _fail(self, _Call *call, int rc) noexcept nogil:
        # Mutex held, after a system call or callback returned rc != _OK: call.exc is its
        # exception (made here from an errno). An OSError poisons the writer (P2: True,
        # the caller cuts a write's or sync's tail); anything else only propagates.
        cdef bint poisons = rc > 0   # a system call failed: poisoned even if no error object can be made
        with gil:
            try:
                if rc > 0:
                    _keep(call, OSError(rc, strerror(rc).decode("utf-8", "replace")))
                poisons = poisons or (call.exc != NULL and isinstance(<object>call.exc, OSError))
                if poisons and self._poison is None:
                    self._poison = <object>call.exc
            except BaseException as exc:   # MemoryError: raise that, still poisoned
                _keep(call, exc)
                if self._poison is None:
                    self._poison = exc
        if poisons:
            self._poisoned = True
            pthread_cond_broadcast(&self._changed)
            pthread_cond_signal(&self._gathered)
        return poisons

    cdef void _truncate_to_synced(self) noexcept nogil:
        # Mutex held. Cut the active segment back to its last successful sync (P2):
        # Linux marks the pages of a failed writeback clean, so what they held may
        # be on no disk while reads still return it; a reopen would call those
        # frames durable. They were never acknowledged. Not synced again.
        cdef uint64_t end = self._synced_end if self._synced_seq == self._seq else 0
        if not self._cut_to(end):
            return   # poisoned either way; recovery at reopen judges what is left
        self._end = end
        self._last = self._synced_lsn if end else 0
        if not end:
            self._first = 0
        if self._mode == _MODE_NONE:   # it published the written end: readers must not read past the cut
            self._publish(self._synced_lsn, self._seq, end)

    cdef bint _cut_to(self, uint64_t length) noexcept nogil:
        # Clean-up after a failure: its own error is dropped, the first one is what raises.
        cdef _Call scratch
        _new_call(&scratch)
        cdef bint done = self._ftruncate(&scratch, length) == _OK
        _drop_kept(&scratch)
        return done

    def poison_with(self, exc: BaseException) -> None:
        """Refuse every later write (the host's own I/O failed); wake every waiter."""
        if self._poison is None:
            self._poison = exc
        with nogil:
            pthread_mutex_lock(&self._mu)
            self._poisoned = True
            pthread_cond_broadcast(&self._changed)
            pthread_cond_signal(&self._gathered)
            pthread_mutex_unlock(&self._mu)

    # ------------------------------------------------------------------ system calls
    # Each returns _OK, an errno (> 0), or _R_FAILED with the exception a wrapped
    # _io function raised kept in call.exc.

    cdef int _pwrite_all(self, _Call *call, const unsigned char *p, size_t n, uint64_t offset) noexcept nogil:
        cdef ssize_t done
        if self._wrapped:
            with gil:
                return _call_io_write(call, self._fd, p, n, offset)
        while n:
            done = pwrite(self._fd, p, n, <off_t>offset)
            if done < 0:
                if errno == EINTR:
                    continue
                return errno
            if done == 0:
                return EIO
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
                return errno
        return _OK

    cdef int _ftruncate(self, _Call *call, uint64_t length) noexcept nogil:
        if self._wrapped:
            with gil:
                return _call_io(call, _io.ftruncate, (self._fd, length))
        while ftruncate(self._fd, <off_t>length) != 0:
            if errno != EINTR:
                return errno
        return _OK

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Sync what waits, refuse every later call, wake every waiter, close the descriptor.

        Waits for a running rotation or sync to end first. Appends waiting
        for a group commit return durable, unless the writer is poisoned (a
        poisoned writer is never synced again). If that last sync fails it
        raises, after everything else is done. In a forked child it only
        closes the descriptor. Idempotent.
        """
        cdef int rc = _OK
        cdef int fd
        cdef bint had_visible = False
        cdef _Call call
        self._wrapped = _io_wrapped()
        _new_call(&call)
        with nogil:
            pthread_mutex_lock(&self._mu)
            rc = self._close_locked(&call, &fd, &had_visible)
            pthread_mutex_unlock(&self._mu)
        if had_visible:
            PyBuffer_Release(&self._visible)   # Publisher.close() may now unmap it
        try:
            if fd >= 0:
                _io.close(fd)
        finally:
            if rc != _OK:
                _raise_kept(&call)   # the failed sync, before a failed close

    cdef int _close_locked(self, _Call *call, int *fd, bint *had_visible) noexcept nogil:
        # Mutex held. Stops the writer for good and hands back its descriptor (*fd; -1:
        # closed already) and whether it still held the VISIBLE mapping. _OK, or
        # _R_FAILED if the last sync failed.
        cdef int rc = _OK
        cdef bint cut = False
        if self._fd >= 0 and not self._closed:
            while self._paused:   # a rotation waits for a sync: let it finish
                pthread_cond_wait(&self._changed, &self._mu)
            self._paused = True
            pthread_cond_signal(&self._gathered)
            while self._syncing:
                pthread_cond_wait(&self._changed, &self._mu)
            # Appends waiting on a group commit return durable; a clean close leaves the
            # segment ending at its last frame, durably.
            if not self._poisoned:
                rc = self._trim(call, &cut)
                if rc == _OK and (cut or self._durable < self._written):
                    rc = self._sync_locked(call)
            self._closed = True   # waiters wake to return or raise; no write or sync after this
            self._paused = False
            pthread_cond_broadcast(&self._changed)
            pthread_cond_signal(&self._gathered)
        fd[0], self._fd = self._fd, -1
        had_visible[0], self._has_visible = self._has_visible, False   # nothing publishes once closed
        return rc

    def drop_in_child(self) -> None:
        """In a process forked after open: refuse every call, touch nothing shared.

        The parent's threads may have held the writer's locks at the fork:
        this process gets fresh ones. ``close()`` then only closes this
        process's copy of the descriptor.
        """
        self._closed = True
        self._init_locks()   # only this thread runs here
        if self._has_visible:
            self._has_visible = False
            PyBuffer_Release(&self._visible)
