"""Responses a client can check byte for byte, in every shape the server sends.

``/NAME?size=N&kind=K`` answers with a body of N bytes that starts with
``NAME|`` and goes on with ``body(NAME, N)``'s pattern, so a response that
was cut, mixed with another or sent out of order is seen. ``kind``:

``list``     a list of one item (the server adds the Content-Length): a whole response
``iter``     an iterable of one item with the application's Content-Length, as Flask returns
``chunked``  a generator of three pieces without a length: streamed, chunked
``write``    the ``write()`` callable for the first half, then the rest as a list
``sleep``    like ``list``, after a 10 ms sleep (other connections' passes run meanwhile)
"""

import time


def body(name: bytes, size: int) -> bytes:
    prefix = name + b"|"
    pattern = b"abcdefghijklmnopqrstuvwxyz0123456789"
    filler = pattern * (size // len(pattern) + 1)
    return (prefix + filler)[:size] if size >= len(prefix) else prefix


class _One:
    """An iterable that is not a list: the server cannot know its length up front."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self):
        yield self.data


def app(environ, start_response):
    name = environ["PATH_INFO"].encode()
    fields = dict(part.split("=", 1) for part in environ["QUERY_STRING"].split("&") if part)
    data = body(name, int(fields.get("size", "0")))
    kind = fields.get("kind", "list")
    headers = [("Content-Type", "application/octet-stream")]
    if kind == "iter":
        start_response("200 OK", [*headers, ("Content-Length", str(len(data)))])
        return _One(data)
    if kind == "chunked":
        start_response("200 OK", headers)
        third = len(data) // 3
        return (piece for piece in (data[:third], data[third:2 * third], data[2 * third:]))
    if kind == "write":
        write = start_response("200 OK", headers)
        write(data[:len(data) // 2])
        return [data[len(data) // 2:]]
    if kind == "sleep":
        time.sleep(0.01)
    start_response("200 OK", headers)
    return [data]
