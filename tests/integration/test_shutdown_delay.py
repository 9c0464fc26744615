"""What an orchestrator sees of a real gshard: /livez and /readyz through a boot,
a reload and a stop, the lame duck of ``--shutdown-delay``, and systemd's
notifications."""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from tests.support.loadgen import APP, SERVER_ENV, deploy
from tests.support.processes import Server, status_document, wait_until
from tests.support.rawhttp import Conn, fetch

WAIT = 15.0


def metrics_port(server: Server) -> int:
    return int(server.stderr.wait_for(r"Metrics at: http://127\.0\.0\.1:(\d+)/metrics",
                                      WAIT).group(1))


def probe(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET ``path`` on the metrics listener."""
    response = fetch(port, path)
    return response.status, response.body.decode()


def get(conn: Conn, path: str = "/") -> tuple[int, str | None]:
    """One keep-alive request on ``conn``: (status, its Connection header)."""
    conn.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    response = conn.read_response()
    return response.status, response.header("Connection")


def fresh_get(port: int) -> tuple[int, str | None]:
    with Conn.tcp(port) as conn:
        return get(conn)



@pytest.mark.timeout(60)
def test_readyz_fails_while_a_slow_preload_import_boots_and_livez_does_not(gshard_proc,
                                                                           tmp_path):
    deploy(tmp_path, "v1", import_seconds=3.0)
    server = gshard_proc(APP, "--preload", "--shards", "2", "--metrics-bind", "127.0.0.1:0",
                         cwd=tmp_path, env=SERVER_ENV, ready=False)
    port = metrics_port(server)
    status, body = probe(port, "/readyz")
    assert (status, body) == (503, "not ready: starting, generation 1 is booting "
                                   "(0 of 2 shards ready)\n")
    status, body = probe(port, "/livez")
    assert status == 200 and body.startswith("alive: starting")
    server.wait_ready()
    status, body = probe(port, "/readyz")
    assert (status, body) == (200, "ready: generation 1 serves on 2 of 2 shards\n")
    assert probe(port, "/livez") == (200, "alive: 2 shards reported within the last 30s\n")


@pytest.mark.timeout(60)
def test_a_reload_keeps_readyz_passing(gshard_proc, tmp_path):
    deploy(tmp_path, "v1")
    server = gshard_proc(APP, "--shards", "1", "--metrics-bind", "127.0.0.1:0",
                         cwd=tmp_path, env=SERVER_ENV)
    port = metrics_port(server)
    deploy(tmp_path, "v2", import_seconds=2.0)
    server.signal(signal.SIGHUP)
    server.stderr.wait_for(r"Reloading: booting generation 2", WAIT)
    status, body = probe(port, "/readyz")
    assert (status, body) == (200, "ready: generation 1 serves on 1 of 1 shards; "
                                   "generation 2 is booting\n")
    server.stderr.wait_for(r"Generation 2 is serving", WAIT)
    assert probe(port, "/readyz")[0] == 200


@pytest.mark.timeout(60)
def test_a_delayed_stop_serves_with_connection_close_then_drains(gshard_proc, tmp_path):
    pidfile = str(tmp_path / "g.pid")
    delay = 6.0  # room for the checks below on a busy machine
    server = gshard_proc("hello:app", "--shards", "2", "--shutdown-delay", str(delay),
                         "--metrics-bind", "127.0.0.1:0", "--pid", pidfile)
    port = metrics_port(server)
    keepalive = Conn.tcp(server.port)
    assert get(keepalive) == (200, None)
    server.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    # Readiness fails at once: the load balancer's cue to drop this server...
    _, body = wait_until(lambda: (r := probe(port, "/readyz"))[0] == 503 and r, WAIT,
                         "/readyz to fail")
    assert re.fullmatch(r"not ready: stopping; serving \d\.\ds more as a lame duck "
                        r"\(--shutdown-delay\), then draining\n", body), body
    assert probe(port, "/livez")[0] == 200  # stopping is no reason to restart
    server.stderr.wait_for(r"serving 6s more as a lame duck", WAIT)
    doc = status_document("--pid", pidfile)
    assert doc["manager"]["phase"] == "stopping" and 0 < doc["manager"]["lame_duck"] <= delay
    # ...while everything it is still sent is served: new connections are accepted,
    # and once the shards have heard, each response tells its client to reconnect.
    wait_until(lambda: fresh_get(server.port) == (200, "close"), WAIT,
               "a response with Connection: close")
    assert get(keepalive) == (200, "close")
    assert keepalive.wait_closed(alert=False)
    for _ in range(5):
        with Conn.tcp(server.port) as fresh:
            assert get(fresh) == (200, "close")
    assert time.monotonic() - stopped_at < delay, "the test was too slow to see the delay"
    assert server.wait(WAIT + delay) == 0
    assert time.monotonic() - stopped_at >= delay - 0.1  # it served out the delay
    log = server.stderr.text
    assert "The lame-duck period is over; draining" in log


@pytest.mark.timeout(60)
def test_a_second_sigterm_ends_the_delay_and_sigint_stops_at_once(gshard_proc):
    server = gshard_proc("hello:app", "--shards", "1", "--shutdown-delay", "120")
    server.signal(signal.SIGTERM)
    server.stderr.wait_for(r"lame duck", WAIT)
    server.signal(signal.SIGTERM)
    assert server.wait(WAIT) == 0  # the drain, not the 120 s delay
    assert "the lame-duck period ends early; draining" in server.stderr.text

    fast = gshard_proc("hello:app", "--shards", "1", "--shutdown-delay", "120")
    fast.signal(signal.SIGTERM)
    fast.stderr.wait_for(r"lame duck", WAIT)
    fast.signal(signal.SIGINT)
    assert fast.wait(WAIT) == 0
    assert "Shutting down now" in fast.stderr.text


@pytest.mark.timeout(60)
def test_systemd_hears_reloading_with_its_timestamp_ready_and_stopping_at_once(
        gshard_proc, tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify_path)
    receiver.settimeout(WAIT)

    def message() -> dict[str, str]:
        fields = receiver.recv(4096).decode().split("\n")
        return dict(field.split("=", 1) for field in fields)

    try:
        server = gshard_proc("hello:app", "--shards", "1", "--shutdown-delay", "30",
                             env={"NOTIFY_SOCKET": notify_path})
        ready = message()
        assert ready["READY"] == "1" and ready["STATUS"].startswith("Ready: 1 shard")
        server.signal(signal.SIGHUP)
        sent_before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        reloading = message()
        assert reloading["RELOADING"] == "1"
        assert reloading["STATUS"] == "Reloading: booting generation 2"
        # systemd matches the reload it asked for by this clock (Type=notify-reload).
        stamp = int(reloading["MONOTONIC_USEC"])
        assert abs(stamp - sent_before) < 30_000_000
        reloaded = message()
        assert reloaded["READY"] == "1"
        assert reloaded["STATUS"] == "Generation 2 is serving; generation 1 is draining"
        server.signal(signal.SIGTERM)
        stopping = message()  # at once, not after the 30 s lame duck
        assert stopping["STOPPING"] == "1"
        assert stopping["STATUS"] == "Stopping: lame duck for 30s, then draining"
        server.signal(signal.SIGTERM)
        assert message() == {"STOPPING": "1", "STATUS": "Stopping: draining"}
        assert server.wait(WAIT) == 0
    finally:
        receiver.close()
