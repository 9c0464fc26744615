"""An application wrapped in ``wsgiref.validate.validator``.

The validator checks both sides of PEP 3333: the environ and ``wsgi.input``
the server hands over, the ``start_response``/``write`` calls, and that the
server closes the returned iterable. Violations raise ``AssertionError`` (so
the server answers 500 and logs a traceback) or, for an iterable that is
never closed, print to stderr when it is garbage collected. Warnings are
always printed, so a test can look for them in the server's stderr.
"""

import warnings
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("always", WSGIWarning)


def _inner(environ, start_response):
    stream = environ["wsgi.input"]
    if environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = stream.read(length)
        first_line = b""
    else:
        body = b""
        first_line = stream.readline()
    text = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {len(body)} {first_line!r}\n"
    out = text.encode("latin-1")
    if environ["PATH_INFO"] == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written:")
        return [out]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


app = validator(_inner)
