# The types proxy/http1/leg.py is compiled with (setup.py); the .py is the source of behaviour.
from proxy.connections cimport Shared
from proxy.http1.request cimport Request
from proxy.http1.upstream cimport ResponseSink, UpstreamConnection, UpstreamPool


cdef class UpstreamLeg(ResponseSink):
    cdef public Shared shared
    cdef public Request request
    cdef public UpstreamPool pool
    cdef public UpstreamConnection conn
    cdef public bint finished
    cdef public object _connecting
    cdef public bint _reused
    cdef public bint _retried
    cdef public double _sent_at
    cdef public double head_deadline
    cdef public bint resp_started

    cpdef _bind(self, UpstreamConnection conn)
    cpdef _fail(self, int status, str kind, str why)
    cpdef _take_or_connect(self)
    cpdef _connect(self)
    cpdef _drop_upstream(self)
    cpdef _abort_upstream(self)
    cpdef _report(self, int status, str kind, str why)
    cpdef _lost_before_answer(self, UpstreamConnection conn)
    cpdef head_timed_out(self)
    cpdef _head_arrived(self)
    cpdef str _upstream(self)
