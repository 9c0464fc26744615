"""Who the client really is, when a proxy in front says so: sans-IO.

A proxy hides the client's address (the socket's peer is the proxy) and
whether the client spoke HTTPS. It can tell in two ways, and gshard believes
either only from peers on an allow list, since anyone else could claim any
address:

* the PROXY protocol (HAProxy's v1 text line or v2 binary header), written
  before the client's first byte; ``parse_proxy_header`` reads it from the
  bytes received so far (``--proxy-protocol``, ``--proxy-allow-from``);
* headers in each request: gunicorn's ``secure_scheme_headers`` set
  ``wsgi.url_scheme``, and ``X-Forwarded-For`` sets ``REMOTE_ADDR``
  (``--forwarded-allow-ips``).

Nothing here touches a socket or a clock: bytes and strings in, answers out,
so every rule is tested by feeding bytes, cut anywhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gshard.errors import ProtocolError

# --- allow lists -----------------------------------------------------------------

# Distinct peers whose verdict is remembered; past it the memo starts over.
_MEMO_SIZE = 4096


class AllowList:
    """Addresses and networks allowed to speak for clients, or ``*`` for any peer.

    A peer is judged once per connection; the verdicts are memoised because
    parsing an address costs more than the rest of accepting a connection,
    and most connections come from a few proxies.
    """

    __slots__ = ("_memo", "any", "networks")

    def __init__(self, entries: Iterable[str]) -> None:
        entries = tuple(entries)
        self.any = "*" in entries
        self.networks = tuple(ipaddress.ip_network(e) for e in entries if e != "*")
        self._memo: dict[str, bool] = {}

    def allows(self, peer: str) -> bool:
        """Whether a connection from ``peer`` may speak for clients.

        ``peer`` is the address string the socket reports; ``""`` is a unix
        socket peer, which is allowed, as in gunicorn (only local processes
        can connect, and the socket's permissions say which).
        """
        if self.any or not peer:
            return True
        known = self._memo.get(peer)
        if known is None:
            known = self.lists(peer)
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[peer] = known
        return known

    def lists(self, address: str) -> bool:
        """Whether ``address`` is in one of the listed networks (``*`` does not count).

        An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4
        peer) matches the IPv4 networks too.
        """
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        return any(ip in net or (mapped is not None and mapped in net) for net in self.networks)


# --- the PROXY protocol (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt) ---

V1_PREFIX = b"PROXY "
# The longest v1 line, CRLF included ("PROXY TCP6" with two full IPv6 addresses).
V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# A v2 header is 16 bytes and an address block of up to 65535 bytes (addresses,
# then TLVs). Real proxies send a few hundred at most; past this, refuse.
V2_MAX_BLOCK = 2048
# The most bytes a header can take: how much to look at before deciding.
MAX_HEADER = 16 + V2_MAX_BLOCK

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_V2_UNSPEC, _V2_TCP4, _V2_TCP6 = 0x00, 0x11, 0x21
_MODES = ("v1", "v2", "auto")


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete PROXY header at the start of a connection.

    ``length`` is how many bytes it takes (the request starts right after);
    ``client`` is the (address, port) it reports, or ``None`` when it reports
    none (v2 LOCAL, a proxy's own health check; v1 UNKNOWN; v2 UNSPEC), in
    which case the socket's peer stands.
    """

    length: int
    client: tuple[str, str] | None


