# The types proxy/http1/upstream.py is compiled with (setup.py); the .py is the source of behaviour.
from proxy.http1.wire cimport ResponseFacts, scan_response


cdef class ResponseSink:
    cpdef on_interim(self, int status, bytes reason, list headers)
    cpdef on_head(self, int status, bytes reason, list headers, ResponseFacts facts, int framing)
    cpdef on_body(self, bytes data)
    cpdef on_end(self)
    cpdef on_upgrade(self, bytes reason, list headers, bytes rest)
    cpdef after_data(self)
    cpdef on_tunnel_data(self, bytes data)
    cpdef on_broken(self, str reason)
    cpdef on_lost(self, object exc)
    cpdef on_write_paused(self, bint paused)


cdef class UpstreamConnection:
    cdef public UpstreamPool pool
    cdef public object transport
    cdef public ResponseSink sink
    cdef public Py_ssize_t served
    cdef public bint closed
    cdef public bint writing_paused
    cdef public bint reading_paused
    cdef public bint keep_alive
    cdef public bint got_bytes
    cdef public bint tunnel
    cdef public double idle_since
    cdef public bint done
    cdef public bint dirty
    cdef object _parser
    cdef bint _head_only
    cdef int _status
    cdef bytes _reason
    cdef list _headers
    cdef bint _in_head

    cpdef attach(self, ResponseSink sink, bint head_only)
    cpdef detach(self)
    cpdef write(self, bytes data)
    cpdef close(self)
    cpdef abort(self)
    cpdef pause_reading(self)
    cpdef resume_reading(self)


cdef class UpstreamPool:
    cdef public object upstream
    cdef public str label
    cdef double _connect_timeout
    cdef object _loop
    cdef list _idle
    cdef object _sweeper
    cdef bint _closed

    cpdef UpstreamConnection take(self)
    cpdef put(self, UpstreamConnection conn)
    cpdef forget(self, UpstreamConnection conn)
