"""Boots only while no gate file exists; ``/slow?s=SECONDS`` answers late.

``GATED_APP_GATE`` names the gate: while that file exists, importing this
module waits (up to 20 s), so a test can hold a reload's new generation in
its boot and look at the server meanwhile. While the file named by
``GATED_APP_BROKEN`` exists, the import fails: a broken deploy. A slow
request keeps a draining shard around for as long as it takes.
"""

import os
import time
from urllib.parse import parse_qs

_gate = os.environ.get("GATED_APP_GATE")
_give_up = time.monotonic() + 20
while _gate and os.path.exists(_gate) and time.monotonic() < _give_up:
    time.sleep(0.05)
if os.path.exists(os.environ.get("GATED_APP_BROKEN", "")):
    raise ImportError("broken deploy")


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        time.sleep(float(query.get("s", ["1"])[0]))
    body = f"gated {os.getpid()}".encode()
    status = "404 Not Found" if environ.get("PATH_INFO") == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
