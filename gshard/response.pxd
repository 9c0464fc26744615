# Compiled build only: declares response.py's per-request classes as extension types
# with typed attribute slots; the .py file stays the one source of the code.

cdef class ResponseWriter:
    cdef public object _conn
    cdef public object _remaining  # the application's Content-Length: any size
    cdef public object framing
    cdef public list headers
    cdef public object phase
    cdef public Py_ssize_t sent
    cdef public object status
