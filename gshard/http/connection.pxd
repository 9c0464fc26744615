# Compiled build only: declares connection.py's per-request classes as extension types
# with typed attribute slots; the .py file stays the one source of the code.

from gshard.http.exchange cimport Exchange
from gshard.http.protocol cimport ServerConnection

cdef class Outbox:
    cdef public object loop
    cdef public double since
    cdef public list waiting

    cpdef bint busy(self)
    cpdef hold(self, conn)
    cpdef overdue(self)

cdef class Connection:
    cdef public object ctx
    cdef public object failure
    cdef public object forwarded
    cdef public object held
    cdef public Outbox outbox
    cdef public bint parked
    cdef public ServerConnection proto
    cdef public bint queued
    cdef public object raw
    cdef public object readable
    cdef public object remote
    cdef public object resume
    cdef public object sock
    cdef public object to_loop

    # Called per request from this module's own methods: C calls there.
    cpdef _read_request(self, deadline)
    cpdef bint _wait_idle(self)
    cpdef _recv_when_readable(self)
    cpdef send_response(self, data)
    cpdef send(self, data)
    cpdef _send(self, data)
