"""A slow application: ``/sleep?s=SECONDS&token=T`` logs ``START T`` to stderr,
sleeps, then answers ``slept T``."""

import sys
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    token = query.get("token", "-")
    sys.stderr.write(f"START {token}\n")
    sys.stderr.flush()
    time.sleep(float(query.get("s", "1")))
    body = f"slept {token}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
