# Compiled build only: declares connection.py's per-request classes as extension types
# with typed attribute slots; the .py file stays the one source of the code.

from gshard.http.protocol cimport ServerConnection

cdef class Outbox:
    cdef public object loop
    cdef public list waiting

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
    cdef public object sock
