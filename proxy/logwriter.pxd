# The types proxy/logwriter.py is compiled with (setup.py); the .py is the source of behaviour.
cimport cython

cdef class LineMaker:
    cpdef str line(self, object item)


cdef class LineWriter:
    cdef public object path
    cdef public LineMaker maker
    cdef double _linger
    cdef public str label
    cdef int _std_fd
    cdef int _fd
    cdef object _wake
    cdef object _pending
    cdef object _append
    cdef Py_ssize_t _max_pending
    cdef bint _woken
    cdef object _thread
    cdef bint _closing
    cdef bint _failing
    cdef Py_ssize_t _dropped

    cpdef write(self, object line)

    @cython.locals(texts=list, maker=LineMaker)
    cdef _write_now(self, list lines)


@cython.locals(texts=list)
cdef list _made(LineMaker maker, list lines)
