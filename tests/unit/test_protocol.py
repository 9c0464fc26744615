"""The sans-IO HTTP/1.1 parser and response framing, without sockets.

The first half replays gunicorn's request corpus (shared with the black-box
runner) through a ``ServerConnection`` fed whole, split at every byte
position, byte by byte and in random pieces: how the bytes arrive must never
change what the parser makes of them. The rest pins single rules, each with
the status the client gets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from gshard.errors import ProtocolError
from gshard.http.protocol import (
    CONNECTION_CLOSED,
    END_OF_MESSAGE,
    Data,
    Limits,
    Need,
    Request,
    ServerConnection,
    State,
    parse_head,
)
from gshard.http.response import ResponseWriter
from gshard.http.wsgi import split_target
from tests.support import corpus
from tests.support.paths import CORPUS_DIR, corpus_runner

run_corpus = corpus_runner()

# --- driving a connection the way gshard/connection.py does -----------------------


def answer(conn: ServerConnection) -> None:
    """Answer the current request with an empty 200, as an application might."""
    writer = ResponseWriter(conn)
    writer.head("200 OK", [], 0)
    writer.end()


@dataclass
class Exchange:
    """What a connection made of a byte stream: requests with their bodies, and the end."""

    requests: list  # [(Request, body bytes)]
    end: str  # "close": the server ends the connection; "eof": the client closed


def exchange(chunks, limits=None) -> Exchange:
    """Feed ``chunks`` one ``receive_data`` at a time, then EOF; answer each request.

    Each request is answered with an empty 200 before the next cycle, as the
    real connection does. ``ProtocolError`` propagates.
    """
    conn = ServerConnection(limits)
    pending = [*chunks, b""]  # b"" is the client's EOF
    requests = []
    while True:
        event = conn.next_event()
        if event is Need.DATA:
            if not pending:
                raise AssertionError("parser asked for data after EOF")
            conn.receive_data(pending.pop(0))
        elif isinstance(event, Request):
            requests.append([event, b""])
        elif isinstance(event, Data):
            assert event.data, "empty Data event"
            requests[-1][1] += event.data
        elif event is END_OF_MESSAGE:
            assert requests[-1][0].chunked
        elif event is Need.PAUSED:
            answer(conn)
            if not conn.start_next_cycle():
                return Exchange([tuple(r) for r in requests], "close")
        elif event is CONNECTION_CLOSED:
            assert not pending, "connection reported closed before EOF was fed"
            return Exchange([tuple(r) for r in requests], "eof")
        else:
            raise AssertionError(f"unexpected event {event!r}")


def outcome(chunks, limits=None):
    """A comparable summary: ("error", status) or ("ok", requests, end)."""
    try:
        result = exchange(chunks, limits)
    except ProtocolError as exc:
        return ("error", exc.status)
    return ("ok", tuple((req, body) for req, body in result.requests), result.end)


def every_split(data):
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def byte_by_byte(data):
    return [data[i : i + 1] for i in range(len(data))]


def random_splits(data, seed, rounds=20):
    rng = random.Random(seed)
    for _ in range(rounds):
        pieces, pos = [], 0
        while pos < len(data):
            size = rng.randint(1, max(1, len(data) // 3))
            pieces.append(data[pos : pos + size])
            pos += size
        yield pieces


# --- the corpus ---------------------------------------------------------------------

REFUSAL_STATUSES = {400, 413, 414, 431, 501, 505}


def _runnable(case) -> bool:
    """Cases a server in its default configuration is held to (as the runner decides)."""
    if not case.settings:
        return True
    return case.kind == "invalid" and set(case.settings) == {"proxy_protocol"}


CASES = [c for c in run_corpus.load_corpus(str(CORPUS_DIR / "gunicorn")) if _runnable(c)]
VALID = [c for c in CASES if c.kind == "valid"]
INVALID = [c for c in CASES if c.kind == "invalid"]


# Invalid cases refused only by gunicorn's default request-line limit run with it.
GUNICORN_DEFAULT_LIMITS = {name: Limits(request_line=corpus.GUNICORN_REQUEST_LINE)
                           for name in corpus.SERVED_AT_GSHARDS_REQUEST_LINE}


def test_corpus_is_there():
    # A missing corpus must fail loudly, not leave the parametrized tests empty.
    assert len(VALID) > 40
    assert len(INVALID) > 60


def wire_bytes(case) -> bytes:
    """The bytes the runner sends: Host added where HTTP/1.1 needs it, 099's length fixed."""
    data, _ = run_corpus.fix_content_length(case, run_corpus.add_missing_host(case))
    return data


def owed_requests(case):
    """The expected requests up to and including the first that ends the connection."""
    owed = []
    for req in case.requests:
        owed.append(req)
        if run_corpus._wants_close(req) == "close":
            break
    return owed


def check_valid(case, got):
    """Assert that an outcome is what the expectation file describes."""
    if case.name in corpus.REFUSED:
        assert got == ("error", corpus.REFUSED[case.name]), f"{case.name}: {got}"
        return
    if got[0] == "error":
        allowed, _ = run_corpus.RFC_MAY_REFUSE.get(case.name, ((), ""))
        assert got[1] in allowed, f"{case.name} refused with {got[1]}"
        return
    _, requests, end = got
    owed = owed_requests(case)
    assert len(requests) == len(owed), f"{case.name}: {len(requests)} requests"
    for (request, body), want in zip(requests, owed, strict=True):
        assert request.method == want.method
        assert request.target == want.raw_uri
        assert request.http_version == f"HTTP/{want.version[0]}.{want.version[1]}"
        if want.raw_uri != "*":
            assert split_target(request.target) == (want.path, want.query)
        assert body == want.body
        # Header order and values as gunicorn parsed them, minus fields with "_"
        # (dropped on purpose) and the Host the runner inserted.
        expected = [(k, v) for k, v in want.headers if "_" not in k]
        headers = list(request.headers)
        if want.version == (1, 1) and not any(k == "HOST" for k, _ in want.headers):
            headers.remove(("HOST", "localhost"))
        if len(want.body) != int(dict(want.headers).get("CONTENT-LENGTH", len(want.body))):
            # valid/099: the runner corrected the length the file declares.
            headers = [h for h in headers if h[0] != "CONTENT-LENGTH"]
            expected = [h for h in expected if h[0] != "CONTENT-LENGTH"]
        assert headers == expected
    closes = run_corpus._wants_close(owed[-1]) == "close"
    assert end == ("close" if closes else "eof")


