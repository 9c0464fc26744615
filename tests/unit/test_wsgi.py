"""PEP 3333 without sockets: the environ, start_response checks and wsgi.input."""

from __future__ import annotations

import io
import sys
from wsgiref.validate import validator

import pytest

from gshard.http import wsgi
from gshard.http.protocol import Limits, ServerConnection, parse_head
from gshard.http.response import ResponseWriter
from gshard.http.wsgi import (
    EMPTY_INPUT,
    FileWrapper,
    InputStream,
    ResponseStart,
    base_environ,
    make_environ,
    split_target,
)

REMOTE = ("192.0.2.7", "51234")


def request_of(*lines: str):
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return parse_head(head, Limits())


def environ_of(*lines: str, wsgi_input=EMPTY_INPUT):
    base = base_environ("localhost", "8000", "http", multiprocess=True)
    return make_environ(request_of(*lines), base, wsgi_input, REMOTE)


# --- environ --------------------------------------------------------------------


def test_required_keys():
    env = environ_of(
        "POST /app/x?a=1&b=2 HTTP/1.1",
        "Host: example.com",
        "Content-Type: text/plain",
        "Content-Length: 3",
    )
    cgi = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/app/x",
        "QUERY_STRING": "a=1&b=2",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "3",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "RAW_URI": "/app/x?a=1&b=2",
        "REMOTE_ADDR": "192.0.2.7",
        "REMOTE_PORT": "51234",
        "HTTP_HOST": "example.com",
    }
    for key, value in cgi.items():
        assert env[key] == value, key
        assert type(env[key]) is str, key
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input"] is EMPTY_INPUT
    assert env["wsgi.errors"] is sys.stderr
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_no_body_no_content_keys():
    env = environ_of("GET / HTTP/1.1", "Host: h")
    assert "CONTENT_LENGTH" not in env
    assert "CONTENT_TYPE" not in env
    assert env["QUERY_STRING"] == ""


def test_environ_does_not_leak_into_the_base():
    base = base_environ("localhost", "8000", "https", multiprocess=False)
    snapshot = dict(base)
    env = make_environ(request_of("GET /x HTTP/1.1", "Host: h"), base, EMPTY_INPUT, REMOTE)
    assert base == snapshot
    assert env["wsgi.url_scheme"] == "https"
    assert env["wsgi.multiprocess"] is False


def test_path_info_is_percent_decoded_latin1():
    env = environ_of("GET /caf%C3%A9/a%20b%2Fc?q=%20x HTTP/1.1", "Host: h")
    # The UTF-8 bytes of "café", each as one latin-1 character (PEP 3333).
    assert env["PATH_INFO"] == "/caf\xc3\xa9/a b/c"
    assert env["PATH_INFO"].encode("latin-1") == "/café/a b/c".encode()
    assert env["QUERY_STRING"] == "q=%20x"  # kept raw
    assert env["RAW_URI"] == "/caf%C3%A9/a%20b%2Fc?q=%20x"


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("http://example.com/a/b?x=1", "/a/b", "x=1"),
        ("HTTPS://example.com:8443/a", "/a", ""),
        ("http://user:pw@example.com/p?q", "/p", "q"),
        ("http://[::1]:8080/v6?z=1", "/v6", "z=1"),
        ("http://example.com", "/", ""),
        ("http://example.com?x=/y", "/", "x=/y"),
        ("/path#frag", "/path", ""),
        ("/path?q=1#frag", "/path", "q=1"),
        ("http://example.com/p?q=1#frag", "/p", "q=1"),
        ("//double/slash?x", "//double/slash", "x"),
    ],
)
def test_target_forms(target, path, query):
    env = environ_of(f"GET {target} HTTP/1.1", "Host: h")
    assert env["PATH_INFO"] == path
    assert env["QUERY_STRING"] == query
    assert env["RAW_URI"] == target


def test_asterisk_target_has_empty_path():
    assert split_target("*") == ("", "")


def test_repeated_headers_are_joined():
    env = environ_of(
        "GET / HTTP/1.1",
        "Host: h",
        "Accept: text/html",
        "Cookie: a=1",
        "Accept: text/plain",
        "Cookie: b=2",
        "X-Forwarded-For: 10.0.0.1",
        "X-Forwarded-For: 10.0.0.2",
    )
    assert env["HTTP_ACCEPT"] == "text/html,text/plain"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1,10.0.0.2"


def test_underscore_headers_cannot_spoof_dash_headers():
    env = environ_of("GET / HTTP/1.1", "Host: h", "X_Auth_User: admin", "X-Auth-User: bob")
    assert env["HTTP_X_AUTH_USER"] == "bob"


# --- running an application under wsgiref's validator ---------------------------------


