"""SIGTERM under load: in-flight requests finish, each told the connection closes."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import requests

from tests.support.rawhttp import Conn, request_bytes

IN_FLIGHT = 4


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_sigterm_lets_in_flight_requests_finish(gshard_proc):
    server = gshard_proc("slow:app", "--shards", "2", "--keep-alive", "10")
    # An idle keep-alive connection must not hold the stop for 10 s.
    idle = Conn.tcp(server.port, timeout=10)
    idle.send(request_bytes("GET", "/sleep?s=0&token=idle"))
    assert idle.read_response().status == 200

    results: dict[int, requests.Response | BaseException] = {}

    def call(i: int) -> None:
        try:
            with requests.Session() as session:  # its own connection
                results[i] = session.get(server.url + f"/sleep?s=1.5&token=g{i}", timeout=15)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for i in range(IN_FLIGHT):  # every request is inside the application
        server.stderr.wait_for(rf"START g{i}$", timeout=10)
    stop_sent = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=20) == 0
    stopped_after = time.monotonic() - stop_sent
    for thread in threads:
        thread.join(timeout=10)
    for i in range(IN_FLIGHT):
        response = results[i]
        assert isinstance(response, requests.Response), f"request {i} failed: {response!r}"
        assert response.status_code == 200
        assert response.text == f"slept g{i}"
        assert response.headers["Connection"] == "close"
    assert stopped_after < 8, f"stopping took {stopped_after:.1f}s (idle connection held it?)"
    assert idle.wait_closed(timeout=1), "the idle keep-alive connection was left open"
    idle.close()
    server.stderr.wait_for(r"Shutting down gracefully", timeout=1)
