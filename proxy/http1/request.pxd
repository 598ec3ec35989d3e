# The types proxy/http1/request.py is compiled with (setup.py); the .py is the source of behaviour.
cimport cython

from proxy.http1.wire cimport RequestFacts, scan_request


cdef class HeadLimit:
    cdef public bytes _url
    cdef public Py_ssize_t _head_size
    cdef public int _refusal


cdef class Request:
    cdef public bytes head
    cdef public bint http10
    cdef public bint keep_alive
    cdef public bint chunked
    cdef public bint has_body
    cdef public bint upgrade
    cdef public bint idempotent
    cdef public bint is_head
    cdef public bytes host


cdef dict _ROUTING_KEYS

@cython.locals(key=bytes)
cpdef bytes routing_key(bytes authority)

cpdef tuple split_target(bytes method, bytes url, object host)

@cython.locals(facts=RequestFacts, request=Request, head=bytes, http10=bint, chunked=bint, has_body=bint)
cpdef tuple interpret(
    bytes method,
    str version,
    bytes url,
    list headers,
    object router,
    bint keep_alive,
    bint upgrade,
    bytes client_ip,
    Py_ssize_t max_body_bytes,
)