def check_invalid(case, got, whole_status):
    assert got[0] == "error", f"{case.name} accepted: {got}"
    assert got[1] in REFUSAL_STATUSES | {None}
    # How the bytes are split must not change the verdict.
    assert got[1] == whole_status


def _ids(cases):
    return [c.name for c in cases]


@pytest.mark.parametrize("case", VALID, ids=_ids(VALID))
def test_valid_whole(case):
    check_valid(case, outcome([wire_bytes(case)]))


@pytest.mark.parametrize("case", VALID, ids=_ids(VALID))
def test_valid_split_everywhere(case):
    data = wire_bytes(case)
    whole = outcome([data])
    for chunks in every_split(data):
        got = outcome(chunks)
        assert got == whole, f"split at {len(chunks[0])}"
    check_valid(case, whole)


@pytest.mark.parametrize("case", VALID, ids=_ids(VALID))
def test_valid_byte_by_byte_and_random(case):
    data = wire_bytes(case)
    check_valid(case, outcome(byte_by_byte(data)))
    for chunks in random_splits(data, seed=case.name):
        check_valid(case, outcome(chunks))


@pytest.mark.parametrize("case", INVALID, ids=_ids(INVALID))
def test_invalid_refused_however_split(case):
    data = wire_bytes(case)
    limits = GUNICORN_DEFAULT_LIMITS.get(case.name)
    whole = outcome([data], limits)
    assert whole[0] == "error", f"{case.name} accepted whole: {whole}"
    check_invalid(case, whole, whole[1])
    for chunks in every_split(data):
        check_invalid(case, outcome(chunks, limits), whole[1])
    check_invalid(case, outcome(byte_by_byte(data), limits), whole[1])
    for chunks in random_splits(data, seed=case.name):
        check_invalid(case, outcome(chunks, limits), whole[1])


def test_invalid_cases_of_gunicorns_default_limit_pass_at_gshards():
    """gshard's request-line default is 8190 (RFC 9112 3 asks for at least
    8,000): a case refused only by gunicorn's 4094 is accepted, as gunicorn
    accepts it with --limit-request-line 8190."""
    for name in GUNICORN_DEFAULT_LIMITS:
        (case,) = [c for c in INVALID if c.name == name]
        assert outcome([wire_bytes(case)])[0] == "ok"


def test_may_refuse_cases_are_in_the_run():
    # The RFC_MAY_REFUSE allowance and gshard's own refusals must apply to cases
    # actually exercised.
    names = {c.name for c in VALID}
    assert set(run_corpus.RFC_MAY_REFUSE) <= names
    assert set(corpus.REFUSED) <= names


# --- focused parser rules ---------------------------------------------------------------


def refusal(data: bytes, limits: Limits | None = None) -> int | None:
    """The status the parser refuses ``data`` with, without any more bytes or EOF.

    Fails if the parser accepts the request or waits for more data instead.
    """
    conn = ServerConnection(limits)
    conn.receive_data(data)
    with pytest.raises(ProtocolError) as info:
        while True:
            event = conn.next_event()
            if isinstance(event, Need):
                pytest.fail(f"not refused: parser returned {event}")
    return info.value.status


def events(data: bytes, limits: Limits | None = None, eof: bool = False) -> list:
    """Every event until the parser needs something (data or the end of a response)."""
    conn = ServerConnection(limits)
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    out = []
    while True:
        event = conn.next_event()
        out.append(event)
        if isinstance(event, Need) or event is CONNECTION_CLOSED:
            return out


def head(*fields: str, line: str = "GET / HTTP/1.1") -> bytes:
    return ("\r\n".join([line, *fields]) + "\r\n\r\n").encode("latin-1")


def test_simple_request():
    request, paused = events(head("Host: example.com", "Accept: */*"))
    assert request.method == "GET"
    assert request.target == "/"
    assert request.http_version == "HTTP/1.1"
    assert request.headers == (("HOST", "example.com"), ("ACCEPT", "*/*"))
    assert request.content_length is None
    assert not request.chunked
    assert paused is Need.PAUSED


def test_request_line_limit():
    limits = Limits(request_line=30)
    fits = "GET /" + "a" * 16 + " HTTP/1.1"  # exactly 30 bytes
    assert len(fits) == 30
    assert isinstance(events(head("Host: h", line=fits), limits)[0], Request)
    too_long = "GET /" + "a" * 17 + " HTTP/1.1"
    assert refusal(head("Host: h", line=too_long), limits) == 414


def test_request_line_of_8000_octets_accepted_by_default():
    # RFC 9112 3: "at least 8000 octets"; the default is gunicorn's maximum, 8190.
    assert Limits().request_line == 8190
    line = "GET /" + "a" * (8190 - len("GET / HTTP/1.1")) + " HTTP/1.1"
    assert len(line) == 8190
    for fits in (line, "GET /" + "a" * (8000 - len("GET / HTTP/1.1")) + " HTTP/1.1"):
        request = events(head("Host: h", line=fits))[0]
        assert request.target == fits[4:-9]
    assert refusal(head("Host: h", line=line.replace("GET /", "GET /a"))) == 414


