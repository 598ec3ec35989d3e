# The types proxy/accesslog.py is compiled with (setup.py); the .py is the source of behaviour.
cimport cython

from proxy.logwriter cimport LineMaker, LineWriter


cdef tuple THOUSANDTHS
cdef tuple _DECIMALS

cdef str _decimal(Py_ssize_t n)


cdef class _MillisecondTimestamps:
    cdef long long _last_ms
    cdef long long _second
    cdef str _last
    cdef str _prefix

    @cython.locals(ms=cython.longlong, second=cython.longlong)
    cpdef str stamp(self, double now)


cdef class AccessEntry:
    cdef public str listener
    cdef public double began
    cdef public double ended
    cdef public double wall
    cdef public Py_ssize_t bytes_in
    cdef public Py_ssize_t bytes_out
    cdef public long status
    cdef public str client
    cdef public str host
    cdef public str method
    cdef public str path
    cdef public str protocol
    cdef public str reason
    cdef public str status_name
    cdef public str tls_version
    cdef public str upstream


cdef class RequestLines(LineMaker):
    cdef bint _json
    cdef _MillisecondTimestamps _timestamps
    cdef str _listener
    cdef str _client
    cdef str _tls_version
    cdef str _protocol
    cdef str _head
    cdef str _tail

    @cython.locals(listener=str, client=str, tls_version=str, protocol=str)
    cdef _connection_json(self, AccessEntry entry)

    @cython.locals(entry=AccessEntry, micros=cython.longlong, path=str, reason=str, status_name=str, status=str)
    cpdef str line(self, object item)


cdef class ListenerAccess:
    cdef str _name
    cdef bint _json
    cdef object _rare_timestamps
    cdef LineWriter _writer

    cpdef write(self, AccessEntry entry, object status=*, object reason=*)

    @cython.locals(entry=AccessEntry)
    cpdef request(
        self,
        str protocol,
        str client,
        str tls_version,
        str method,
        str host,
        str path,
        object status,
        Py_ssize_t bytes_in,
        Py_ssize_t bytes_out,
        double began,
        str upstream,
        str reason=*,
    )


cdef object _status(AccessEntry entry)


cdef dict _QUOTED

@cython.locals(text=str)
cdef str _quoted(object value)


@cython.locals(entry=AccessEntry)
cpdef AccessEntry new_entry(
    ListenerAccess access,
    str client,
    str tls_version,
    str method,
    str host,
    str path,
    double began,
    Py_ssize_t bytes_in,
    str upstream,
    str protocol=*,
)
