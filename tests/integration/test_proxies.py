"""Trusted proxies against real gshard processes: forwarded headers and the PROXY protocol.

The tests' client connects from 127.0.0.1, which is what the default allow
lists trust; pointing them at 10.0.0.1 makes the same client an untrusted peer.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl

import pytest

from tests.support.rawhttp import Conn, request_bytes

FORWARDED = (
    ("X-Forwarded-For", "198.51.100.1, 203.0.113.7"),
    ("X-Forwarded-Proto", "https"),
)


def echo(conn: Conn, path: str = "/", headers=()) -> dict:
    conn.send(request_bytes("GET", path, headers=tuple(headers)))
    response = conn.read_response()
    assert response.status == 200, response
    return json.loads(response.body)


def ask(port: int, headers=()) -> dict:
    with Conn.tcp(port) as conn:
        return echo(conn, headers=headers)


# --- forwarded headers -------------------------------------------------------------


def test_forwarded_headers_honoured_from_localhost_by_default(gshard_proc):
    server = gshard_proc("echo:app", "--shards", "1")
    seen = ask(server.port, FORWARDED)
    assert seen["url_scheme"] == "https"
    assert seen["https"] == "on"
    assert seen["remote_addr"] == "203.0.113.7"  # the rightmost untrusted hop
    # Without them, the peer as it is.
    seen = ask(server.port)
    assert (seen["url_scheme"], seen["remote_addr"]) == ("http", "127.0.0.1")


def test_forwarded_headers_ignored_from_a_peer_not_allowed(gshard_proc):
    server = gshard_proc("echo:app", "--shards", "1", "--forwarded-allow-ips", "10.0.0.1")
    seen = ask(server.port, FORWARDED)
    assert seen["url_scheme"] == "http"
    assert seen["https"] is None
    assert seen["remote_addr"] == "127.0.0.1"
    # Still there for the application, as ordinary headers.
    assert seen["headers"]["HTTP_X_FORWARDED_FOR"] == "198.51.100.1, 203.0.113.7"
    assert seen["headers"]["HTTP_X_FORWARDED_PROTO"] == "https"


def test_forwarded_allow_ips_from_the_environment(gshard_proc):
    server = gshard_proc("echo:app", "--shards", "1", env={"FORWARDED_ALLOW_IPS": "10.0.0.1"})
    assert ask(server.port, FORWARDED)["remote_addr"] == "127.0.0.1"


def test_cidr_network_honoured(gshard_proc):
    server = gshard_proc("echo:app", "--shards", "1", "--forwarded-allow-ips", "127.0.0.0/8")
    seen = ask(server.port, [("X-Forwarded-For", "127.0.0.9, 203.0.113.7, 127.0.0.2"),
                             ("X-Forwarded-Ssl", "on")])
    assert seen["url_scheme"] == "https"
    assert seen["remote_addr"] == "203.0.113.7"


def test_conflicting_scheme_headers_get_400(gshard_proc):
    server = gshard_proc("echo:app", "--shards", "1")
    with Conn.tcp(server.port) as conn:
        conn.send(request_bytes("GET", "/", headers=(("X-Forwarded-Proto", "https"),
                                                     ("X-Forwarded-Ssl", "off"))))
        assert conn.read_response().status == 400
        assert conn.wait_closed()
    server.stderr.wait_for(r"Bad request from 127\.0\.0\.1: the forwarded scheme headers "
                           r"disagree \(GET /\)", 5)


# --- PROXY protocol -----------------------------------------------------------------------


def v2_tcp4(source: str, port: int) -> bytes:
    block = (ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address("127.0.0.1").packed
             + port.to_bytes(2, "big") + (8000).to_bytes(2, "big"))
    return b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + len(block).to_bytes(2, "big") + block


V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (b"PROXY TCP4 203.0.113.7 127.0.0.1 41234 8000\r\n", ("203.0.113.7", "41234")),
        (b"PROXY TCP6 2001:db8::7 ::1 41235 8000\r\n", ("2001:db8::7", "41235")),
        (v2_tcp4("198.51.100.9", 5555), ("198.51.100.9", "5555")),
        (V2_LOCAL, ("127.0.0.1", None)),  # a health check from the proxy itself
        (b"PROXY UNKNOWN\r\n", ("127.0.0.1", None)),
    ],
    ids=["v1-tcp4", "v1-tcp6", "v2-tcp4", "v2-local", "v1-unknown"],
)
def test_proxy_header_sets_the_client(gshard_proc, header, client):
    server = gshard_proc("echo:app", "--shards", "1", "--proxy-protocol")
    with Conn.tcp(server.port) as conn:
        # The header and the request in one write: the request's bytes must
        # not be lost to the header's reading.
        conn.send(header + request_bytes("GET", "/first"))
        response = conn.read_response()
        assert response.status == 200
        first = json.loads(response.body)
        second = echo(conn, "/second")  # keep-alive: the same client for the connection
    for seen in (first, second):
        assert seen["remote_addr"] == client[0]
        if client[1] is not None:
            assert seen["remote_port"] == client[1]
    assert (first["path"], second["path"]) == ("/first", "/second")


def test_proxy_header_arriving_in_pieces(gshard_proc):
    server = gshard_proc("echo:app", "--shards", "1", "--proxy-protocol", "v2")
    header = v2_tcp4("198.51.100.9", 5555)
    with Conn.tcp(server.port) as conn:
        for piece in (header[:5], header[5:14], header[14:20], header[20:] + b"GET"):
            conn.send(piece)
            conn.sock.settimeout(0.05)
            with pytest.raises(TimeoutError):  # nothing is answered before the request is in
                conn.sock.recv(1)
        conn.sock.settimeout(5)
        conn.send(request_bytes("GET", "/pieces")[3:])
        assert json.loads(conn.read_response().body)["remote_addr"] == "198.51.100.9"


def test_proxy_header_refused_from_a_peer_not_allowed(gshard_proc):
    server = gshard_proc("echo:app", "--shards", "1", "--proxy-protocol",
                         "--proxy-allow-from", "10.0.0.1")
    with Conn.tcp(server.port) as conn:
        conn.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 41234 8000\r\n" + request_bytes("GET", "/"))
        assert conn.read_response().status == 400
        assert conn.wait_closed()
    server.stderr.wait_for(r"\[INFO\] Bad request from 127\.0\.0\.1: PROXY protocol connection "
                           r"from a peer that --proxy-allow-from does not list", 5)


@pytest.mark.parametrize(
    "data",
    [
        request_bytes("GET", "/"),  # no header at all
        b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 8000\r\n" + request_bytes("GET", "/"),
        b"PROXY UNKNOWN " + b"f" * 120 + b"\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff" + bytes(64),
    ],
    ids=["missing", "bad-port", "v1-oversized", "v2-oversized"],
)
def test_malformed_proxy_header_gets_400_and_the_shard_lives(gshard_proc, data):
    server = gshard_proc("echo:app", "--shards", "1", "--proxy-protocol")
    shards = server.shard_pids()
    with Conn.tcp(server.port) as conn:
        conn.send(data)
        assert conn.read_response().status == 400
        assert conn.wait_closed()
    with Conn.tcp(server.port) as conn:
        conn.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 1 8000\r\n")
        assert echo(conn)["remote_addr"] == "203.0.113.7"
    assert server.shard_pids() == shards
    assert "Traceback" not in server.stderr.text


def test_forwarded_headers_are_judged_by_the_client_the_proxy_header_names(gshard_proc):
    # A TCP proxy passes the client's own headers through: once the PROXY
    # header says the client is 203.0.113.7, its X-Forwarded-* are not trusted.
    server = gshard_proc("echo:app", "--shards", "1", "--proxy-protocol")
    with Conn.tcp(server.port) as conn:
        conn.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 1 8000\r\n")
        seen = echo(conn, headers=[("X-Forwarded-For", "10.9.9.9"),
                                   ("X-Forwarded-Proto", "https")])
    assert (seen["remote_addr"], seen["url_scheme"]) == ("203.0.113.7", "http")


def test_proxy_header_before_a_tls_handshake(gshard_proc, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert, cafile = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(cafile))
    server = gshard_proc("echo:app", "--shards", "1", "--proxy-protocol",
                         "--certfile", str(cert))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    raw.sendall(v2_tcp4("198.51.100.9", 5555))  # in clear, then the handshake
    tls = ssl.create_default_context(cafile=str(cafile)).wrap_socket(
        raw, server_hostname="127.0.0.1")
    with Conn(tls) as conn:
        seen = echo(conn)
    assert (seen["remote_addr"], seen["url_scheme"]) == ("198.51.100.9", "https")


def test_unix_socket_peers_count_as_allowed(gshard_proc, tmp_path):
    # gunicorn's rule: only local processes reach a unix socket.
    path = str(tmp_path / "gshard.sock")
    server = gshard_proc("echo:app", "--shards", "1", "--bind", f"unix:{path}",
                         "--forwarded-allow-ips", "10.0.0.1", "--proxy-protocol",
                         "--proxy-allow-from", "10.0.0.1")
    assert server.unix_path == path
    with Conn.unix(path) as conn:
        conn.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 1 8000\r\n")
        seen = echo(conn, headers=[("X-Forwarded-Proto", "https")])
    # The client the header names is judged for the forwarded headers: not trusted.
    assert (seen["remote_addr"], seen["url_scheme"]) == ("203.0.113.7", "http")
    with Conn.unix(path) as conn:
        conn.send(b"PROXY UNKNOWN\r\n")
        seen = echo(conn, headers=FORWARDED)
    assert (seen["remote_addr"], seen["url_scheme"]) == ("203.0.113.7", "https")
