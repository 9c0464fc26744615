"""The access log's lines: gunicorn's ``--access-logformat`` atoms over a finished exchange.

Tooling written for gunicorn's access log (parsers, dashboards) keeps
working because every atom means what it means there. The atoms are computed
only when the format asks for them, so a short format costs little per
request.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gshard.http.exchange import Exchange
from gshard.log import access_log, error_log


@dataclass
class AccessAtoms(Mapping):
    """gunicorn's access-log atoms, computed only when the format asks for them.

    ``format % atoms`` looks each key up here; unknown atoms print ``-`` as in
    gunicorn, so a format written for gunicorn never raises.
    """

    environ: dict[str, Any]
    status: str
    response_headers: list[tuple[str, str]]
    body_bytes: int
    duration: float

    def __getitem__(self, key: str) -> str:
        value = self._atom(key)
        return "-" if value is None or value == "" else str(value)

    def _atom(self, key: str) -> Any:
        env = self.environ
        simple = _SIMPLE_ATOMS.get(key)
        if simple is not None:
            return simple(self)
        if key.startswith("{") and len(key) > 3 and key[-2] == "}":
            name, kind = key[1:-2], key[-1]
            if kind == "i":
                if name.lower() == "content-type":
                    return env.get("CONTENT_TYPE")
                if name.lower() == "content-length":
                    return env.get("CONTENT_LENGTH")
                return env.get("HTTP_" + name.upper().replace("-", "_"))
            if kind == "o":
                wanted = name.lower()
                return next(
                    (v for n, v in self.response_headers if n.lower() == wanted), None
                )
            if kind == "e":
                return env.get(name, os.environ.get(name))
        return None

    def __iter__(self):
        return iter(_SIMPLE_ATOMS)

    def __len__(self) -> int:
        return len(_SIMPLE_ATOMS)


def _request_line(a: AccessAtoms) -> str:
    env = a.environ
    return f"{env['REQUEST_METHOD']} {env['RAW_URI']} {env['SERVER_PROTOCOL']}"


def _user(a: AccessAtoms) -> str | None:
    auth = a.environ.get("HTTP_AUTHORIZATION", "")
    if auth[:6].lower() != "basic ":
        return None
    try:
        return base64.b64decode(auth[6:].strip()).decode("latin-1").partition(":")[0]
    except (binascii.Error, ValueError):
        return None


_SIMPLE_ATOMS = {
    "h": lambda a: a.environ.get("REMOTE_ADDR"),
    "l": lambda a: "-",
    "u": _user,
    "t": lambda a: time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
    "r": _request_line,
    "m": lambda a: a.environ["REQUEST_METHOD"],
    "U": lambda a: a.environ["PATH_INFO"],
    "q": lambda a: a.environ["QUERY_STRING"],
    "H": lambda a: a.environ["SERVER_PROTOCOL"],
    "s": lambda a: a.status.split(None, 1)[0],
    "B": lambda a: a.body_bytes,
    "b": lambda a: a.body_bytes or "-",
    "f": lambda a: a.environ.get("HTTP_REFERER"),
    "a": lambda a: a.environ.get("HTTP_USER_AGENT"),
    "T": lambda a: int(a.duration),
    "M": lambda a: int(a.duration * 1000),
    "D": lambda a: int(a.duration * 1_000_000),
    "L": lambda a: f"{a.duration:.6f}",
    "p": lambda a: f"<{os.getpid()}>",
}


class AccessLogger:
    """Writes one access-log line per finished exchange, in gunicorn's format."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    @property
    def enabled(self) -> bool:
        return not access_log.disabled and bool(access_log.handlers)

    def log(self, exchange: Exchange) -> None:
        atoms = AccessAtoms(exchange.environ, exchange.status or "-",
                            exchange.response_headers, exchange.sent, exchange.duration)
        try:
            line = self.fmt % atoms
        except (TypeError, ValueError, KeyError) as exc:
            error_log.warning("access log format %r failed: %s", self.fmt, exc)
            return
        access_log.info(line)
