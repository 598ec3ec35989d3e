# The types proxy/logwriter.py is compiled with (setup.py); the .py is the source of behaviour.

cdef class LineWriter:
    cdef public object path
    cdef double _linger
    cdef public str label
    cdef int _std_fd
    cdef int _fd
    cdef object _wake
    cdef object _pending
    cdef bint _woken
    cdef object _thread
    cdef bint _closing
    cdef bint _failing
    cdef Py_ssize_t _dropped

    cpdef write(self, object line)
