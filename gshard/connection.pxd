cdef class Connection:
    cdef public object ctx
    cdef public object forwarded
    cdef public object proto
    cdef public object raw
    cdef public object remote
    cdef public object sock
