"""The response writer: every framing decision, fed and checked without sockets."""

from __future__ import annotations

import pytest

from gshard.http.protocol import Need, Request, ServerConnection
from gshard.http.response import Framing, Phase, ResponseWriter, error_response


def head(*fields: str, line: str = "GET / HTTP/1.1") -> bytes:
    return (line + "\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n").encode("latin-1")



def answering(data: bytes) -> tuple[ServerConnection, ResponseWriter]:
    """A connection that has just received the request in ``data``, and its writer."""
    conn = ServerConnection()
    conn.receive_data(data)
    request = conn.next_event()
    assert isinstance(request, Request)
    while conn.next_event() is not Need.PAUSED:
        pass
    return conn, ResponseWriter(conn)


def parse_response_head(raw: bytes):
    assert raw.endswith(b"\r\n\r\n")
    status_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
    fields = [tuple(line.split(": ", 1)) for line in lines]
    return status_line, fields


def names(fields):
    return [name.lower() for name, _ in fields]


def test_response_with_content_length_is_identity():
    conn, writer = answering(head("Host: h"))
    raw = writer.head("200 OK", [("Content-Length", "5")], 5)
    status_line, fields = parse_response_head(raw)
    assert status_line == "HTTP/1.1 200 OK"
    assert ("Content-Length", "5") in fields
    assert "transfer-encoding" not in names(fields)
    assert "connection" not in names(fields)
    assert writer.data(b"hel") == b"hel"
    # Beyond the declared length nothing more goes out.
    assert writer.data(b"loEXTRA") == b"lo"
    assert writer.data(b"more") == b""
    assert writer.end() == b""
    assert conn.keep_alive
    assert conn.start_next_cycle()


