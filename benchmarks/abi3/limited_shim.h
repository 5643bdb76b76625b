#define PY_SSIZE_T_CLEAN
#include <Python.h>
#ifdef Py_LIMITED_API
#define PyBytes_AS_STRING(o) PyBytes_AsString(o)
#define PyBytes_GET_SIZE(o) PyBytes_Size(o)
static Py_buffer *walogs_mv_buffer(PyObject *mv)
{
    static __thread Py_buffer tmp;
    if (PyObject_GetBuffer(mv, &tmp, PyBUF_SIMPLE) == 0)
        PyBuffer_Release(&tmp);
    return &tmp;
}
#define PyMemoryView_GET_BUFFER(o) walogs_mv_buffer(o)
#endif
