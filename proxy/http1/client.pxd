# The types proxy/http1/client.py is compiled with (setup.py); the .py is the source of behaviour.
from proxy.accesslog cimport AccessEntry, ListenerAccess, new_entry
from proxy.connections cimport Shared
from proxy.http1.exchange cimport ClientSide, Exchange
from proxy.http1.request cimport Request
from proxy.http1.upstream cimport UpstreamPool
from proxy.http1.wire cimport total_length


cdef dict _METHODS
cdef Py_ssize_t _HEAD_FRAMING


cdef class ClientConnection(ClientSide):
    cdef ListenerAccess _access
    cdef double _began
    cdef Py_ssize_t _body_seen
    cdef bytes _client_ip
    cdef bint _closed
    cdef double _deadline
    cdef bint _deadline_is_header
    cdef object _handshake_timer
    cdef Py_ssize_t _head_seen
    cdef list _headers
    cdef bint _in_head
    cdef Exchange _incoming
    cdef bint _kicking
    cdef object _limits
    cdef str _log_client
    cdef bytes _log_host
    cdef str _log_host_text
    cdef object _loop
    cdef object _parser
    cdef int _paused
    cdef double _period
    cdef object _queue
    cdef object _router
    cdef Shared _shared
    cdef bint _stopped
    cdef object _timer
    cdef object _tls_version
    cdef Exchange _upgrading
    cdef public object transport

    cpdef write(self, bytes data)
    cpdef write_pieces(self, list pieces)
    cpdef pause_reading(self, int reason)
    cpdef resume_reading(self, int reason)
    cpdef exchange_done(self, Exchange exchange, bint keep_alive)
    cpdef watch_upstream(self)
    cpdef close(self)
    cpdef abort(self)

    cdef _kick(self)
    cdef _reject(self, int status)
    cdef AccessEntry _access_entry(self, bytes method, bytes host, UpstreamPool pool)
    cdef _begin_upgrade(self, bytes rest)
    cdef _watch(self, bint header)
    cdef _cancel_timers(self)
