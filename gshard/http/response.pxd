# Compiled build only: declares response.py's per-request classes as extension types
# with typed attribute slots; the .py file stays the one source of the code.

from gshard.http.protocol cimport ServerConnection

cdef class ResponseWriter:
    cdef public ServerConnection _conn
    cdef public object _remaining  # the application's Content-Length: any size
    cdef public object framing
    cdef public list headers
    cdef public object phase
    cdef public Py_ssize_t sent
    cdef public object status

    # Called per response from the compiled exchange: C calls there.
    cpdef head(self, status, headers, content_length, close=*, add_date=*, add_server=*, body_length=*)
    cpdef data(self, data)
    cpdef bint complete(self)
    cpdef end(self)

# Module functions called per response: C calls within the module.
cpdef _status_code(status)
cpdef _status_line(version, status)
cpdef http_date()