def test_request_line_refused_before_crlf_arrives():
    assert refusal(b"GET /" + b"a" * 9000) == 414
    assert refusal(b"GET /" + b"a" * 60, Limits(request_line=30)) == 414
    # A partial line within the limit is still waited for.
    assert events(b"GET /" + b"a" * 20, Limits(request_line=30)) == [Need.DATA]


@pytest.mark.parametrize("line", [
    pytest.param(b"G" * 40 + b" / HTTP/1.1", id="long-method"),
    pytest.param(b"GET" * 13 + b"T /", id="long-method-no-crlf-yet"),
    pytest.param(b"G" * 31, id="method-alone"),
    pytest.param(b"GE(T /" + b"a" * 30 + b" HTTP/1.1", id="not-a-method"),
    pytest.param(b" /" + b"a" * 30 + b" HTTP/1.1", id="no-method"),
    pytest.param(b"GET / HTTP/1.1" + b"x" * 20, id="past-the-version"),
    pytest.param(b"GET /a HTTP/1.1 " + b"b" * 20, id="after-the-target"),
])
def test_request_line_too_long_for_its_method_is_400(line):
    """414 names the target: a request line too long because of its method (or
    of anything but its target) is a bad request, complete or still arriving."""
    limits = Limits(request_line=30)
    assert refusal(line + b"\r\nHost: h\r\n\r\n", limits) == 400
    assert refusal(line + b"x" * 40, limits) == 400


def test_method_past_the_default_limit_is_400():
    assert refusal(b"A" * 9000 + b" / HTTP/1.1\r\nHost: h\r\n\r\n") == 400
    assert refusal(b"A" * 9000) == 400


def test_request_line_too_long_is_414_when_a_one_byte_target_would_fit():
    limits = Limits(request_line=30)
    # "M" * 19 + " / HTTP/1.1" is 30 bytes: a longer target is what does not fit.
    for method, status in ((b"M" * 19, 414), (b"M" * 20, 400)):
        line = method + b" /" + b"a" * 20
        assert refusal(line + b" HTTP/1.1\r\nHost: h\r\n\r\n", limits) == status
        assert refusal(line, limits) == status  # the same while the line arrives
    # Its CR arrived, its LF not yet: the CR is not held against the line.
    line = b"M" * 19 + b" /ab HTTP/1.1"
    assert len(line) == 32
    assert refusal(line + b"\r", limits) == refusal(line + b"\r\nHost: h\r\n\r\n", limits) == 414


def test_too_many_fields():
    limits = Limits(fields=3)
    assert isinstance(events(head("Host: h", "A: 1", "B: 2"), limits)[0], Request)
    assert refusal(head("Host: h", "A: 1", "B: 2", "C: 3"), limits) == 431
    assert refusal(head("Host: h", *(f"X-{i}: {i}" for i in range(100)))) == 431