def serve(app, raw_request: bytes, pieces=()):
    """Run ``app`` for one request as a connection would, without a socket.

    Returns (ResponseStart, the response bytes as framed on the wire).
    """
    conn = ServerConnection()
    conn.receive_data(raw_request)
    request = conn.next_event()
    body = iter(pieces)
    stream = InputStream(lambda: next(body, b""))
    environ = make_environ(request, base_environ("localhost", "80", "http", True), stream, REMOTE)
    out = []
    start = ResponseStart(out.append)

    result = app(environ, start)
    try:
        for chunk in result:
            out.append(chunk)
    finally:
        if hasattr(result, "close"):
            result.close()
    writer = ResponseWriter(conn)
    wire = writer.head(start.status, start.headers, start.content_length)
    wire += b"".join(writer.data(chunk) for chunk in out) + writer.end()
    return start, wire


def echo_app(environ, start_response):
    # The validator allows read() only with a size.
    body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
    assert environ["wsgi.input"].readlines() == []  # at the end: nothing more
    text = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {len(body)}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    return [text]


def test_app_passes_wsgiref_validator():
    raw = b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n"
    start, wire = serve(validator(echo_app), raw, [b"hello", b" world"])
    assert start.status == "200 OK"
    assert start.content_length == len(b"POST /echo 11\n")
    assert wire.startswith(b"HTTP/1.1 200 OK\r\n")
    assert wire.endswith(b"\r\n\r\nPOST /echo 11\n")


def test_streaming_app_without_length_is_chunked_under_validator():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a", b"", b"bc"])

    start, wire = serve(validator(app), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert start.content_length is None
    assert wire.endswith(b"\r\n\r\n1\r\na\r\n2\r\nbc\r\n0\r\n\r\n")


# --- start_response -----------------------------------------------------------------


def test_start_response_records_the_response():
    writes = []
    start = ResponseStart(writes.append)
    write = start(
        "201 Created",
        [("Content-Length", "4"), ("Date", "x"), ("Server", "app"), ("X-A", "1")],
    )
    assert start.status == "201 Created"
    assert start.content_length == 4
    assert start.has_date and start.has_server
    assert not start.close
    write(b"data")
    assert writes == [b"data"]


def test_second_call_without_exc_info_raises():
    start = ResponseStart(lambda data: None)
    start("200 OK", [])
    with pytest.raises(AssertionError):
        start("500 Internal Server Error", [])
    assert start.status == "200 OK"


def test_exc_info_before_headers_sent_replaces_the_response():
    start = ResponseStart(lambda data: None)
    start("200 OK", [("Content-Length", "10"), ("X-A", "1")])
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        start("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
    assert start.status == "500 Internal Server Error"
    assert start.headers == [("Content-Type", "text/plain")]
    assert start.content_length is None  # the old length no longer applies


def test_exc_info_after_headers_sent_reraises_it():
    start = ResponseStart(lambda data: None)
    start("200 OK", [])
    start.headers_sent = True
    error = RuntimeError("boom")
    try:
        raise error
    except RuntimeError:
        info = sys.exc_info()
    with pytest.raises(RuntimeError) as raised:
        start("500 Internal Server Error", [], info)
    assert raised.value is error
    assert start.status == "200 OK"


@pytest.mark.parametrize(
    "header",
    [
        ("X-A", "a\r\nSet-Cookie: evil=1"),
        ("X-A", "a\nb"),
        ("X-A", "a\rb"),
        ("X-A", "a\x00b"),
        ("X-A", "a\x7fb"),
        ("X-A\r\nX-B", "b"),
        ("X-A\n", "b"),
        ("X-A\x00", "b"),
        ("X A", "b"),
        ("X-A:", "b"),
        ("", "b"),
        ("X-A", "\u20ac"),  # not latin-1
        ("Content-Length", "abc"),
        ("Content-Length", "-1"),
        ("Content-Length", "\xb2"),  # a digit to str.isdigit, not to HTTP
    ],
)
def test_forbidden_characters_raise_value_error(header):
    with pytest.raises(ValueError):
        ResponseStart(lambda data: None)("200 OK", [header])


def test_latin1_value_is_accepted():
    start = ResponseStart(lambda data: None)
    start("200 OK", [("X-A", "caf\xe9\tok")])
    assert start.headers == [("X-A", "caf\xe9\tok")]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X-A", "1")],
        [("X-A", b"1")],
        [("X-A", 1)],
        [["X-A", "1"]],
        [("X-A", "1", "2")],
        (("X-A", "1"),),
    ],
)
def test_non_native_strings_raise_type_error(headers):
    with pytest.raises(TypeError):
        ResponseStart(lambda data: None)("200 OK", headers)


def test_conflicting_content_lengths_raise():
    with pytest.raises(ValueError):
        ResponseStart(lambda data: None)(
            "200 OK", [("Content-Length", "1"), ("Content-Length", "2")]
        )


