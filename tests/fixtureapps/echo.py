"""Reports what the server handed the application, as JSON.

``/noread`` answers without touching ``wsgi.input``. ``?delay=SECONDS``
sleeps before the first read of the body (to see when ``100 Continue`` goes
out). Every other path reads the whole body and reports its length and sha256.
The answer includes the scheme and the client's address as the server saw
them (``wsgi.url_scheme``, ``HTTPS``, ``REMOTE_ADDR``, ``REMOTE_PORT``).
"""

import hashlib
import json
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    path = environ["PATH_INFO"]
    if path == "/noread":
        body = None
    else:
        if "delay" in query:
            time.sleep(float(query["delay"][0]))
        body = environ["wsgi.input"].read()
    payload = {
        "method": environ["REQUEST_METHOD"],
        "path": path,
        "query": environ.get("QUERY_STRING", ""),
        "protocol": environ["SERVER_PROTOCOL"],
        "content_length": environ.get("CONTENT_LENGTH"),
        "url_scheme": environ["wsgi.url_scheme"],
        "https": environ.get("HTTPS"),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "remote_port": environ.get("REMOTE_PORT"),
        "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
        "body_len": None if body is None else len(body),
        "body_sha256": None if body is None else hashlib.sha256(body).hexdigest(),
    }
    out = json.dumps(payload).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]
