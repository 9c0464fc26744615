# Compiled build only: declares protocol.py's per-request classes as extension types
# with typed attribute slots; the .py file stays the one source of the code.

# The request line's judge: called per request by parse_head, a C call.
cpdef tuple request_line(str text, Py_ssize_t line_end, object limits)


cdef class ServerConnection:
    cdef public object limits
    cdef public Py_ssize_t _max_head
    cdef public object state
    cdef public object request
    cdef public bytearray _buf
    cdef public bint _eof
    cdef public object _error
    cdef public Py_ssize_t _checked
    cdef public Py_ssize_t _line_start
    cdef public Py_ssize_t _head_lines
    cdef public Py_ssize_t _empty_lines
    cdef public object _remaining
    cdef public object _chunk
    cdef public object _body_seen
    cdef public Py_ssize_t _trailer_fields
    cdef public Py_ssize_t _line_checked
    cdef public bint keep_alive
    cdef public bint _continue_pending

    # Called once or more per request from the other compiled modules: C calls there.
    cpdef receive_data(self, data)
    cpdef next_event(self)
    cpdef abandon(self)
    cpdef begin_response(self)
    cpdef start_next_cycle(self)
