"""HTTPS: real gshard processes with certificates made at test time (trustme).

Clients verify the server against the test CA (the session's ``pki``
fixture), so a test passes only if the handshake, the certificate chain and
every byte through the encryption are right. What HTTP does over TLS (bodies
both ways, framing, file_wrapper, keep-alive and pipelining) is tested by the
behaviour suites, which run over each transport (``tests/support/transports.py``);
this module keeps what is TLS's own: certificates, handshakes, the scheme,
plain HTTP on the TLS port, and how a TLS connection ends.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.support.rawhttp import Conn, read_to_eof, request_bytes
from tests.support.transports import Pki, TlsTransport

trustme = pytest.importorskip("trustme")


def tls_args(pki: Pki, *more: str) -> tuple[str, ...]:
    return ("--certfile", pki.server, "--keyfile", pki.key, *more)


def https(server) -> str:
    return f"https://127.0.0.1:{server.port}"


def test_https_request_verified_against_the_test_ca(gshard_proc, pki):
    server = gshard_proc("echo:app", "--shards", "2", *tls_args(pki))
    response = requests.post(https(server) + "/hello?x=1", data=b"hi", verify=pki.ca,
                             timeout=5)
    assert response.status_code == 200
    echo = response.json()
    assert echo["url_scheme"] == "https"
    assert echo["https"] == "on"
    assert (echo["path"], echo["query"], echo["body_len"]) == ("/hello", "x=1", 2)
    assert echo["remote_addr"] == "127.0.0.1"
    assert server.stderr.count(rf"Listening at: https://127\.0\.0\.1:{server.port} ") == 1


def test_plain_http_to_the_tls_port_is_closed_and_the_shard_lives(gshard_proc, pki):
    server = gshard_proc("echo:app", "--shards", "1", "--log-level", "debug", *tls_args(pki))
    shards = server.shard_pids()
    for _ in range(3):
        with Conn.tcp(server.port) as conn:
            conn.send(request_bytes("GET", "/plain"))
            data, _ = read_to_eof(conn.sock)  # an alert maybe, then the close
            assert b"HTTP/1." not in data
    server.stderr.wait_for(r"\[DEBUG\] TLS handshake with 127\.0\.0\.1 failed", 5)
    assert requests.get(https(server) + "/", verify=pki.ca, timeout=5).status_code == 200
    assert server.shard_pids() == shards
    assert "Traceback" not in server.stderr.text


def test_handshake_is_per_connection_and_bounded_by_header_timeout(gshard_proc, pki):
    # One shard: a client that connects and never starts its handshake must
    # hold neither the accept loop nor the other clients, and is cut off
    # after --header-timeout.
    server = gshard_proc("echo:app", "--shards", "1", "--header-timeout", "1", *tls_args(pki))
    silent = [Conn.tcp(server.port) for _ in range(3)]
    started = time.monotonic()
    for _ in range(3):
        response = requests.get(https(server) + "/", verify=pki.ca, timeout=5)
        assert response.status_code == 200
    assert time.monotonic() - started < 1.0
    for conn in silent:
        assert conn.wait_closed(timeout=4.0)
        conn.close()
    assert time.monotonic() - started < 4.0


def test_client_certificates_required(gshard_proc, pki):
    server = gshard_proc("echo:app", "--shards", "1",
                         *tls_args(pki, "--ca-certs", pki.ca, "--cert-reqs", "2"))
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(https(server) + "/", verify=pki.ca, timeout=5)
    response = requests.get(https(server) + "/", verify=pki.ca, cert=pki.client, timeout=5)
    assert response.status_code == 200
    # A certificate from another CA is refused too.
    stranger = trustme.CA().issue_cert("mallory@example.com")
    with stranger.private_key_and_cert_chain_pem.tempfile() as path, \
            pytest.raises(requests.exceptions.RequestException):
        requests.get(https(server) + "/", verify=pki.ca, cert=path, timeout=5)


def test_certificate_in_one_file_with_its_key(gshard_proc, pki, tmp_path):
    combined = tmp_path / "combined.pem"
    with open(pki.key, "rb") as key, open(pki.server, "rb") as cert:
        combined.write_bytes(key.read() + cert.read())
    server = gshard_proc("echo:app", "--shards", "1", "--certfile", str(combined))
    assert requests.get(https(server) + "/", verify=pki.ca, timeout=5).json()["url_scheme"] \
        == "https"


def test_missing_certificate_exits_2_before_binding(gshard_proc, pki):
    server = gshard_proc("echo:app", "--certfile", "/nonexistent/server.pem",
                         "--keyfile", pki.key, ready=False)
    assert server.wait() == 2
    lines = [line for line in server.stderr.text.splitlines() if line]
    assert lines == ["gshard: error: --certfile: no such file '/nonexistent/server.pem'"], lines


def test_certificate_that_does_not_load_is_one_boot_failure(gshard_proc, pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    server = gshard_proc("echo:app", "--shards", "3", "--certfile", str(garbage),
                         "--keyfile", pki.key, ready=False)
    assert server.wait() == 4
    text = server.stderr.text
    assert text.count("failed to boot") == 1, text
    assert "cannot load a certificate and its key from --certfile" in text
    assert "Traceback" not in text


def test_a_close_delimited_body_ends_with_a_closure_alert(gshard_proc, pki):
    """RFC 9112 9.8: a response with neither a length nor chunking is complete only
    if a TLS closure alert (close_notify) came before the close, and servers MUST
    attempt that exchange before closing; without it, a client that checks (the
    Conn's socket does not hide a ragged EOF) cannot tell the body from a truncation."""
    server = gshard_proc("streaming:app", "--shards", "1", *tls_args(pki))
    with TlsTransport(pki).connect(server) as conn:
        conn.send(request_bytes("GET", "/nolength", "HTTP/1.0"))
        response = conn.read_response()
        assert response.body == b"alpha,beta,gamma"
        assert conn.eof
        assert not conn.unclean_close, "the connection closed without a TLS closure alert"