@pytest.mark.parametrize(
    "name",
    ["Transfer-Encoding", "keep-alive", "Upgrade", "TE", "Trailer", "Proxy-Authenticate"],
)
def test_hop_by_hop_headers_are_refused(name):
    with pytest.raises(ValueError):
        ResponseStart(lambda data: None)("200 OK", [(name, "x")])


def test_fields_mean_the_same_on_every_response():
    # Validated fields are remembered; what they tell the server must not change.
    fields = [("Content-Length", "5"), ("Connection", "close"), ("Date", "x"), ("Server", "y")]
    for _ in range(3):
        start = ResponseStart(lambda data: None)
        start("200 OK", list(fields))
        assert (start.content_length, start.close, start.has_date, start.has_server) == (
            5, True, True, True
        )
        assert start.headers == [("Content-Length", "5"), ("Date", "x"), ("Server", "y")]


def test_refused_fields_are_refused_every_time():
    for _ in range(3):
        with pytest.raises(ValueError):
            ResponseStart(lambda data: None)("200 OK", [("X-A", "b\r\nSet-Cookie: c")])
        with pytest.raises(ValueError):
            ResponseStart(lambda data: None)(
                "200 OK", [("Content-Length", "1"), ("Content-Length", "2")]
            )


def test_remembered_fields_and_statuses_stay_bounded():
    for n in range(6000):
        ResponseStart(lambda data: None)(f"{200 + n % 300} S{n}", [("X-Request-Id", str(n))])
    assert len(wsgi._known_fields) <= 4096
    assert len(wsgi._known_statuses) <= 1024


def test_long_field_values_are_not_remembered():
    wsgi._known_fields.clear()
    ResponseStart(lambda data: None)("200 OK", [("X-Big", "v" * 300), ("X-Small", "v")])
    assert ("X-Small", "v") in wsgi._known_fields
    assert ("X-Big", "v" * 300) not in wsgi._known_fields


def test_a_bad_status_is_refused_every_time():
    ResponseStart(lambda data: None)("200 OK", [])
    for status in ["200 OK\r\nX: y", "20 OK", b"200 OK", "200 OK\n"]:
        for _ in range(2):
            with pytest.raises(ValueError):
                ResponseStart(lambda data: None)(status, [])


def test_connection_other_than_close_is_refused():
    with pytest.raises(ValueError):
        ResponseStart(lambda data: None)("200 OK", [("Connection", "keep-alive")])


@pytest.mark.parametrize("value", ["close", "Close", " CLOSE "])
def test_connection_close_sets_close_and_is_removed(value):
    start = ResponseStart(lambda data: None)
    start("200 OK", [("X-A", "1"), ("connection", value), ("X-B", "2")])
    assert start.close
    assert start.headers == [("X-A", "1"), ("X-B", "2")]


@pytest.mark.parametrize(
    "status",
    ["200", "OK", "20 OK", "2000 OK", "200OK", "abc OK", "099 Low", "200 OK\r\nX-A: 1",
     "200 O\nK", " 200 OK", b"200 OK", 200],
)
def test_bad_status_raises(status):
    with pytest.raises(ValueError):
        ResponseStart(lambda data: None)(status, [])


@pytest.mark.parametrize("status", ["200 OK", "404 Not Found", "599 Custom\treason", "200 "])
def test_good_status_is_accepted(status):
    start = ResponseStart(lambda data: None)
    start(status, [])
    assert start.status == status


# --- wsgi.input -----------------------------------------------------------------------

BODY = b"first line\nsecond\n\nfourth line is longer than the others\nno newline at end"


class Puller:
    """``pull`` over fixed pieces; fails the test if called again after the end."""

    def __init__(self, data: bytes, size: int) -> None:
        self.pieces = [data[i : i + size] for i in range(0, len(data), size)]
        self.ended = False
        self.calls = 0

    def __call__(self) -> bytes:
        assert not self.ended, "pull() called after it returned the end"
        self.calls += 1
        if not self.pieces:
            self.ended = True
            return b""
        return self.pieces.pop(0)


def stream(size: int, data: bytes = BODY) -> tuple[InputStream, Puller]:
    puller = Puller(data, size)
    return InputStream(puller), puller


SIZES = [1, 2, 3, 7, 11, len(BODY) - 1, len(BODY), 1000]


@pytest.mark.parametrize("size", SIZES)
def test_read_all(size):
    for call in (lambda s: s.read(), lambda s: s.read(None), lambda s: s.read(-1)):
        s, puller = stream(size)
        assert call(s) == BODY
        assert s.read() == b""
        assert s.read(5) == b""
        assert puller.ended


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("n", [1, 4, 9, 64])
def test_read_n(size, n):
    s, _ = stream(size)
    out = []
    while True:
        piece = s.read(n)
        if not piece:
            break
        out.append(piece)
    assert b"".join(out) == BODY
    assert all(len(p) == n for p in out[:-1])
    assert 0 < len(out[-1]) <= n