def test_too_many_fields_refused_while_incomplete():
    limits = Limits(fields=3)
    partial = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD"
    assert refusal(partial, limits) == 431
    assert events(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n", limits) == [Need.DATA]


def test_field_line_limit():
    limits = Limits(field_size=20)
    fits = "X-Long: " + "v" * 10  # 18 bytes + CRLF = 20, counted as gunicorn does
    assert isinstance(events(head("Host: h", fits), limits)[0], Request)
    assert refusal(head("Host: h", fits + "v"), limits) == 431


def test_field_line_refused_while_incomplete():
    assert refusal(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"v" * 9000) == 431
    limits = Limits(field_size=20)
    assert refusal(b"GET / HTTP/1.1\r\nX: " + b"v" * 30, limits) == 431
    assert events(b"GET / HTTP/1.1\r\nX: " + b"v" * 10, limits) == [Need.DATA]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(head(), id="no-host-http11"),
        pytest.param(head("Host: a", "Host: b"), id="two-hosts"),
        pytest.param(head("Host: a", "Host: a"), id="two-identical-hosts"),
        pytest.param(
            head("Host: h", "Content-Length: 5", "Transfer-Encoding: chunked"), id="cl-and-te"
        ),
        pytest.param(
            head("Host: h", "Transfer-Encoding: chunked", "Content-Length: 5"), id="te-and-cl"
        ),
        pytest.param(head("Host: h", "Content-Length: 5", "Content-Length: 6"), id="cl-differ"),
        pytest.param(head("Host: h", "Content-Length: 5, 5"), id="cl-list"),
        pytest.param(head("Host: h", "Content-Length: +5"), id="cl-plus"),
        pytest.param(head("Host: h", "Content-Length: -1"), id="cl-negative"),
        pytest.param(head("Host: h", "Content-Length: 0x5"), id="cl-hex"),
        pytest.param(head("Host: h", "Content-Length: 5a"), id="cl-suffix"),
        pytest.param(head("Host: h", "Content-Length: 5 5"), id="cl-space"),
        pytest.param(head("Host: h", "Content-Length:"), id="cl-empty"),
        pytest.param(head("Host: h", "Content-Length: \xb2"), id="cl-non-ascii-digit"),
        pytest.param(head("Host: h", "X-A: a", " folded"), id="obs-fold-space"),
        pytest.param(head("Host: h", "X-A: a", "\tfolded"), id="obs-fold-tab"),
        pytest.param(head("Host : h"), id="space-before-colon"),
        pytest.param(head("Host: h", "X-A\t: a"), id="tab-before-colon"),
        pytest.param(head("Host: h", "X-A: a\x00b"), id="nul-in-value"),
        pytest.param(head("Host: h", "X-A: a\rb"), id="cr-in-value"),
        pytest.param(head("Host: h", "X-A: a\x01b"), id="ctl-in-value"),
        pytest.param(head("Host: h", "X-A: a\x7fb"), id="del-in-value"),
        pytest.param(head("Host: h", "X-A: a\x1bb"), id="esc-in-value"),
        pytest.param(head("Host: h", "X A: a"), id="space-in-name"),
        pytest.param(head("Host: h", ": a"), id="empty-name"),
        pytest.param(head("Host: h", "X-A"), id="no-colon"),
        pytest.param(b"GET / HTTP/1.1\nHost: h\n\n", id="bare-lf-everywhere"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\n\r\n", id="bare-lf-after-field"),
        pytest.param(b"GET / HTTP/1.1\nHost: h\r\n\r\n", id="bare-lf-after-request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", id="bare-cr"),
        pytest.param(head("Host: h", line="get / HTTP/1.1"), id="lower-case-method"),
        pytest.param(head("Host: h", line="Get / HTTP/1.1"), id="mixed-case-method"),
        pytest.param(head("Host: h", line="GET  / HTTP/1.1"), id="double-space"),
        pytest.param(head("Host: h", line="GET / HTTP/1.1 "), id="trailing-space"),
        pytest.param(head("Host: h", line="GET /"), id="no-version"),
        pytest.param(head("Host: h", line="GET / http/1.1"), id="lower-case-http"),
        pytest.param(head("Host: h", line="GET * HTTP/1.1"), id="asterisk-with-get"),
        pytest.param(head("Host: h", line="GET h:80 HTTP/1.1"), id="authority-with-get"),
        pytest.param(head("Host: h", line="CONNECT /x HTTP/1.1"), id="connect-origin-form"),
        pytest.param(head("Host: h", line="CONNECT http://h/ HTTP/1.1"), id="connect-absolute"),
        pytest.param(head("Host: h", line="GET x/y HTTP/1.1"), id="relative-target"),
        pytest.param(head("Host: h", "Transfer-Encoding: gzip"), id="te-gzip-alone"),
        pytest.param(head("Host: h", "Transfer-Encoding: chunked, gzip"), id="te-not-last"),
        pytest.param(head("Host: h", "Transfer-Encoding: chunked, chunked"), id="chunked-twice"),
        pytest.param(
            head("Host: h", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
            id="chunked-twice-two-fields",
        ),
        pytest.param(head("Host: h", "Transfer-Encoding: ,chunked"), id="te-empty-coding"),
        pytest.param(
            head("Transfer-Encoding: chunked", line="POST / HTTP/1.0"), id="te-in-http10"
        ),
        pytest.param(
            head("Host: h", "Content-Type: a", "Content-Type: b"), id="two-content-types"
        ),
        pytest.param(head("Host: a b"), id="host-with-space"),
        pytest.param(head("Host: user@h"), id="host-with-userinfo"),
        pytest.param(head("Host: h/x"), id="host-with-path"),
        pytest.param(head("Host: h:80x"), id="host-bad-port"),
        pytest.param(head("Host: h:80:81"), id="host-two-ports"),
        pytest.param(head("Host: [::1"), id="host-open-ip-literal"),
        pytest.param(head("Host: h%zz"), id="host-bad-percent"),
        pytest.param(head("Host: h\"x"), id="host-quote"),
        pytest.param(head("Host: caf\xe9"), id="host-non-ascii"),
        pytest.param(head("Host: a b", line="GET / HTTP/1.0"), id="host-invalid-in-http10"),
        pytest.param(head("Host:"), id="host-empty"),
        pytest.param(head("Host:  \t "), id="host-only-whitespace"),
        pytest.param(head("Host: :8080"), id="host-port-without-host"),
        pytest.param(head("Host:", line="GET / HTTP/1.0"), id="host-empty-in-http10"),
        pytest.param(head("Host:", line="GET http://h/ HTTP/1.1"), id="host-empty-absolute"),
        pytest.param(head("Host:", line="OPTIONS * HTTP/1.1"), id="host-empty-asterisk"),
        pytest.param(head("Host:", "Content-Length: 0", line="POST / HTTP/1.1"),
                     id="host-empty-beside-framing"),
        pytest.param(
            head("Host: a b", "Content-Length: 0", line="POST / HTTP/1.1"),
            id="host-invalid-beside-framing",
        ),
        pytest.param(head("Host: h", line="GET http:///x HTTP/1.1"), id="absolute-empty-host"),
        pytest.param(head("Host: h", line="GET http://a\"b/ HTTP/1.1"), id="absolute-bad-host"),
        pytest.param(head("Host: h", line="GET http://h:8x/ HTTP/1.1"), id="absolute-bad-port"),
    ],
)
def test_bad_request_400(data):
    assert refusal(data) == 400


# Bytes a request target may not hold: RFC 9112 3.2 takes its grammar from RFC
# 3986, whose characters are visible ASCII (section 2); the rest is percent-encoded.
OUTSIDE_VISIBLE_ASCII = [
    pytest.param(b"/\xc3\xa0", id="utf-8"),
    pytest.param(b"/\xc0\xaf", id="overlong-slash"),
    pytest.param(b"/..\xc0\xaf..\xc0\xafetc/passwd", id="overlong-traversal"),
    pytest.param(b"/\xe0%20k", id="latin-1"),
    pytest.param(b"/\x80", id="0x80"),
    pytest.param(b"/\xff", id="0xff"),
    pytest.param(b"/a\x7f", id="del"),
    pytest.param(b"/a\x00b", id="nul"),
    pytest.param(b"/a\x01", id="soh"),
    pytest.param(b"/a\x1b[0m", id="esc"),
    pytest.param(b"/a\tb", id="tab"),
    pytest.param(b"/a\x0bb", id="vt"),
    pytest.param(b"/a\x0cb", id="ff"),
    pytest.param(b"/?q=\xc3\xa9", id="utf-8-in-query"),
    pytest.param(b"http://h/\xc3\xa9", id="utf-8-absolute-form"),
    pytest.param(b"h\xc3\xa9:443", id="utf-8-connect-authority"),
]


@pytest.mark.parametrize("target", OUTSIDE_VISIBLE_ASCII)
def test_target_outside_visible_ascii_400(target):
    method = b"CONNECT" if target.endswith(b":443") else b"GET"
    data = method + b" " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert refusal(data) == 400
    for cut in range(1, len(data)):
        assert outcome([data[:cut], data[cut:]]) == ("error", 400)


def test_target_of_visible_ascii_accepted_whole():
    visible = "".join(chr(c) for c in range(0x21, 0x7F))
    request = events(head("Host: h", line=f"GET /{visible} HTTP/1.1"))[0]
    assert request.target == "/" + visible


@pytest.mark.parametrize(
    "host",
    ["h", "example.com:8080", "127.0.0.1:80", "[::1]", "[2001:db8::1]:443", "[v1.a:b]",
     "a_b-c~d.e", "x%41y", "h:"],
)
def test_valid_host_values_accepted(host):
    request = events(head(f"Host: {host}"))[0]
    assert request.headers == (("HOST", host),)


@pytest.mark.parametrize(
    "target", ["http://user:pw@h/x", "https://[::1]:8443/x?q", "http://h", "HTTP://h:/"]
)
def test_valid_absolute_targets_accepted(target):
    assert events(head("Host: other", line=f"GET {target} HTTP/1.1"))[0].target == target


CHUNKED = head("Host: h", "Transfer-Encoding: chunked", line="POST / HTTP/1.1")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"+5\r\nhello\r\n0\r\n\r\n", id="plus-sign"),
        pytest.param(b"-5\r\nhello\r\n0\r\n\r\n", id="minus-sign"),
        pytest.param(b"0x5\r\nhello\r\n0\r\n\r\n", id="0x-prefix"),
        pytest.param(b"1" + b"0" * 15 + b"\r\n", id="16-hex-digits"),
        pytest.param(b"f" * 20 + b"\r\n", id="overflow"),
        pytest.param(b"\r\n", id="empty-size"),
        pytest.param(b"5 \r\nhello\r\n0\r\n\r\n", id="space-after-size"),
        pytest.param(b"5;\r\nhello\r\n0\r\n\r\n", id="empty-extension"),
        pytest.param(b"5\nhello\r\n0\r\n\r\n", id="bare-lf-size"),
        pytest.param(b"5\r\nhelloXX0\r\n\r\n", id="no-crlf-after-data"),
        pytest.param(b"5\r\nhello\n0\r\n\r\n", id="lf-after-data"),
        pytest.param(b"5\r\nhello\r\n0\r\nHost: evil\r\n\r\n", id="trailer-host"),
        pytest.param(b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n", id="trailer-cl"),
        pytest.param(
            b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n", id="trailer-te"
        ),
        pytest.param(b"5\r\nhello\r\n0\r\nX : y\r\n\r\n", id="trailer-malformed"),
    ],
)
def test_bad_chunked_body_400(body):
    assert refusal(CHUNKED + body) == 400