def test_response_without_length_is_chunked_on_http11():
    conn, writer = answering(head("Host: h"))
    _, fields = parse_response_head(writer.head("200 OK", [], None))
    assert ("Transfer-Encoding", "chunked") in fields
    assert writer.data(b"hello") == b"5\r\nhello\r\n"
    assert writer.data(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    # An empty piece must not end the body early.
    assert writer.data(b"") == b""
    assert writer.end() == b"0\r\n\r\n"
    assert conn.keep_alive


def test_response_without_length_on_http10_is_close_delimited():
    conn, writer = answering(head(line="GET / HTTP/1.0"))
    _, fields = parse_response_head(writer.head("200 OK", [], None))
    assert "transfer-encoding" not in names(fields)
    assert not conn.keep_alive
    assert writer.data(b"hello") == b"hello"
    assert writer.end() == b""
    assert not conn.start_next_cycle()
    # A keep-alive 1.0 client is told the connection closes.
    conn, writer = answering(head("Connection: keep-alive", line="GET / HTTP/1.0"))
    _, fields = parse_response_head(writer.head("200 OK", [], None))
    assert ("Connection", "close") in fields
    assert not conn.keep_alive


def test_http10_keep_alive_is_confirmed():
    conn, writer = answering(head("Connection: keep-alive", line="GET / HTTP/1.0"))
    status_line, fields = parse_response_head(writer.head("200 OK", [], 0))
    assert status_line == "HTTP/1.0 200 OK"
    assert ("Connection", "keep-alive") in fields
    assert conn.keep_alive
    # A plain 1.0 request closes without being told.
    conn, writer = answering(head(line="GET / HTTP/1.0"))
    _, fields = parse_response_head(writer.head("200 OK", [], 0))
    assert "connection" not in names(fields)
    assert not conn.keep_alive


def test_head_response_has_no_body():
    conn, writer = answering(head("Host: h", line="HEAD / HTTP/1.1"))
    _, fields = parse_response_head(writer.head("200 OK", [("Content-Length", "5")], 5))
    assert ("Content-Length", "5") in fields
    assert writer.data(b"hello") == b""
    assert writer.end() == b""
    assert conn.keep_alive  # no body was owed, so nothing fell short
    conn, writer = answering(head("Host: h", line="HEAD / HTTP/1.1"))
    _, fields = parse_response_head(writer.head("200 OK", [], None))
    assert "transfer-encoding" not in names(fields)
    assert writer.data(b"hello") == b""
    assert writer.end() == b""
    assert conn.keep_alive


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
@pytest.mark.parametrize("length", [None, 5])
def test_bodiless_statuses(status, length):
    conn, writer = answering(head("Host: h"))
    _, fields = parse_response_head(writer.head(status, [], length))
    assert "transfer-encoding" not in names(fields)
    assert writer.data(b"hello") == b""
    assert writer.end() == b""
    assert conn.keep_alive


def test_connection_close_added_when_not_keeping_alive():
    conn, writer = answering(head("Host: h", "Connection: close"))
    _, fields = parse_response_head(writer.head("200 OK", [], 0))
    assert ("Connection", "close") in fields
    conn, writer = answering(head("Host: h"))
    _, fields = parse_response_head(writer.head("200 OK", [], 0, close=True))
    assert ("Connection", "close") in fields
    assert not conn.keep_alive
    assert not conn.start_next_cycle()


def test_date_and_server_fields():
    _conn, writer = answering(head("Host: h"))
    _, fields = parse_response_head(writer.head("200 OK", [("X-A", "1")], 0))
    assert names(fields).count("date") == 1
    assert ("Server", "gshard") in fields
    assert dict(fields)["Date"].endswith(" GMT")
    _conn, writer = answering(head("Host: h"))
    app_fields = [("Date", "Thu, 01 Jan 1970 00:00:00 GMT"), ("Server", "app")]
    raw = writer.head("200 OK", app_fields, 0, add_date=False, add_server=False)
    _, fields = parse_response_head(raw)
    assert fields == app_fields


def test_response_shorter_than_its_length_closes():
    conn, writer = answering(head("Host: h"))
    writer.head("200 OK", [("Content-Length", "10")], 10)
    writer.data(b"short")
    writer.end()
    assert not conn.keep_alive
    assert not conn.start_next_cycle()


@pytest.mark.parametrize(
    ("status", "method", "added"),
    [
        ("200 OK", "GET", True),
        ("404 Not Found", "GET", True),
        ("200 OK", "HEAD", True),  # the length the GET would have
        ("204 No Content", "GET", False),
        ("304 Not Modified", "GET", False),
        ("101 Switching Protocols", "GET", False),
    ],
)
def test_a_known_body_length_is_added_where_the_status_allows(status, method, added):
    _conn, writer = answering(head("Host: h", line=f"{method} / HTTP/1.1"))
    _, fields = parse_response_head(writer.head(status, [], None, body_length=7))
    assert (("Content-Length", "7") in fields) is added
    assert "transfer-encoding" not in names(fields)
    assert writer.framing is (Framing.LENGTH if added and method == "GET" else Framing.NONE)
    assert ("Content-Length", "7") in writer.headers if added else writer.headers == []


def test_the_applications_length_wins_over_the_known_one():
    _conn, writer = answering(head("Host: h"))
    _, fields = parse_response_head(
        writer.head("200 OK", [("Content-Length", "3")], 3, body_length=7))
    assert names(fields).count("content-length") == 1
    assert writer.data(b"abcdefg") == b"abc"


def test_phases_and_what_the_access_log_reads():
    _conn, writer = answering(head("Host: h"))
    assert writer.phase is Phase.HEAD and writer.status is None
    writer.head("201 Created", [("X-A", "1")], None)
    assert writer.phase is Phase.BODY and writer.status == "201 Created"
    writer.data(b"abc")
    writer.data(b"de")
    writer.end()
    assert writer.phase is Phase.DONE
    assert writer.sent == 5
    with pytest.raises(RuntimeError):
        writer.head("200 OK", [], None)


def test_a_file_is_sent_within_the_declared_length():
    conn, writer = answering(head("Host: h"))
    writer.head("200 OK", [], None, body_length=100)
    assert writer.file_bytes(100) == 100
    writer.file_sent(60)  # the file shrank while it was sent
    writer.end()
    assert not conn.keep_alive
    conn, writer = answering(head("Host: h", line="HEAD / HTTP/1.1"))
    writer.head("200 OK", [], None, body_length=100)
    assert writer.file_bytes(100) == 0
    conn, writer = answering(head("Host: h"))
    writer.head("200 OK", [("Content-Length", "10")], 10, body_length=100)
    assert writer.file_bytes(100) == 10


def test_a_refusal_replaces_a_response_not_started_and_closes():
    conn, writer = answering(head("Host: h"))
    raw = writer.refusal(500)
    assert raw == error_response(500)
    assert raw.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Connection: close\r\n" in raw
    assert writer.status == "500 Internal Server Error"
    assert writer.phase is Phase.DONE
    assert not conn.start_next_cycle()
    conn, writer = answering(head("Host: h"))
    writer.head("200 OK", [], None)
    with pytest.raises(RuntimeError):
        writer.refusal(500)



def test_any_declared_length_is_framed_in_either_build():
    conn, writer = answering(head("Host: h"))
    huge = 10**20  # past a C integer: the compiled build must not differ
    writer.head("200 OK", [("Content-Length", str(huge))], huge)
    assert writer.framing is Framing.LENGTH
    assert writer.data(b"abc") == b"abc"
    writer.end()
    assert not conn.keep_alive  # the body fell short of its length
