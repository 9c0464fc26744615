"""Logging for the manager and the shards: gunicorn's formats, so log tooling carries over.

The error log says what the server did (``[time] [pid] [LEVEL] message``); the
access log has one line per response in gunicorn's ``--access-logformat``
atoms. Log files are reopened on SIGUSR1 so logrotate can move them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import logging.config
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gshard.config import Config
    from gshard.exchange import Exchange

from gshard import syslog_handler

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
DEFAULT_ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

error_log = logging.getLogger("gshard.error")
access_log = logging.getLogger("gshard.access")
# gunicorn's loggers, which applications borrow handlers from
# (app.logger.handlers = logging.getLogger("gunicorn.error").handlers) and
# logging configs name: they share gshard's handler lists, both ways.
GUNICORN_LOGGERS = ((error_log, logging.getLogger("gunicorn.error")),
                    (access_log, logging.getLogger("gunicorn.access")))


def configure(level: str, error_logfile: str, access_logfile: str | None) -> None:
    """Point the two loggers at their destinations; ``-`` is stderr / stdout as in gunicorn."""
    for logger, target, stdio, fmt in (
        (error_log, error_logfile, sys.stderr, logging.Formatter(ERROR_FORMAT, DATE_FORMAT)),
        (access_log, access_logfile, sys.stdout, logging.Formatter("%(message)s")),
    ):
        for old in logger.handlers[:]:
            logger.removeHandler(old)
            old.close()
        logger.propagate = False
        logger.disabled = target is None
        if target is None:
            continue
        handler = logging.StreamHandler(stdio) if target == "-" else logging.FileHandler(target)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    error_log.setLevel(level.upper())
    access_log.setLevel(logging.INFO)
    for ours, theirs in GUNICORN_LOGGERS:
        theirs.handlers = ours.handlers
        theirs.setLevel(ours.level)
        theirs.propagate = False


def configure_for(config: Any) -> None:
    """``configure`` from a ``Config``, then its capture_output and logging configs.

    As in gunicorn, a user's logging config is applied over gshard's setup, so
    it may replace the handlers of ``gunicorn.error``/``gunicorn.access``
    (which gshard's loggers then use too: the lists are shared).
    """
    configure(config.loglevel, config.errorlog, config.accesslog)
    if config.capture_output and config.errorlog != "-":
        _capture_output(config.errorlog)
    if config.syslog:
        error_log.addHandler(syslog_handler.handler(config, "error"))
        if not config.disable_redirect_access_to_syslog:
            access_log.addHandler(syslog_handler.handler(config, "access"))
    if config.logconfig_dict:
        logging.config.dictConfig(config.logconfig_dict)
    if config.logconfig_json:
        with open(config.logconfig_json, encoding="utf-8") as file:
            logging.config.dictConfig(json.load(file))
    if config.logconfig:
        logging.config.fileConfig(config.logconfig, disable_existing_loggers=False)
    for ours, theirs in GUNICORN_LOGGERS:
        # dictConfig disables loggers it does not name unless told otherwise;
        # gshard's own keep working, with the level given to gunicorn's.
        ours.disabled = not theirs.handlers
        ours.handlers = theirs.handlers
        if theirs.level != logging.NOTSET:
            ours.setLevel(theirs.level)


# The error log file stdout and stderr point at (--capture-output), to reopen with it.
_captured_path: str | None = None


def _capture_output(path: str) -> None:
    """Point this process's stdout and stderr (and its children's) at the error log file."""
    global _captured_path
    _captured_path = path
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def reopen_files() -> None:
    """Reopen log files after rotation (SIGUSR1)."""
    for logger in (error_log, access_log):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    handler.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
    if _captured_path is not None:
        _capture_output(_captured_path)


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

    def __init__(self, fmt: str = DEFAULT_ACCESS_FORMAT) -> None:
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


def set_process_title(role: str, config: Config) -> None:
    """``gshard: shard 2 gen 3 myapp:app``, so ``ps`` tells the story."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(f"gshard: {role} {config.proc_name or config.app}")
