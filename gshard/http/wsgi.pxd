# Compiled build only: declares wsgi.py's per-request classes as extension types
# with typed attribute slots; the .py file stays the one source of the code.

cdef class InputStream:
    cdef public list _chunks
    cdef public bint _done
    cdef public object _pull
    cdef public Py_ssize_t _size

cdef class _EmptyInput(InputStream):
    pass

cdef class ResponseStart:
    cdef public bint close
    cdef public object content_length
    cdef public bint has_date
    cdef public bint has_server
    cdef public object headers
    cdef public bint headers_sent
    cdef public object status
    cdef public object write

    cpdef _checked(self, headers)

# Module functions called per request: C calls from the compiled modules.
cpdef split_target(target)
cpdef make_environ(request, base, wsgi_input, remote)
