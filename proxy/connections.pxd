# The types proxy/connections.py is compiled with (setup.py); the .py is the source of behaviour.
from proxy.accesslog cimport ListenerAccess


cdef class Tally:
    cdef public object series
    cdef object _loop
    cdef dict _by_class
    cdef dict _errors
    cdef list _requests
    cdef tuple _bounds
    cdef list _latency_counts
    cdef double _latency_sum
    cdef Py_ssize_t _handshakes
    cdef object _flush

    cpdef request(self, int status)
    cpdef handshake(self)
    cpdef handshake_failed(self)
    cpdef latency(self, double seconds)
    cpdef error(self, str kind)
    cpdef flush(self)


cdef class Shared:
    cdef public str name
    cdef public object limits
    cdef public Tally tally
    cdef public ListenerAccess access
    cdef public object loop
    cdef public object tasks
    cdef public bint draining
    cdef public set connections
    cdef object _empty

    cpdef opened(self, object connection)
    cpdef closed(self, object connection)
