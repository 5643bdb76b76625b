# One owner for what both compiled writers (_writer.pyx, _shared_writer.pyx) share: the
# per-call record of an exception raised where no Python frame can raise it, and the test
# seam (a wrapped walogs._io function). Included by both, after their enum of outcomes
# (_OK, _R_FAILED), which the functions below return.

# The unwrapped _io functions: while _io holds these, system calls go straight to libc.
_REAL_IO = (_io.pwrite_all, _io.fdatasync, _io.ftruncate)


cdef struct _Call:
    # One call's outcome, on its own stack: what it wrote, and the exception it
    # raises (a new reference, or NULL). Never shared between threads.
    PyObject *exc
    uint64_t lsn


cdef inline void _new_call(_Call *call) noexcept nogil:
    call.exc = NULL
    call.lsn = 0


cdef void _keep(_Call *call, object exc) noexcept:
    # GIL held. The first exception of a call is the one it raises.
    if call.exc == NULL:
        Py_INCREF(exc)
        call.exc = <PyObject *>exc


cdef void _drop_kept(_Call *call) noexcept nogil:
    if call.exc != NULL:
        with gil:
            Py_XDECREF(call.exc)
        call.exc = NULL


cdef int _raise_kept(_Call *call) except -1:
    # GIL held: raise the exception a failed call kept (and release the reference).
    cdef object exc
    if call.exc == NULL:
        raise SystemError(f"{__name__}: a failed step kept no exception")
    exc = <object>call.exc
    Py_XDECREF(call.exc)
    call.exc = NULL
    raise exc


cdef int _call_io(_Call *call, object function, tuple args) noexcept:
    # GIL held: a wrapped walogs._io function (the test seam), or a host callback.
    try:
        function(*args)
    except BaseException as exc:
        _keep(call, exc)
        return _R_FAILED
    return _OK


cdef int _call_io_write(_Call *call, int fd, const unsigned char *p, size_t n, uint64_t offset) noexcept:
    # GIL held: the wrapped _io.pwrite_all, with the bytes it needs made inside the try.
    try:
        _io.pwrite_all(fd, PyBytes_FromStringAndSize(<const char *>p, n), offset)
    except BaseException as exc:
        _keep(call, exc)
        return _R_FAILED
    return _OK


cdef inline bint _io_wrapped():
    # Identity checks on three module attributes: ~50 ns, once per call.
    return (_io.pwrite_all is not _REAL_IO[0] or _io.fdatasync is not _REAL_IO[1]
            or _io.ftruncate is not _REAL_IO[2])