def parse_proxy_header(data: bytes, mode: str = "auto") -> ProxyHeader | None:
    """The PROXY header ``data`` starts with; ``None`` if more bytes are needed.

    ``mode`` is ``v1``, ``v2`` or ``auto`` (either). ``None`` is returned only
    while ``data`` is a valid beginning of a header, so every byte seen so far
    belongs to the header; anything else raises ``ProtocolError`` (400) as
    soon as the first wrong byte is seen. A connection without a header is
    refused, as the protocol requires: guessing whether one is there would let
    a client send its own through a proxy that does not add one.
    """
    if mode not in _MODES:
        raise ValueError(f"unknown PROXY protocol mode {mode!r}")
    if not data:
        return None
    if mode != "v1" and data[0] == 0x0D:
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProtocolError("malformed PROXY protocol v2 signature")
        return _parse_v2(data)
    if mode != "v2" and data[0] == 0x50:  # "P"
        if not V1_PREFIX.startswith(data[:6]):
            raise ProtocolError("malformed PROXY protocol v1 line")
        return _parse_v1(data)
    expected = "v1 or v2" if mode == "auto" else mode
    raise ProtocolError(f"the connection does not start with a PROXY protocol {expected} header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end == -1:
        seen = data[:V1_MAX]
        if len(data) >= V1_MAX:
            raise ProtocolError(f"PROXY protocol v1 line longer than {V1_MAX} bytes")
        if b"\n" in seen or b"\r" in seen[:-1]:
            raise ProtocolError("PROXY protocol v1 line not ended by CRLF")
        return None
    try:
        parts = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProtocolError("non-ASCII PROXY protocol v1 line") from None
    if parts[1:2] == ["UNKNOWN"]:
        return ProxyHeader(end + 2, None)  # the receiver must ignore the rest of the line
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProtocolError(f"malformed PROXY protocol v1 line {data[:end][:64]!r}")
    _, family, source, _destination, source_port, destination_port = parts
    address_type = ipaddress.IPv4Address if family == "TCP4" else ipaddress.IPv6Address
    for text in (source, _destination):
        _check_address(text, address_type)
    for text in (source_port, destination_port):
        if not (text.isdigit() and text.isascii() and len(text) <= 5 and int(text) <= 65535):
            raise ProtocolError(f"invalid port {text[:8]!r} in PROXY protocol v1 line")
    client = str(address_type(source)), str(int(source_port))
    return ProxyHeader(end + 2, client)


def _check_address(text: str, address_type: Any) -> None:
    try:
        if "%" in text:  # a scope id is no address a client can have
            raise ValueError
        address_type(text)
    except ValueError:
        raise ProtocolError(f"invalid address {text[:48]!r} in PROXY protocol v1 line") from None


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    family = data[13]
    block_length = int.from_bytes(data[14:16], "big")
    if version != 2:
        raise ProtocolError(f"PROXY protocol v2 header with version {version}")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProtocolError(f"PROXY protocol v2 command {command} unknown")
    if block_length > V2_MAX_BLOCK:
        raise ProtocolError(f"PROXY protocol v2 address block of {block_length} bytes "
                            f"(more than {V2_MAX_BLOCK})")
    if command == _V2_PROXY:
        needed = {_V2_UNSPEC: 0, _V2_TCP4: 12, _V2_TCP6: 36}.get(family)
        if needed is None:
            raise ProtocolError(f"PROXY protocol v2 family/transport 0x{family:02x} not served "
                                "(TCP over IPv4 or IPv6 only)")
        if block_length < needed:
            raise ProtocolError("PROXY protocol v2 address block too short for its family")
    total = 16 + block_length
    if len(data) < total:
        return None
    if command == _V2_LOCAL or family == _V2_UNSPEC:
        return ProxyHeader(total, None)
    size = 4 if family == _V2_TCP4 else 16
    address = ipaddress.ip_address(data[16 : 16 + size])
    port = int.from_bytes(data[16 + 2 * size : 18 + 2 * size], "big")
    return ProxyHeader(total, (str(address), str(port)))


@dataclass(frozen=True)
class ProxyProtocol:
    """``--proxy-protocol`` on a listener: which versions, and from which peers."""

    mode: str
    allowed: AllowList


# --- forwarded headers ---------------------------------------------------------------

_FORWARDED_FOR = "HTTP_X_FORWARDED_FOR"


class Forwarded:
    """What a trusted peer's forwarded headers change in an environ.

    Made once per shard; ``apply`` is called only for connections whose peer
    ``trusted`` allows, and returns at once when the request carries none of
    the headers, which is the common case.
    """

    __slots__ = ("_keys", "scheme_headers", "trusted")

    def __init__(self, trusted: AllowList, scheme_headers: Iterable[tuple[str, str]]) -> None:
        self.trusted = trusted
        self.scheme_headers = dict(scheme_headers)
        # The environ keys of the headers, to tell cheaply whether any is there.
        self._keys = (
            _FORWARDED_FOR, *("HTTP_" + name.replace("-", "_") for name in self.scheme_headers)
        )

    def apply(self, environ: dict[str, Any], headers: Iterable[tuple[str, str]]) -> None:
        """Set ``wsgi.url_scheme``/``HTTPS`` and ``REMOTE_ADDR`` from the request's headers.

        ``headers`` are the request's (UPPER-CASE name, value) pairs; they are
        read only when the environ shows that one of the headers is present.
        Raises ``ProtocolError`` (400) when the scheme headers disagree.
        """
        for key in self._keys:
            if key in environ:
                break
        else:
            return
        scheme = forwarded_scheme(headers, self.scheme_headers)
        if scheme is not None:
            environ["wsgi.url_scheme"] = scheme
            if scheme == "https":
                environ["HTTPS"] = "on"
            else:
                environ.pop("HTTPS", None)
        forwarded_for = environ.get(_FORWARDED_FOR)
        if forwarded_for is not None:
            client = forwarded_client(forwarded_for, self.trusted)
            if client is not None:
                environ["REMOTE_ADDR"] = client


def forwarded_scheme(
    headers: Iterable[tuple[str, str]], scheme_headers: dict[str, str]
) -> str | None:
    """``https`` or ``http`` as the scheme headers say, or ``None`` if none is present.

    gunicorn's rule: each header present says https when its value is exactly
    the configured one, http otherwise; headers that disagree (``X-Forwarded-
    Proto: http`` beside ``X-Forwarded-Ssl: on``) are refused with 400, since
    one of them was not written by the proxy.
    """
    scheme = None
    for name, value in headers:
        expected = scheme_headers.get(name)
        if expected is None:
            continue
        said = "https" if value == expected else "http"
        if scheme is None:
            scheme = said
        elif said != scheme:
            raise ProtocolError("the forwarded scheme headers disagree", 400)
    return scheme


def forwarded_client(value: str, trusted: AllowList) -> str | None:
    """The client address in an ``X-Forwarded-For`` value, or ``None`` to keep the peer's.

    Each proxy appends the address it received the request from, so only the
    right end of the list is written by proxies; a client can put anything
    at the left. The list is walked from the right past the addresses that
    are themselves trusted proxies, and the first other address is the
    client: prepending addresses cannot change it. If every address is a
    trusted proxy the leftmost is taken. ``*`` in the allow list trusts any
    peer but names no proxy, so the rightmost address is taken. An entry that
    is not an address where the client should be leaves ``REMOTE_ADDR`` alone.
    """
    client = None
    for item in reversed(value.split(",")):
        item = item.strip()
        if not item:
            continue
        address = _hop_address(item)
        if address is None:
            return None
        client = address
        if not trusted.lists(address):
            return address
    return client


def _hop_address(item: str) -> str | None:
    """The address of one ``X-Forwarded-For`` entry (``1.2.3.4``, ``[::1]:80``, ``1.2.3.4:80``)."""
    if item[0] == "[":
        item = item[1:].partition("]")[0]
    elif item.count(":") == 1:
        item = item.partition(":")[0]
    try:
        return str(ipaddress.ip_address(item))
    except ValueError:
        return None
