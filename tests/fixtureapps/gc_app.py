"""Answers with how many objects the collector no longer walks (gc.get_freeze_count)."""

import gc


def app(environ, start_response):
    body = str(gc.get_freeze_count()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
