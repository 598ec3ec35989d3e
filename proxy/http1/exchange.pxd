# The types proxy/http1/exchange.py is compiled with (setup.py); the .py is the source of behaviour.
from proxy.accesslog cimport AccessEntry
from proxy.connections cimport Shared
from proxy.http1.leg cimport UpstreamLeg
from proxy.http1.request cimport HeadLimit, Request
from proxy.http1.upstream cimport ResponseSink, UpstreamConnection, UpstreamPool
from proxy.http1.wire cimport ResponseFacts, chunk_size_line, total_length


cdef class ClientSide(HeadLimit):
    cdef public bint writing_paused

    cpdef write(self, bytes data)
    cpdef write_pieces(self, list pieces)
    cpdef pause_reading(self, int reason)
    cpdef resume_reading(self, int reason)
    cpdef exchange_done(self, Exchange exchange, bint keep_alive)
    cpdef watch_upstream(self)
    cpdef close(self)
    cpdef abort(self)


cdef class Exchange(UpstreamLeg):
    cdef bint _body_done
    cdef list _buffer
    cdef Py_ssize_t _buffered
    cdef bint _close_client
    cdef int _framing
    cdef list _out
    cdef bint _rechunk
    cdef bint _resp_done
    cdef bint _tunneling
    cdef public ClientSide client
    cdef public int local_status
    cdef public AccessEntry log
    cdef public bint started

    cpdef start(self)
    cpdef request_body(self, bytes data)
    cpdef request_end(self)
    cpdef request_failed(self, int status)
    cpdef tunnel_from_client(self, bytes data)
    cpdef client_lost(self)
    cpdef client_write_paused(self, bint paused)

    cpdef on_interim(self, int status, bytes reason, list headers)
    cpdef on_head(self, int status, bytes reason, list headers, ResponseFacts facts, int framing)
    cpdef on_body(self, bytes data)
    cpdef on_end(self)
    cpdef on_upgrade(self, bytes reason, list headers, bytes rest)
    cpdef after_data(self)
    cpdef on_tunnel_data(self, bytes data)
    cpdef on_lost(self, object exc)
    cpdef on_write_paused(self, bint paused)

    cpdef _bind(self, UpstreamConnection conn)
    cpdef _fail(self, int status, str kind, str why)

    cdef _send(self, bytes data)
    cdef _hold(self, bytes data)
    cdef _arm_timer(self, double now)
    cdef _cancel_timer(self)
    cdef bint _must_close(self)
    cdef _answer_locally(self)
    cdef _finish(self)
    cpdef _log_end(self, object status=*, object reason=*)