def test_read_exact_length_does_not_pull_further():
    s, puller = stream(4)
    assert s.read(8) == BODY[:8]
    assert puller.calls == 2
    assert s.read(0) == b""
    assert puller.calls == 2


@pytest.mark.parametrize("size", SIZES)
def test_readline_and_iteration(size):
    expected = BODY.splitlines(keepends=True)
    s, _ = stream(size)
    lines = []
    while line := s.readline():
        lines.append(line)
    assert lines == expected
    s, _ = stream(size)
    assert list(s) == expected
    s, _ = stream(size)
    assert s.readlines() == expected


@pytest.mark.parametrize("size", SIZES)
def test_readline_with_limit(size):
    s, _ = stream(size)
    assert s.readline(4) == b"firs"
    assert s.readline(100) == b"t line\n"
    assert s.readline(0) == b""
    assert s.readline(None) == b"second\n"
    assert s.readline(1) == b"\n"
    assert s.readline(-1) == b"fourth line is longer than the others\n"
    assert s.readline(1000) == b"no newline at end"
    assert s.readline() == b""


def test_readlines_hint_stops_early():
    s, _ = stream(3)
    assert s.readlines(5) == [b"first line\n"]
    assert s.readlines(8) == [b"second\n", b"\n"]  # 7 bytes, then 8: enough
    assert s.read() == b"fourth line is longer than the others\nno newline at end"


def test_read1_returns_one_piece_at_most():
    s, _ = stream(7)
    assert s.read1() == BODY[:7]
    assert s.read1(3) == BODY[7:10]
    assert s.read1(100) == BODY[10:14]  # the rest of the buffered piece, no more pull
    assert s.read1(-1) == BODY[14:21]
    rest = s.read()
    assert BODY[:21] + rest == BODY
    assert s.read1() == b""


def test_mixed_reads():
    s, _ = stream(5)
    assert s.readline() == b"first line\n"
    assert s.read(3) == b"sec"
    assert s.read1(2) == b"o"  # what is buffered already, without another pull
    assert s.read1(2) == b"nd"
    assert next(iter(s)) == b"\n"
    assert s.read() == BODY[len(b"first line\nsecond\n") :]


def test_empty_body():
    s, puller = stream(1, b"")
    assert s.read() == b""
    assert s.readline() == b""
    assert list(s) == []
    assert puller.calls == 1
    assert EMPTY_INPUT.read() == b""
    assert EMPTY_INPUT.readline() == b""
    assert EMPTY_INPUT.readlines() == []


def test_errors_from_pull_reach_the_application():
    class Broken(Exception):
        pass

    def pull():
        raise Broken

    with pytest.raises(Broken):
        InputStream(pull).read(1)


# --- wsgi.file_wrapper ---------------------------------------------------------------


def test_file_wrapper_iterates_blocks_and_closes():
    data = bytes(range(256)) * 10
    f = io.BytesIO(data)
    wrapper = FileWrapper(f, blksize=1000)
    blocks = list(wrapper)
    assert [len(b) for b in blocks] == [1000, 1000, 560]
    assert b"".join(blocks) == data
    wrapper.close()
    assert f.closed


@pytest.mark.parametrize(("target", "host"), [
    ("http://a.example/x", "a.example"),
    ("https://a.example:8443?q=1", "a.example:8443"),
    ("http://user:pw@a.example:8080/x?y#z", "a.example:8080"),
    ("http://[::1]:8080/x", "[::1]:8080"),
])
def test_an_absolute_form_target_names_the_host(target, host):
    """RFC 9112 3.2.2: the target's authority wins over the Host field."""
    conn = ServerConnection()
    conn.receive_data(f"GET {target} HTTP/1.1\r\nHost: b.example\r\n\r\n".encode())
    request = conn.next_event()
    environ = make_environ(request, base_environ("s", "80", "http", False), None, ("1", "2"))
    assert environ["HTTP_HOST"] == host


@pytest.mark.parametrize(
    ("target", "path_info"),
    [
        ("/app", ""),
        ("/app/", "/"),
        ("/app/users/7?x=1", "/users/7"),
        ("/app%2Fusers", "/users"),  # decoded first, as PATH_INFO always is
        ("/application", "/application"),  # not below the mount point: whole
        ("/other", "/other"),
    ],
)
def test_script_name_is_the_mount_point(target, path_info):
    base = base_environ("localhost", "80", "http", True, "/app")
    environ = make_environ(request_of(f"GET {target} HTTP/1.1", "Host: h"), base,
                           EMPTY_INPUT, REMOTE)
    assert environ["SCRIPT_NAME"] == "/app"
    assert environ["PATH_INFO"] == path_info
