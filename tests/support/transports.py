"""The ways a client reaches gshard, for behaviour suites run once per transport.

waitress runs its functional tests as behaviour mixins crossed with transports;
here a suite takes the ``transport`` fixture (``tests/integration/conftest.py``)
and is run once for each of ``TRANSPORTS``:

* ``tcp``: plain HTTP on a loopback port;
* ``unix``: plain HTTP on a unix socket (``--bind unix:PATH``);
* ``tls``: HTTPS (``--certfile``/``--keyfile``), the client verifying the
  server against a CA made for the test run (``Pki``);
* ``proxy``: ``--proxy-protocol v1``, each connection opening with a
  ``PROXY TCP4`` line that names another client, as a TCP load balancer's do.

A ``Transport`` knows the arguments that make a server listen its way and
opens connections that are ready for HTTP (the handshake done, the PROXY line
sent), so a test writes its requests and reads its responses with the same
``rawhttp.Conn`` whatever is under it, and sees the bytes.
"""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass

from tests.support.processes import Server
from tests.support.rawhttp import DEFAULT_TIMEOUT, Conn, Response, request_bytes

TRANSPORTS = ("tcp", "unix", "tls", "proxy")

# The client the proxy transport's PROXY lines name (TEST-NET-3).
PROXIED_CLIENT = "203.0.113.7"


@dataclass(frozen=True)
class Pki:
    """Files of a throwaway CA: its certificate, a server certificate (127.0.0.1,
    localhost) with its key, and a client certificate with its key in one file."""

    ca: str
    server: str
    key: str
    client: str


def make_pki(directory: str | os.PathLike) -> Pki:
    """A fresh CA and certificates (trustme), written into ``directory``."""
    import trustme  # a test dependency; callers skip when it is missing

    files = {name: os.path.join(directory, f"{name}.pem")
             for name in ("ca", "server", "key", "client")}
    ca = trustme.CA()
    ca.cert_pem.write_to_path(files["ca"])
    issued = ca.issue_cert("127.0.0.1", "localhost")
    issued.cert_chain_pems[0].write_to_path(files["server"])
    for pem in issued.cert_chain_pems[1:]:
        pem.write_to_path(files["server"], append=True)
    issued.private_key_pem.write_to_path(files["key"])
    ca.issue_cert("client@example.com").private_key_and_cert_chain_pem.write_to_path(
        files["client"])
    return Pki(**files)


class Transport:
    """How a client reaches a server: plain TCP; subclasses change one thing each."""

    name = "tcp"
    scheme = "http"  # wsgi.url_scheme, as the application sees it
    client_addr = "127.0.0.1"  # REMOTE_ADDR, as the application sees it

    def server_args(self, workdir: str) -> tuple[str, ...]:
        """The ``gshard`` arguments for this transport; ``workdir`` is a short
        private folder the server may keep files in (a unix socket)."""
        return ("--bind", "127.0.0.1:0")

    def connect(self, server: Server, timeout: float = DEFAULT_TIMEOUT) -> Conn:
        """A connection to ``server``, ready for its first request."""
        return Conn.tcp(server.port, timeout=timeout)

    def request(self, server: Server, method: str = "GET", path: str = "/", *,
                headers: tuple[tuple[str, str], ...] = (), body: bytes = b"",
                timeout: float = DEFAULT_TIMEOUT) -> Response:
        """One request on a connection of its own (``Connection: close``), and its
        response: for the tests' simple checks that a server still serves."""
        with self.connect(server, timeout=timeout) as conn:
            conn.send(request_bytes(method, path, headers=(("Connection", "close"), *headers),
                                    body=body))
            return conn.read_response(method, timeout=timeout)

    def __repr__(self) -> str:
        return f"<{self.name} transport>"


class UnixTransport(Transport):
    """HTTP on a unix socket; the application sees no client address."""

    name = "unix"
    client_addr = ""

    def server_args(self, workdir: str) -> tuple[str, ...]:
        return ("--bind", f"unix:{os.path.join(workdir, 'gshard.sock')}")

    def connect(self, server: Server, timeout: float = DEFAULT_TIMEOUT) -> Conn:
        assert server.unix_path, f"{server} does not listen on a unix socket"
        return Conn.unix(server.unix_path, timeout=timeout)


class TlsTransport(Transport):
    """HTTPS, verified against the test CA: every byte goes through the encryption."""

    name = "tls"
    scheme = "https"

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.context = ssl.create_default_context(cafile=pki.ca)

    def server_args(self, workdir: str) -> tuple[str, ...]:
        return (*super().server_args(workdir), "--certfile", self.pki.server,
                "--keyfile", self.pki.key)

    def connect(self, server: Server, timeout: float = DEFAULT_TIMEOUT) -> Conn:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            # Ragged EOFs are not hidden: the Conn records one (unclean_close).
            tls = self.context.wrap_socket(raw, server_hostname="127.0.0.1",
                                           suppress_ragged_eofs=False)
            return Conn(tls, timeout)
        except BaseException:
            raw.close()
            raise


class ProxyTransport(Transport):
    """The PROXY protocol (v1): each connection first names the client it carries."""

    name = "proxy"
    client_addr = PROXIED_CLIENT

    def server_args(self, workdir: str) -> tuple[str, ...]:
        return (*super().server_args(workdir), "--proxy-protocol", "v1")

    def connect(self, server: Server, timeout: float = DEFAULT_TIMEOUT) -> Conn:
        conn = super().connect(server, timeout)
        # The client's port is this connection's own, so each is told apart.
        port = conn.sock.getsockname()[1]
        conn.send(f"PROXY TCP4 {PROXIED_CLIENT} 127.0.0.1 {port} {server.port}\r\n".encode())
        return conn


def make_transport(name: str, pki: Pki | None = None) -> Transport:
    """The transport called ``name`` (one of ``TRANSPORTS``); ``tls`` needs ``pki``."""
    if name == "tls":
        assert pki is not None, "the tls transport needs certificates"
        return TlsTransport(pki)
    return {"tcp": Transport, "unix": UnixTransport, "proxy": ProxyTransport}[name]()
