"""Where gshard answers the shared corpus (gunicorn's cases) differently on purpose.

The black-box runner counts these as failures; the tests hold gshard to
exactly this list, so any other departure still fails.
"""

from __future__ import annotations

# Valid cases gshard refuses, with the status. They check that gunicorn's parser
# reads an authority-form CONNECT; gunicorn 27 then hands the request to the
# application, whose 200 (with a Content-Length) tells the client a tunnel is
# open when none is (RFC 9110 9.3.6). No WSGI application can open one: gshard
# answers 501 itself and closes.
REFUSED = {
    "valid/rfc9112_target_authority_connect_01": 501,
    "valid/rfc9112_target_authority_ipv6_01": 501,
}

# Invalid cases refused only at gunicorn's default request-line limit: a
# 4,122-byte line is over gunicorn's 4094 and within gshard's 8190 (gunicorn's
# maximum; RFC 9112 3 asks for at least 8,000 octets). gunicorn serves it too
# with --limit-request-line 8190; the tests run it at gunicorn's default.
GUNICORN_REQUEST_LINE = 4094
SERVED_AT_GSHARDS_REQUEST_LINE = frozenset({"invalid/006"})
