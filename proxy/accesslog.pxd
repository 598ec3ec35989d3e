# The types proxy/accesslog.py is compiled with (setup.py); the .py is the source of behaviour.
cimport cython

from proxy.logwriter cimport LineWriter


cdef tuple THOUSANDTHS


cdef class _MillisecondTimestamps:
    cdef long long _last_ms
    cdef long long _second
    cdef str _last
    cdef str _prefix

    @cython.locals(ms=cython.longlong, second=cython.longlong)
    cpdef str stamp(self, double now)


cdef class AccessEntry


cdef class ListenerAccess:
    cdef str _name
    cdef bint _json
    cdef _MillisecondTimestamps _timestamps
    cdef object _rare_timestamps
    cdef LineWriter _writer
    cdef str _client
    cdef object _tls_version
    cdef str _protocol
    cdef str _head
    cdef str _tail

    cdef _connection_json(self, str client, object tls_version, str protocol)

    @cython.locals(entry=AccessEntry)
    cpdef request(
        self,
        str protocol,
        str client,
        object tls_version,
        object method,
        object host,
        object path,
        object status,
        Py_ssize_t bytes_in,
        Py_ssize_t bytes_out,
        double began,
        object upstream,
        object reason=*,
    )

    @cython.locals(micros=cython.longlong, path=object, reason=object)
    cpdef str line(self, AccessEntry entry)


@cython.no_gc
cdef class AccessEntry:
    cdef public ListenerAccess access
    cdef public double began
    cdef public double ended
    cdef public double wall
    cdef public Py_ssize_t bytes_in
    cdef public Py_ssize_t bytes_out
    cdef public str client
    cdef public object host
    cdef public object method
    cdef public object path
    cdef public str protocol
    cdef public object reason
    cdef public object status
    cdef public object tls_version
    cdef public object upstream

    cpdef write(self, object status=*, object reason=*)
    cpdef end(self)
    cpdef str line(self)


cdef dict _QUOTED

@cython.locals(text=str)
cdef str _quoted(object value)


@cython.locals(entry=AccessEntry)
cpdef AccessEntry new_entry(
    ListenerAccess access,
    str client,
    object tls_version,
    object method,
    object host,
    object path,
    double began,
    Py_ssize_t bytes_in,
    object upstream,
    str protocol=*,
)
