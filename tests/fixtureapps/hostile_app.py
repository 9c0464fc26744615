"""For the hostile-input tests: reports the path, body sizes and concurrency.

``/slow?s=SECONDS`` sleeps (gevent-patched, so the shard keeps serving) and
answers JSON with this shard's PID and the most ``/slow`` requests it ever had
in flight at once; ``/body`` reads the whole body and answers its length;
``/inject?TEXT`` copies the percent-decoded query into a response header, as
a careless application would; every other path answers ``ok PATH``, so a
smuggled request would show.
"""

import json
import os
import time
from urllib.parse import parse_qs, unquote

# One event loop per shard: plain counters are exact.
_in_flight = 0
_peak = 0


def app(environ, start_response):
    global _in_flight, _peak
    path = environ["PATH_INFO"]
    if path == "/slow":
        seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["0.5"])[0])
        _in_flight += 1
        _peak = max(_peak, _in_flight)
        try:
            time.sleep(seconds)
        finally:
            _in_flight -= 1
        body = json.dumps({"pid": os.getpid(), "peak": _peak}).encode()
    elif path == "/inject":
        text = unquote(environ.get("QUERY_STRING", ""))
        start_response("200 OK", [("X-Echo", text), ("Content-Length", "2")])
        return [b"ok"]
    elif path == "/body":
        body = json.dumps({"length": len(environ["wsgi.input"].read())}).encode()
    else:
        body = f"ok {path}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
