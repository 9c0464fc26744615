"""Access-log records are gunicorn's: its atoms as ``record.args``, its format as the message."""

from __future__ import annotations

import datetime
import json
import logging

import pytest
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.glogging import SafeAtoms

from gshard import log
from gshard.config import DEFAULT_ACCESS_FORMAT
from gshard.http.access_log import AccessAtoms, AccessLogger

ENVIRON = {
    "REQUEST_METHOD": "POST", "RAW_URI": "/shop/cart?id=7", "PATH_INFO": "/shop/cart",
    "QUERY_STRING": "id=7", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.1.2.3",
    "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "12",
    "HTTP_USER_AGENT": 'curl/8 "quoted"', "HTTP_X_REQUEST_ID": "abc-1",
    "HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz", "wsgi.url_scheme": "https",
}
RESPONSE_HEADERS = [("Content-Type", "text/plain"), ("X-Cache", "miss")]


class _Response:
    status = "201 Created"
    sent = 0  # nothing in the body: gunicorn's b is "0", not "-"
    headers = RESPONSE_HEADERS


class _Request:
    headers = [("CONTENT-TYPE", "application/json"), ("CONTENT-LENGTH", "12"),
               ("USER-AGENT", 'curl/8 "quoted"'), ("X-REQUEST-ID", "abc-1"),
               ("AUTHORIZATION", "Basic dXNlcjpwYXNz")]


def gunicorns_atoms() -> SafeAtoms:
    """The atoms gunicorn 27's logger makes for the same exchange (1.25 s long)."""
    logger = GunicornLogger.__new__(GunicornLogger)
    elapsed = datetime.timedelta(seconds=1, microseconds=250_000)
    return SafeAtoms(logger.atoms(_Response(), _Request(), ENVIRON, elapsed))


def ours() -> AccessAtoms:
    return AccessAtoms(ENVIRON, "201 Created", RESPONSE_HEADERS, 0, 1.25)


def test_the_atoms_are_gunicorns_keys_values_and_types():
    theirs, mine = gunicorns_atoms(), ours()
    assert set(mine) == set(theirs)
    for key in theirs:
        if key != "t":  # the time of day, formatted alike
            assert (key, mine[key]) == (key, theirs[key])
            assert type(mine[key]) is type(theirs[key]), key
    for key in ("{User-Agent}i", "{X-CACHE}o", "{REMOTE_ADDR}e", "{nothing}i", "zz"):
        assert mine[key] == theirs[key], key
    assert dict(mine) == {**theirs, "t": mine["t"]}
    assert mine["t"][0] == "[" and mine["t"][-1] == "]"


@pytest.mark.parametrize("fmt", [
    DEFAULT_ACCESS_FORMAT,
    '%(h)s "%(r)s" %(s)s %(B)d %(D)06d %(L)s %({x-request-id}i)s %({x-cache}o)s %(q)s',
])
def test_a_format_reads_as_gunicorns(fmt):
    theirs, mine = gunicorns_atoms(), ours()
    theirs["t"] = mine["t"]
    assert fmt % mine == fmt % theirs


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _Exchange:
    environ, status, response_headers, sent, duration = (ENVIRON, "201 Created",
                                                         RESPONSE_HEADERS, 0, 1.25)


def test_a_record_carries_the_atoms_as_args_and_the_line_as_its_message(monkeypatch):
    records = _Records()
    monkeypatch.setattr(log.access_log, "handlers", [records])
    monkeypatch.setattr(log.access_log, "disabled", False)
    monkeypatch.setattr(log.access_log, "level", logging.INFO)
    logger = AccessLogger("%(h)s %(s)s %(b)s")
    assert logger.enabled
    logger.log(_Exchange())
    (record,) = records.records
    assert record.getMessage() == "10.1.2.3 201 0"
    # What a gunicorn JSON formatter reads.
    fields = {"remote_ip": record.args["h"], "status": record.args["s"],
              "duration_us": record.args["D"], "agent": record.args.get("{user-agent}i")}
    assert json.loads(json.dumps(fields)) == {"remote_ip": "10.1.2.3", "status": "201",
                                              "duration_us": 1_250_000,
                                              "agent": 'curl/8 \\"quoted\\"'}
    assert json.dumps(dict(record.args))  # the whole dict serialises too
