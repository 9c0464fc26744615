"""Plain PEP 3333 routes: no framework, so the numbers are the server's own cost.

One module serves every non-Flask scenario, so gshard and gunicorn import
exactly the same code: ``/`` hello, ``/big`` 64 KiB, ``/upload`` reads the
whole request body, ``/sleep`` waits 50 ms, ``/pid`` names the process.
"""

import os
import time

HELLO = b"Hello, world!\n"
BIG = b"x" * (64 * 1024)


def _send(start_response, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        return _send(start_response, HELLO)
    if path == "/big":
        return _send(start_response, BIG)
    if path == "/upload":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        received = len(environ["wsgi.input"].read(length))
        return _send(start_response, b"%d\n" % received)
    if path == "/sleep":
        time.sleep(0.05)  # cooperative: both servers monkey-patch time before importing us
        return _send(start_response, b"slept\n")
    if path == "/pid":
        return _send(start_response, str(os.getpid()).encode())
    return _send(start_response, b"not found\n", "404 Not Found")
