"""Answers ``blocking PID``; ``/block`` blocks the whole event loop (not just its greenlet).

The real ``time.sleep``, not gevent's, so no other greenlet of the shard runs:
what a CPU-bound loop or a C extension holding the thread does.
"""

import os
import sys

from gevent import monkey

_blocking_sleep = monkey.get_original("time", "sleep")


def block_the_event_loop(seconds):
    _blocking_sleep(seconds)


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/block":
        sys.stderr.write(f"BLOCKING {os.getpid()}\n")
        sys.stderr.flush()
        block_the_event_loop(30)
    body = f"blocking {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
