"""The sans-IO proxy rules: PROXY protocol headers, allow lists, forwarded headers.

PROXY headers are fed whole, followed by a request, and cut at every byte:
a valid beginning must only ever ask for more bytes, and a wrong byte must be
refused as soon as it is seen (the connection then reads no further).
"""

from __future__ import annotations

import ipaddress

import pytest

from gshard.errors import ProtocolError
from gshard.http.protocol import Request
from gshard.http.proxy import (
    MAX_HEADER,
    V1_MAX,
    V2_MAX_BLOCK,
    V2_SIGNATURE,
    AllowList,
    Forwarded,
    ProxyHeader,
    forwarded_client,
    forwarded_scheme,
    parse_proxy_header,
)
from gshard.http.wsgi import EMPTY_INPUT, base_environ, make_environ
from tests.support.paths import CORPUS_DIR, corpus_runner

run_corpus = corpus_runner()

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command: int, family: int, block: bytes, version: int = 2) -> bytes:
    return (V2_SIGNATURE + bytes([version << 4 | command, family])
            + len(block).to_bytes(2, "big") + block)


def v2_tcp4(source="192.168.1.10", destination="192.168.1.1", sport=12345, dport=443,
            tlvs=b"") -> bytes:
    block = (ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(destination).packed
             + sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + tlvs)
    return v2(1, 0x11, block)


def v2_tcp6(source="2001:db8::1", destination="2001:db8::2", sport=54321, dport=80) -> bytes:
    block = (ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address(destination).packed
             + sport.to_bytes(2, "big") + dport.to_bytes(2, "big"))
    return v2(1, 0x21, block)


