# Compiled build only: declares exchange.py's per-request classes as extension types
# with typed attribute slots; the .py file stays the one source of the code.

cdef class Exchange:
    cdef public object _ctx
    cdef public object _input
    cdef public object _proto
    cdef public object _transport
    cdef public object request
    cdef public object forwarded
    cdef public double started
    cdef public double duration
    cdef public object body_bytes
    cdef public object body_since
    cdef public object outcome
    cdef public object writer
    cdef public object start
    cdef public object environ
