cdef class ResponseWriter:
    cdef public object _conn
    cdef public Py_ssize_t _remaining
    cdef public object framing
    cdef public list headers
    cdef public object phase
    cdef public Py_ssize_t sent
    cdef public object status
