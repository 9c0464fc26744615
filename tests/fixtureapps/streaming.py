"""Responses framed in every way the server must handle.

``/nolength``   a generator body without Content-Length
``/write``      the ``write()`` callable, then a returned iterable
``/tracked``    an iterable with ``close()`` that logs ``CLOSED <token> ...``
                to stderr; ``?token=T&chunks=N&delay=S`` (N chunks of 16 KiB,
                S seconds apart)
``/file``       ``wsgi.file_wrapper`` over the file named by $GSHARD_TEST_FILE
``/status/N``   status N (204, 304...) with no Content-Length and an empty
                body; ``?body=list`` returns ``[b""]``, ``?body=gen`` an empty
                generator, ``?body=stray`` wrongly returns bytes,
                ``?body=file`` wrongly returns the file_wrapper of ``/file``
"""

import os
import sys
import time
from urllib.parse import parse_qs


class Tracked:
    """An iterable that reports to stderr when the server closes it."""

    def __init__(self, token, chunks, delay):
        self.token = token
        self.chunks = chunks
        self.delay = delay
        self.sent = 0

    def __iter__(self):
        while self.sent < self.chunks:
            if self.sent and self.delay:
                time.sleep(self.delay)
            self.sent += 1
            yield b"x" * 16384

    def close(self):
        finished = self.sent >= self.chunks
        sys.stderr.write(f"CLOSED {self.token} sent={self.sent} finished={finished}\n")
        sys.stderr.flush()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/nolength":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (piece for piece in (b"alpha,", b"", b"beta,", b"gamma"))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written-1,")
        write(b"written-2,")
        return [b"returned"]
    if path == "/tracked":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Tracked(query["token"], int(query.get("chunks", "4")),
                       float(query.get("delay", "0")))
    if path == "/file":
        handle = open(os.environ["GSHARD_TEST_FILE"], "rb")  # noqa: SIM115 (closed by the server)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](handle, 32768)
    if path.startswith("/status/"):
        start_response(f"{path[8:]} Whatever", [("ETag", '"v1"')])
        kind = query.get("body", "list")
        if kind == "gen":
            return (piece for piece in ())
        if kind == "file":
            handle = open(os.environ["GSHARD_TEST_FILE"], "rb")  # noqa: SIM115
            return environ["wsgi.file_wrapper"](handle)
        return [b"stray body bytes"] if kind == "stray" else [b""]
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
    return []
