# Compiled build only: declares exchange.py's per-request classes as extension types
# with typed attribute slots; the .py file stays the one source of the code.

from gshard.http.protocol cimport ServerConnection
from gshard.http.response cimport ResponseWriter
from gshard.http.wsgi cimport InputStream, ResponseStart, make_environ

cdef class Exchange:
    cdef public object _ctx
    cdef public InputStream _input
    cdef public ServerConnection _proto
    cdef public object _transport
    cdef public object request
    cdef public object forwarded
    cdef public double started
    cdef public double duration
    cdef public object body_bytes
    cdef public object body_since
    cdef public object outcome
    cdef public ResponseWriter writer
    cdef public ResponseStart start
    cdef public object environ

    # Called per request from this module and the connection: C calls there.
    cpdef run(self)
    cpdef _send_result(self, result)
    cpdef _send_whole(self, parts)
    cpdef _write(self, data)
    cpdef _head(self, body_length=*)