def test_chunk_size_leading_zeros_and_extensions_are_fine():
    body = b"0000000000000000005;name=value;q=\"a b\"\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"
    result = exchange([CHUNKED + body])
    [(request, data)] = result.requests
    assert request.chunked
    assert data == b"hello"


def test_transfer_coding_not_implemented_501():
    assert refusal(head("Host: h", "Transfer-Encoding: gzip, chunked")) == 501
    assert refusal(head("Host: h", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked")) == 501


@pytest.mark.parametrize("padding", ["\xa0", "\x85", "\x0b", "\x0c"])
def test_a_coding_padded_with_anything_but_space_or_tab_is_not_chunked(padding):
    """RFC 9110 5.6.3: optional whitespace is space and tab. Read as latin-1, 0x85
    and 0xA0 are whitespace to str.strip(), and "\xa0chunked" must not frame a
    body a front end would read differently (gunicorn and llhttp refuse it)."""
    for value in (f"{padding}chunked", f"chunked{padding}"):
        assert refusal(head("Host: h", f"Transfer-Encoding: {value}",
                            line="POST / HTTP/1.1") + b"0\r\n\r\n") == 400
    # Before a final chunked it is a coding of its own, which gshard does not apply
    # (501); control bytes never pass the field grammar (400).
    assert refusal(head("Host: h", f"Transfer-Encoding: {padding}chunked, chunked",
                        line="POST / HTTP/1.1")) == (501 if padding > "\x7f" else 400)
    # Space and tab around a coding are optional whitespace, and stay allowed.
    request = events(head("Host: h", "Transfer-Encoding: \tchunked ", line="POST / HTTP/1.1")
                     + b"0\r\n\r\n")[0]
    assert request.chunked


def test_a_connection_token_padded_with_anything_but_space_or_tab_is_another_token():
    padded = parse_head(head("Connection: keep-alive\xa0", line="GET / HTTP/1.0"), Limits())
    assert not padded.keep_alive
    spaced = parse_head(head("Connection: close ,\tkeep-alive ", line="GET / HTTP/1.0"),
                        Limits())
    assert not spaced.keep_alive
    assert parse_head(head("Connection:\tkeep-alive ", line="GET / HTTP/1.0"),
                      Limits()).keep_alive


@pytest.mark.parametrize(("line", "status"), [
    pytest.param(b"GET /", 400, id="http-0.9"),
    pytest.param(b"SSH-2.0-OpenSSH_8.9", 400, id="another-protocol"),
    pytest.param(b"get / HTTP/1.1", 400, id="lower-case-method"),
    pytest.param(b"GET / HTTP/2.0", 505, id="http-2.0"),
    pytest.param(b"GET nowhere HTTP/1.1", 400, id="bad-target"),
    pytest.param(b"GET /\xc3\xa9 HTTP/1.1", 400, id="raw-utf-8"),
])
def test_a_complete_request_line_is_judged_before_the_head_ends(line, status):
    """A client that sends one line of something else (HTTP/0.9, an SSH greeting)
    is answered at once, with the status the whole head would get, instead of
    holding its connection until the head timeout."""
    assert refusal(line + b"\r\n") == status
    assert refusal(line + b"\r\nHost: h\r\n\r\n") == status
    # A valid line waits for the rest of its head.
    assert events(b"GET / HTTP/1.1\r\nHost: h\r\n") == [Need.DATA]


def test_a_few_empty_lines_before_a_request_are_ignored_and_more_refused():
    """RFC 9112 2.2 asks a server to ignore at least one empty line before a
    request line; endless ones would hold a connection in its head for ever."""
    assert events(b"\r\n" * 4 + head("Host: h"))[0].method == "GET"
    assert refusal(b"\r\n" * 5 + head("Host: h")) == 400
    assert refusal(b"\r\n" * 40_000) == 400
    # Arriving one by one, they are counted the same way.
    conn = ServerConnection()
    for _ in range(4):
        conn.receive_data(b"\r\n")
        assert conn.next_event() is Need.DATA
    conn.receive_data(b"\r\n")
    with pytest.raises(ProtocolError):
        conn.next_event()
    # Each request of a keep-alive connection has its own allowance.
    conn = ServerConnection()
    conn.receive_data(b"\r\n" * 4 + head("Host: h") + b"\r\n" * 4 + head("Host: h"))
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() is Need.PAUSED
    answer(conn)
    assert conn.start_next_cycle()
    assert isinstance(conn.next_event(), Request)


@pytest.mark.parametrize("version", ["2.0", "0.9", "3.1", "0.0", "9.9"])
def test_unsupported_version_505(version):
    assert refusal(head("Host: h", line=f"GET / HTTP/{version}")) == 505


@pytest.mark.parametrize("minor", range(2, 10))
def test_higher_minor_version_served_as_http11(minor):
    """RFC 9110 2.5: HTTP/1.2 and up are read as HTTP/1.1, the highest 1.x this
    server implements, and answered as HTTP/1.1 (6.2): Host required, keep-alive
    by default, chunked bodies allowed."""
    line = f"POST / HTTP/1.{minor}"
    request = events(head("Host: h", "Transfer-Encoding: chunked", line=line) + b"0\r\n\r\n")[0]
    assert request.http_version == "HTTP/1.1"
    assert request.keep_alive and request.chunked
    assert refusal(head(line=f"GET / HTTP/1.{minor}")) == 400  # no Host
    conn = ServerConnection()
    conn.receive_data(head("Host: h", line=f"GET / HTTP/1.{minor}"))
    conn.next_event()
    assert ResponseWriter(conn).head("200 OK", [], 0).startswith(b"HTTP/1.1 200 OK\r\n")


def test_body_limit_by_content_length():
    limits = Limits(body=10)
    ok = head("Host: h", "Content-Length: 10", line="POST / HTTP/1.1") + b"x" * 10
    [(_, body)] = exchange([ok], limits).requests
    assert body == b"x" * 10
    # Refused from the head alone: the body is never waited for.
    assert refusal(head("Host: h", "Content-Length: 11", line="POST / HTTP/1.1"), limits) == 413


def test_body_limit_by_chunk_size_before_the_data():
    limits = Limits(body=10)
    assert refusal(CHUNKED + b"b\r\n", limits) == 413
    # The total counts: 6 + 6 > 10, refused at the second size line.
    assert refusal(CHUNKED + b"6\r\nxxxxxx\r\n6\r\n", limits) == 413
    ok = exchange([CHUNKED + b"6\r\nxxxxxx\r\n4\r\nyyyy\r\n0\r\n\r\n"], limits)
    assert ok.requests[0][1] == b"xxxxxxyyyy"


def test_unlimited_body_by_default():
    big = 10**9
    [request, data_needed] = events(
        head("Host: h", f"Content-Length: {big}", line="POST / HTTP/1.1")
    )
    assert request.content_length == big
    assert data_needed is Need.DATA


def test_request_head_bounded():
    limits = Limits(request_line=100, fields=2, field_size=100)
    # Incomplete and already over request_line + fields * field_size.
    data = b"GET / HTTP/1.1\r\n" + b"A: 1\r\nB: 2\r\n" + b"C" * 400
    assert refusal(data, limits) == 431


# --- keep-alive ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fields", "keep_alive"),
    [
        ("GET / HTTP/1.1", ["Host: h"], True),
        ("GET / HTTP/1.1", ["Host: h", "Connection: close"], False),
        ("GET / HTTP/1.1", ["Host: h", "Connection: Keep-Alive, CLOSE"], False),
        ("GET / HTTP/1.1", ["Host: h", "Connection: upgrade", "Connection: close"], False),
        ("GET / HTTP/1.0", [], False),
        ("GET / HTTP/1.0", ["Connection: keep-alive"], True),
        ("GET / HTTP/1.0", ["Connection: Keep-Alive"], True),
        ("GET / HTTP/1.0", ["Connection: keep-alive, close"], False),
    ],
)
def test_keep_alive_rules(line, fields, keep_alive):
    request = parse_head(head(*fields, line=line), Limits())
    assert request.keep_alive is keep_alive
    conn = ServerConnection()
    conn.receive_data(head(*fields, line=line) + head("Host: h"))
    assert conn.next_event().keep_alive is keep_alive
    assert conn.next_event() is Need.PAUSED
    answer(conn)
    assert conn.start_next_cycle() is keep_alive
    if keep_alive:
        assert isinstance(conn.next_event(), Request)
    else:
        assert conn.state is State.CLOSED
        assert conn.next_event() is CONNECTION_CLOSED


@pytest.mark.parametrize("target", ["h:443", "example.com:8443", "[::1]:443", "10.0.0.1:22"])
def test_connect_answered_501_and_the_connection_ends(target):
    """A WSGI application cannot open a tunnel, and a 2xx would tell the client
    it has one (RFC 9110 9.3.6): the server answers 501 itself, and nothing after
    the head is read as a request (the client may already be sending tunnel bytes)."""
    conn = ServerConnection()
    conn.receive_data(head(f"Host: {target}", line=f"CONNECT {target} HTTP/1.1")
                      + head("Host: h"))
    with pytest.raises(ProtocolError) as refused:
        conn.next_event()
    assert refused.value.status == 501
    assert conn.state is State.CLOSED and not conn.keep_alive
    with pytest.raises(ProtocolError):
        conn.next_event()
    # A malformed CONNECT is still a bad request: the head is judged first.
    assert refusal(head(line=f"CONNECT {target} HTTP/1.1")) == 400
    assert refusal(head("Host: h", line="CONNECT h HTTP/1.1")) == 400


def test_pipelined_requests_in_order_with_pause_between():
    data = (
        head("Host: h", line="GET /one HTTP/1.1")
        + head("Host: h", "Content-Length: 3", line="POST /two HTTP/1.1")
        + b"abc"
        + head("Host: h", line="GET /three HTTP/1.1")
    )
    conn = ServerConnection()
    conn.receive_data(data)
    seen = []
    for _ in range(3):
        request = conn.next_event()
        seen.append(request.target)
        if request.content_length:
            assert conn.next_event() == Data(b"abc")
        # Nothing of the next request is parsed until this response is done.
        assert conn.next_event() is Need.PAUSED
        assert conn.next_event() is Need.PAUSED
        assert conn.buffered > 0 or request.target == "/three"
        answer(conn)
        assert conn.start_next_cycle()
    assert seen == ["/one", "/two", "/three"]
    assert conn.next_event() is Need.DATA


def test_fields_with_underscore_are_dropped():
    request = parse_head(head("Host: h", "X_Forwarded_For: 1.2.3.4", "X-Real: yes"), Limits())
    assert request.headers == (("HOST", "h"), ("X-REAL", "yes"))
    # A Content-Length spelled with "_" frames nothing.
    request = parse_head(head("Host: h", "Content_Length: 5"), Limits())
    assert request.content_length is None


def test_field_values_are_trimmed_not_changed():
    request = parse_head(head("Host: h", "X-A: \t a \t b \t"), Limits())
    assert ("X-A", "a \t b") in request.headers


def test_leading_crlfs_are_ignored():
    [request, paused] = events(b"\r\n\r\n\r\n" + head("Host: h"))
    assert request.target == "/"
    assert paused is Need.PAUSED
    # Also between pipelined requests, and when they arrive on their own.
    result = exchange([head("Host: h"), b"\r\n", b"\r\n", head("Host: h", line="GET /2 HTTP/1.1")])
    assert [r.target for r, _ in result.requests] == ["/", "/2"]
    assert result.end == "eof"


def test_eof_between_requests_is_a_clean_close():
    assert events(b"", eof=True) == [CONNECTION_CLOSED]
    assert events(b"\r\n", eof=True) == [CONNECTION_CLOSED]


def test_eof_inside_a_head_or_body_has_no_status():
    for data in (
        b"GET / HTTP/1.1\r\nHost",
        head("Host: h", "Content-Length: 5", line="POST / HTTP/1.1") + b"abc",
        CHUNKED + b"5\r\nhel",
        CHUNKED + b"5\r\nhello\r\n0\r\n",
    ):
        conn = ServerConnection()
        conn.receive_data(data)
        conn.receive_data(b"")
        with pytest.raises(ProtocolError) as info:
            while True:
                assert conn.next_event() is not Need.DATA
        assert info.value.status is None


# --- 100-continue ------------------------------------------------------------------

EXPECT = head("Host: h", "Content-Length: 5", "Expect: 100-continue", line="POST / HTTP/1.1")


def test_continue_sent_once():
    conn = ServerConnection()
    conn.receive_data(EXPECT)
    request = conn.next_event()
    assert request.expect_continue
    assert conn.continue_bytes() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.continue_bytes() == b""
    conn.receive_data(b"hello")
    assert conn.next_event() == Data(b"hello")
    answer(conn)
    # The body was read after 100 Continue: the connection stays usable.
    assert conn.keep_alive
    assert conn.start_next_cycle()


def test_no_continue_after_the_response_started():
    conn = ServerConnection()
    conn.receive_data(EXPECT)
    conn.next_event()
    response = ResponseWriter(conn).head("417 Expectation Failed", [], 0)
    assert conn.continue_bytes() == b""
    # The client may or may not send the body: only a close is safe.
    assert b"Connection: close\r\n" in response
    assert not conn.keep_alive


def test_no_continue_without_a_body_or_on_http10():
    conn = ServerConnection()
    conn.receive_data(head("Host: h", "Expect: 100-continue"))
    conn.next_event()
    assert conn.continue_bytes() == b""
    request = parse_head(
        head("Expect: 100-continue", "Content-Length: 5", line="POST / HTTP/1.0"), Limits()
    )
    assert not request.expect_continue


@pytest.mark.parametrize("value", ["200-ok", "100-continue, 200-ok", "", "continue"])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_an_expectation_other_than_100_continue_gets_417(value, version):
    """RFC 9110 10.1.1 lets a server answer 417 to any expectation it cannot meet,
    and 100-continue is the only one defined; gunicorn answers 417 too."""
    line = f"GET / HTTP/{version}"
    assert refusal(head("Host: h", f"Expect: {value}".rstrip(), line=line)) == 417
    # Expect's value is case-insensitive.
    assert events(head("Host: h", "Expect: 100-Continue", line=line))[0]


def test_unread_body_does_not_start_the_next_cycle():
    conn = ServerConnection()
    conn.receive_data(head("Host: h", "Content-Length: 10", line="POST / HTTP/1.1") + b"abc")
    conn.next_event()
    answer(conn)
    assert conn.keep_alive  # the response itself was fine...
    assert not conn.start_next_cycle()  # ...but the rest of the body was never read


def test_a_framing_error_is_final():
    conn = ServerConnection()
    conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert isinstance(conn.next_event(), Request)
    for _ in range(3):
        with pytest.raises(ProtocolError) as raised:
            conn.next_event()
        assert raised.value.status == 400
    assert conn.state is State.CLOSED and not conn.keep_alive


def test_a_whole_head_past_its_total_limit_is_refused_while_it_arrives():
    conn = ServerConnection(Limits(head_total=4096))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n")
    for i in range(3):
        conn.receive_data(b"X-%d: %s\r\n" % (i, b"v" * 1000))
        assert conn.next_event() is Need.DATA
    conn.receive_data(b"X-big: " + b"v" * 1200 + b"\r\n")
    with pytest.raises(ProtocolError) as refused:
        conn.next_event()
    assert refused.value.status == 431


def test_a_head_within_the_total_limit_is_accepted():
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 900) for i in range(4))
    conn = ServerConnection(Limits(head_total=4096))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n")
    assert isinstance(conn.next_event(), Request)