LONGEST_TCP6 = (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
# The spec's worst case, 107 bytes.
LONGEST_V1 = LONGEST_TCP6.replace(b"TCP6", b"UNKNOWN")

VALID = {
    "v1-tcp4": (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", ("192.168.0.1", "56324")),
    "v1-tcp6": (b"PROXY TCP6 2001:db8::1 ::1 1 80\r\n", ("2001:db8::1", "1")),
    "v1-tcp6-mapped": (b"PROXY TCP6 ::ffff:10.0.0.1 ::1 0 80\r\n", ("::ffff:a00:1", "0")),
    "v1-unknown": (b"PROXY UNKNOWN\r\n", None),
    "v1-unknown-with-addresses": (b"PROXY UNKNOWN ::1 ::1 1 2\r\n", None),
    "v1-longest-tcp6": (LONGEST_TCP6, ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "65535")),
    "v1-longest": (LONGEST_V1, None),
    "v2-tcp4": (v2_tcp4(), ("192.168.1.10", "12345")),
    "v2-tcp4-tlvs": (v2_tcp4(tlvs=b"\x05\x00\x03abc" * 20), ("192.168.1.10", "12345")),
    "v2-tcp6": (v2_tcp6(), ("2001:db8::1", "54321")),
    "v2-local": (v2(0, 0x00, b""), None),
    "v2-local-with-addresses": (v2(0, 0x11, b"\x7f\x00\x00\x01" * 3), None),
    "v2-unspec": (v2(1, 0x00, b""), None),
    "v2-largest": (v2(1, 0x11, bytes(V2_MAX_BLOCK)), ("0.0.0.0", "0")),
}


def test_the_longest_v1_line_is_the_limit():
    assert len(LONGEST_V1) == V1_MAX


@pytest.mark.parametrize("name", VALID)
def test_valid_header_then_request(name):
    header, client = VALID[name]
    assert parse_proxy_header(header + REQUEST) == ProxyHeader(len(header), client)
    assert parse_proxy_header(header) == ProxyHeader(len(header), client)


@pytest.mark.parametrize("name", VALID)
def test_valid_header_truncated_at_every_byte_asks_for_more(name):
    header, _ = VALID[name]
    for cut in range(len(header)):
        assert parse_proxy_header(header[:cut]) is None, cut


@pytest.mark.parametrize("name", VALID)
def test_mode_restricts_the_version(name):
    header, client = VALID[name]
    own, other = ("v1", "v2") if name.startswith("v1") else ("v2", "v1")
    assert parse_proxy_header(header, own) == ProxyHeader(len(header), client)
    with pytest.raises(ProtocolError):
        parse_proxy_header(header, other)


def first_refused_at(data: bytes, mode: str = "auto") -> int:
    """How many bytes it takes to refuse ``data``; fails if it is never refused."""
    for end in range(1, len(data) + 1):
        try:
            parse_proxy_header(data[:end], mode)
        except ProtocolError as exc:
            assert exc.status == 400
            return end
    raise AssertionError(f"{data!r} was not refused")


INVALID = {
    # (bytes, how many of them it takes to refuse; None: all of them, since a
    # v1 line is judged when its CRLF is in)
    "plain-http": (REQUEST, 1),
    "empty-line": (b"\r\nGET / HTTP/1.1\r\n", 3),
    "lower-case": (b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", 1),
    "prefix-typo": (b"PROXZ TCP4 1.2.3.4 1.2.3.4 1 2\r\n", 5),
    "no-space": (b"PROXYTCP4 1.2.3.4 1.2.3.4 1 2\r\n", 6),
    "v1-bare-lf": (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", None),
    "v1-bare-cr": (b"PROXY TCP4 1.2.3.4\r1.2.3.4 1 2\r\n", 20),
    "v1-too-long": (b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n", V1_MAX),
    "v1-family": (b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", None),
    "v1-fields": (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", None),
    "v1-extra-field": (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", None),
    "v1-double-space": (b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", None),
    "v1-v6-in-tcp4": (b"PROXY TCP4 ::1 ::1 1 2\r\n", None),
    "v1-v4-in-tcp6": (b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n", None),
    "v1-leading-zero": (b"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", None),
    "v1-scope": (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", None),
    "v1-port-range": (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", None),
    "v1-port-sign": (b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n", None),
    "v1-port-text": (b"PROXY TCP4 1.2.3.4 1.2.3.4 65iii 100000\r\n", None),
    "v1-non-ascii": ("PROXY TCP4 1.2.3.4 1.2.3.4 1 ٢\r\n".encode(), None),
    "v2-signature": (V2_SIGNATURE[:11] + b"X" + v2_tcp4()[12:], 12),
    "v2-version-1": (v2(1, 0x11, bytes(12), version=1), 16),
    "v2-command": (v2(2, 0x11, bytes(12)), 16),
    "v2-udp": (v2(1, 0x12, bytes(12)), 16),
    "v2-unix": (v2(1, 0x31, bytes(216)), 16),
    "v2-short-tcp4": (v2(1, 0x11, bytes(11)), 16),
    "v2-short-tcp6": (v2(1, 0x21, bytes(35)), 16),
    "v2-oversized": (v2(1, 0x11, bytes(V2_MAX_BLOCK + 1)), 16),
    "v2-oversized-local": (v2(0, 0x00, bytes(65535)), 16),
}


@pytest.mark.parametrize("name", INVALID)
def test_invalid_header_is_refused_at_the_first_wrong_byte(name):
    data, at = INVALID[name]
    at = len(data) if at is None else at
    assert first_refused_at(data) == at
    for cut in range(at):
        assert parse_proxy_header(data[:cut]) is None, cut


def test_a_header_never_needs_more_than_max_header_bytes():
    # The connection peeks MAX_HEADER bytes: enough for any header it accepts.
    assert parse_proxy_header(v2(1, 0x11, bytes(V2_MAX_BLOCK)) + REQUEST).length == MAX_HEADER
    assert V1_MAX < MAX_HEADER


def test_unknown_mode_is_a_programming_error():
    with pytest.raises(ValueError):
        parse_proxy_header(b"PROXY", "v3")


# The shared corpus's PROXY cases (gunicorn's), through the parser alone.
PP_CASES = [c for c in run_corpus.load_corpus(str(CORPUS_DIR / "gunicorn"))
            if c.name.split("/")[1].startswith("pp_")]


def test_corpus_has_proxy_cases():
    assert len(PP_CASES) >= 8


@pytest.mark.parametrize("case", PP_CASES, ids=lambda c: c.name)
def test_corpus_proxy_cases(case):
    if case.kind == "invalid":
        first_refused_at(case.data)
    elif case.name == "valid/pp_03":
        # gunicorn serves a connection without a header even with the protocol
        # on; gshard refuses it (the protocol forbids guessing: see proxy.py).
        with pytest.raises(ProtocolError):
            parse_proxy_header(case.data)
    else:
        header = parse_proxy_header(case.data)
        assert header is not None and header.client is not None
        assert case.data[header.length:].startswith(case.requests[0].method.encode() + b" ")


# --- allow lists ---------------------------------------------------------------------


def test_allow_list_addresses_and_networks():
    allowed = AllowList(["127.0.0.1", "::1", "10.0.0.0/8", "2001:db8::/32"])
    for peer in ("127.0.0.1", "::1", "10.1.2.3", "2001:db8::99", "::ffff:127.0.0.1",
                 "::ffff:10.9.9.9"):
        assert allowed.allows(peer), peer
    for peer in ("127.0.0.2", "11.0.0.1", "2001:db9::1", "::2", "not-an-address"):
        assert not allowed.allows(peer), peer
    # Memoised verdicts stay right.
    assert allowed.allows("10.1.2.3") and not allowed.allows("11.0.0.1")


def test_allow_list_star_and_unix_peers():
    assert AllowList(["*"]).allows("203.0.113.9")
    assert not AllowList(["*"]).lists("203.0.113.9")  # "*" trusts peers, names no proxy
    assert AllowList(["10.0.0.1"]).allows("")  # unix socket peer, as in gunicorn
    assert not AllowList([]).allows("127.0.0.1")


# --- forwarded headers -------------------------------------------------------------------

SCHEMES = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}


@pytest.mark.parametrize(
    ("headers", "scheme"),
    [
        ([], None),
        ([("HOST", "x")], None),
        ([("X-FORWARDED-PROTO", "https")], "https"),
        ([("X-FORWARDED-PROTO", "http")], "http"),
        ([("X-FORWARDED-PROTO", "HTTPS")], "http"),  # values compare exactly, as in gunicorn
        ([("X-FORWARDED-SSL", "on"), ("X-FORWARDED-PROTOCOL", "ssl")], "https"),
        ([("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-PROTO", "https")], "https"),
    ],
)
def test_forwarded_scheme(headers, scheme):
    assert forwarded_scheme(headers, SCHEMES) == scheme


@pytest.mark.parametrize(
    "headers",
    [
        [("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-SSL", "off")],
        [("X-FORWARDED-SSL", "on"), ("X-FORWARDED-PROTO", "http")],
        [("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-PROTO", "http")],
    ],
)
def test_conflicting_scheme_headers_are_refused(headers):
    with pytest.raises(ProtocolError) as info:
        forwarded_scheme(headers, SCHEMES)
    assert info.value.status == 400


PROXIES = AllowList(["127.0.0.1", "10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("value", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7, 10.0.0.2", "203.0.113.7"),
        ("203.0.113.7,10.0.0.2,127.0.0.1", "203.0.113.7"),
        # A client prepending addresses does not change what the proxy appended.
        ("1.1.1.1, 127.0.0.1, 203.0.113.7", "203.0.113.7"),
        ("127.0.0.1, 10.0.0.3", "127.0.0.1"),  # every hop a proxy: the leftmost
        ("[2001:db8::7]:4711, ::1", "2001:db8::7"),
        ("2001:db8::7", "2001:db8::7"),
        ("203.0.113.7:4711", "203.0.113.7"),
        ("203.0.113.7, , 10.0.0.2", "203.0.113.7"),
        ("unknown, 10.0.0.2", None),  # no address where the client should be
        ("203.0.113.7, garbage", None),
        ("", None),
    ],
)
def test_forwarded_client(value, client):
    assert forwarded_client(value, PROXIES) == client


def test_forwarded_client_with_star_takes_the_rightmost():
    assert forwarded_client("1.1.1.1, 203.0.113.7", AllowList(["*"])) == "203.0.113.7"


def environ_for(headers, **extra):
    """The environ the server builds for a GET with these (parsed) headers."""
    request = Request("GET", "/", "HTTP/1.1", tuple(headers), None, False, True, False)
    base = base_environ("127.0.0.1", "8000", "http", False)
    environ = make_environ(request, base, EMPTY_INPUT, ("127.0.0.1", "5000"))
    environ.update(extra)
    return environ


def test_apply_sets_scheme_and_client():
    forwarded = Forwarded(PROXIES, SCHEMES.items())
    headers = [("X-FORWARDED-FOR", "203.0.113.7"), ("X-FORWARDED-PROTO", "https")]
    environ = environ_for(headers)
    forwarded.apply(environ, headers)
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["HTTPS"] == "on"
    assert environ["REMOTE_ADDR"] == "203.0.113.7"
    assert environ["REMOTE_PORT"] == "5000"
    assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"  # still there for the app


def test_apply_http_scheme_on_a_tls_listener():
    forwarded = Forwarded(PROXIES, SCHEMES.items())
    headers = [("X-FORWARDED-PROTO", "http")]
    environ = environ_for(headers, **{"wsgi.url_scheme": "https", "HTTPS": "on"})
    forwarded.apply(environ, headers)
    assert environ["wsgi.url_scheme"] == "http"
    assert "HTTPS" not in environ


def test_apply_repeated_forwarded_for_lines_form_one_list():
    forwarded = Forwarded(PROXIES, SCHEMES.items())
    headers = [("X-FORWARDED-FOR", "1.1.1.1"), ("X-FORWARDED-FOR", "203.0.113.7, 10.0.0.2")]
    environ = environ_for(headers)
    forwarded.apply(environ, headers)
    assert environ["REMOTE_ADDR"] == "203.0.113.7"


def test_apply_without_forwarded_headers_does_not_read_them():
    class Untouchable:
        def __iter__(self):
            raise AssertionError("headers read without a forwarded header present")

    environ = environ_for([("HOST", "x")])
    before = dict(environ)
    Forwarded(PROXIES, SCHEMES.items()).apply(environ, Untouchable())
    assert environ == before


def test_apply_custom_scheme_headers():
    forwarded = Forwarded(PROXIES, [("X-SCHEME", "https")])
    headers = [("X-SCHEME", "https"), ("X-FORWARDED-PROTO", "http")]
    environ = environ_for(headers)
    forwarded.apply(environ, headers)
    assert environ["wsgi.url_scheme"] == "https"  # only the configured header counts
