# The types proxy/http1/wire.py is compiled with (setup.py); the .py is the source of behaviour.
cimport cython

cdef frozenset _DROP_FROM_REQUEST
cdef frozenset _REQUEST_SCAN_LENGTHS
cdef frozenset _RESPONSE_SCAN_LENGTHS
cdef frozenset _REQUEST_DROP_LENGTHS
cdef frozenset _HOP_LENGTHS
cdef frozenset _PLAIN_CONNECTION
cdef frozenset _NO_TOKENS
cdef dict _PHRASES
cdef dict _STATUS_LINES
cdef dict _FRAMING_TAILS


cdef class RequestFacts:
    cdef public object host
    cdef public Py_ssize_t host_count
    cdef public object content_length
    cdef public bint chunked
    cdef public frozenset tokens
    cdef public object upgrade
    cdef public object xff
    cdef public list kept


@cython.locals(facts=RequestFacts, kept=list, name=bytes, value=bytes, lowered=bytes)
cpdef RequestFacts scan_request(list headers)


cdef class ResponseFacts:
    cdef public bint has_length
    cdef public object transfer_encoding
    cdef public frozenset tokens
    cdef public bytes upgrade
    cdef public list kept


@cython.locals(facts=ResponseFacts, kept=list, name=bytes, value=bytes, lowered=bytes)
cpdef ResponseFacts scan_response(list headers)


@cython.locals(line=bytes)
cpdef bytes status_line(int status, bytes reason)

cpdef bytes chunk_size_line(Py_ssize_t size)

@cython.locals(total=Py_ssize_t, piece=bytes)
cpdef Py_ssize_t total_length(list pieces)

@cython.locals(out=list, xff=bytes)
cpdef bytes upstream_request_head(
    bytes method,
    bytes target,
    list headers,
    RequestFacts facts,
    bytes client_ip,
    bytes host,
    bint add_host,
    bint chunked,
    bint upgrade,
)

@cython.locals(kept=list, head=bytes, tail=bytes, out=list)
cpdef bytes client_response_head(
    int status,
    bytes reason,
    list headers,
    ResponseFacts facts=*,
    bint chunked=*,
    bint close=*,
    bint keep_alive_10=*,
    bint upgrade=*,
)