def test_remembered_field_blocks_still_obey_each_connections_limits():
    """A field block parsed once is remembered, but only for the limits it was
    checked against: the same bytes under stricter limits are refused."""
    head = (b"POST / HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nX-Two: 2\r\n"
            b"Content-Length: 100\r\n\r\n")
    assert parse_head(head, Limits()).content_length == 100
    assert parse_head(head, Limits()).headers == (
        ("HOST", "a"), ("X-ONE", "1"), ("X-TWO", "2"), ("CONTENT-LENGTH", "100"))
    with pytest.raises(ProtocolError) as refused:
        parse_head(head, Limits(fields=2))
    assert refused.value.status == 431
    with pytest.raises(ProtocolError) as refused:
        parse_head(head, Limits(body=10))
    assert refused.value.status == 413
    # HTTP/1.0 reads the same block differently: no Host needed, no keep-alive.
    assert parse_head(head.replace(b"HTTP/1.1", b"HTTP/1.0", 1), Limits()).keep_alive is False


def test_remembered_field_blocks_and_hosts_let_no_refused_request_through():
    """The field-block cache is keyed by the fields' text alone, so every rule
    of the request line is judged anew; and only values that passed are kept."""
    from gshard.http import protocol

    fields = "Host: cached.example\r\nX-A: 1\r\n\r\n"
    assert parse_head(f"GET / HTTP/1.1\r\n{fields}".encode(), Limits()).target == "/"
    assert fields in protocol._parsed_fields
    for line, status in [(b"GET /\xc3\xa9 HTTP/1.1", 400), (b"GET /\xc0\xaf HTTP/1.1", 400),
                         (b"CONNECT h:443 HTTP/1.1", 501), (b"GET / HTTP/2.0", 505)]:
        with pytest.raises(ProtocolError) as refused:
            parse_head(line + b"\r\n" + fields.encode(), Limits())
        assert refused.value.status == status
    request = parse_head(f"GET / HTTP/1.3\r\n{fields}".encode(), Limits())
    assert (request.http_version, request.keep_alive) == ("HTTP/1.1", True)
    for empty in ("Host:\r\n\r\n", "Host: :80\r\nX-A: 1\r\n\r\n"):
        for _ in range(2):
            with pytest.raises(ProtocolError):
                parse_head(f"GET / HTTP/1.1\r\n{empty}".encode(), Limits())
        assert empty not in protocol._parsed_fields
    assert "" not in protocol._valid_hosts and ":80" not in protocol._valid_hosts


def test_remembered_field_blocks_are_bounded():
    from gshard.http import protocol

    for n in range(protocol._PARSED_FIELDS_KEPT * 3):
        parse_head(f"GET / HTTP/1.1\r\nHost: a\r\nX-Id: {n}\r\n\r\n".encode(), Limits())
        assert len(protocol._parsed_fields) <= protocol._PARSED_FIELDS_KEPT
    long_value = "v" * protocol._PARSED_FIELDS_LONGEST
    fields = f"Host: a\r\nX-Long: {long_value}\r\n\r\n"
    parse_head(f"GET / HTTP/1.1\r\n{fields}".encode(), Limits())
    assert fields not in protocol._parsed_fields
