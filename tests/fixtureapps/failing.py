"""Applications that fail.

``/before`` raises before ``start_response``; ``/after`` sends its headers
and a first piece of a chunked body, then raises; ``/upstream-timeout`` and
``/upstream-reset`` raise the ``OSError`` subclasses a call to another
service raises (``urllib.request`` times out with ``TimeoutError``); ``/ok``
answers normally.
"""

import os


class AppBoom(Exception):
    pass


def _after(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first piece;"
    raise AppBoom("boom after the headers were sent")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/before":
        raise AppBoom("boom before start_response")
    if path == "/after":
        return _after(start_response)
    if path == "/upstream-timeout":
        raise TimeoutError("upstream service timed out")
    if path == "/upstream-reset":
        raise ConnectionResetError(104, "upstream service reset the connection")
    body = f"ok {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
