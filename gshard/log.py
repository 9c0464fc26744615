"""Logging for the manager and the shards: gunicorn's formats, so log tooling carries over.

The error log says what the server did (``[time] [pid] [LEVEL] message``); the
access log has one line per response (its format, gunicorn's atoms, is the
HTTP side's: ``http/access_log.py``). Log files are reopened on SIGUSR1 so
logrotate can move them.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.config
import os
import sys
from collections.abc import Mapping
from typing import Any

from gshard import syslog_handler
from gshard.config import Config

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"

# gshard logs on gunicorn's loggers, as gunicorn does: applications borrow their
# handlers (app.logger.handlers = logging.getLogger("gunicorn.error").handlers),
# logging configs name them, and formatters written for gunicorn tell records
# apart by record.name.
error_log = logging.getLogger("gunicorn.error")
access_log = logging.getLogger("gunicorn.access")
# gshard's names for the same two logs, which a logging config may name instead:
# each shares the handler list of its gunicorn logger, both ways.
GUNICORN_LOGGERS = ((error_log, logging.getLogger("gshard.error")),
                    (access_log, logging.getLogger("gshard.access")))


# gunicorn's logging defaults (glogging.CONFIG_DEFAULTS), which a logconfig_dict
# or logconfig_json is laid over key by key at the top level, as gunicorn lays
# it: a config that only redefines the "console" and "error_console" handlers
# keeps the two loggers and the root that name them. Written out here, not
# imported: gunicorn need not be installed (a unit test holds the two
# equal).
GUNICORN_DEFAULTS: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {name: {"level": "INFO", "handlers": [handler], "propagate": True,
                       "qualname": name}
                for name, handler in (("gunicorn.error", "error_console"),
                                      ("gunicorn.access", "console"))},
    "handlers": {name: {"class": "logging.StreamHandler", "formatter": "generic",
                        "stream": f"ext://sys.{stream}"}
                 for name, stream in (("console", "stdout"), ("error_console", "stderr"))},
    "formatters": {"generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                               "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
                               "class": "logging.Formatter"}},
}


def over_gunicorn_defaults(given: Mapping[str, Any]) -> dict[str, Any]:
    """The dict gunicorn hands dictConfig for a logconfig_dict (or JSON file) ``given``.

    A shallow merge, as gunicorn's ``config.update(cfg.logconfig_dict)``: a key
    the config gives ("handlers", "loggers") replaces the default's whole. So a
    config that replaces "handlers" without a "console" while the default root
    still names it fails as it fails in gunicorn ("Unable to configure root
    logger"), and one that gives no "loggers" gets the default levels (INFO,
    whatever --log-level says) and propagation (each line also reaches the
    root's handler: written twice, by the logger's handler and the root's). The
    defaults are deep-copied per use, since dictConfig may change what it is
    given; the config's own values are not (they may hold a stream object, which
    cannot be copied), as gunicorn does not copy them.
    """
    merged = copy.deepcopy(GUNICORN_DEFAULTS)
    merged.update(given)
    return merged


def shards(count: int) -> str:
    """``1 shard``, ``2 shards``: how every message counts shards."""
    return f"{count} shard{'' if count == 1 else 's'}"


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
    for logger, alias in GUNICORN_LOGGERS:
        alias.handlers = logger.handlers
        alias.setLevel(logger.level)
        alias.propagate = False


def configure_for(config: Config) -> None:
    """``configure`` from a ``Config``, then its capture_output and logging config.

    As in gunicorn, a user's logging config is applied over gshard's setup, so
    it may replace the handlers of ``gunicorn.error``/``gunicorn.access`` (or
    of ``gshard.error``/``gshard.access``: the lists are shared). One is
    applied, in gunicorn's order: ``logconfig_dict``, else ``logconfig_json``
    (each over gunicorn's defaults, ``over_gunicorn_defaults``), else the
    ``logconfig`` file.
    """
    configure(config.loglevel, config.errorlog, config.accesslog)
    if config.capture_output and config.errorlog != "-":
        _capture_output(config.errorlog)
    if config.syslog:
        error_log.addHandler(syslog_handler.handler(config, "error"))
        if not config.disable_redirect_access_to_syslog:
            access_log.addHandler(syslog_handler.handler(config, "access"))
    levels = {alias: alias.level for _, alias in GUNICORN_LOGGERS}
    if config.logconfig_dict:
        logging.config.dictConfig(over_gunicorn_defaults(config.logconfig_dict))
    elif config.logconfig_json:
        with open(config.logconfig_json, encoding="utf-8") as file:
            logging.config.dictConfig(over_gunicorn_defaults(json.load(file)))
    elif config.logconfig:
        logging.config.fileConfig(config.logconfig, disable_existing_loggers=False)
    for logger, alias in GUNICORN_LOGGERS:
        # A config may have named either (dictConfig changes a handler list in
        # place) and disables the loggers it does not name unless told otherwise:
        # a log that reaches a handler (its own, or the root's when it
        # propagates, as gunicorn's defaults make it) writes, at the level given
        # to either name.
        alias.handlers = logger.handlers
        logger.disabled = alias.disabled = not logger.hasHandlers()
        if alias.level != levels[alias]:
            logger.setLevel(alias.level)
        alias.setLevel(logger.level)


def failure(exc: BaseException) -> str:
    """An exception in one line, with what caused it: dictConfig's "Unable to configure
    formatter 'json'" says why only in its cause (a module not installed)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if exc.__cause__ is None else f"{text}: {failure(exc.__cause__)}"


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


def set_process_title(role: str, config: Config) -> None:
    """``gshard: shard 2 gen 3 myapp:app``, so ``ps`` tells the story."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(f"gshard: {role} {config.proc_name or config.app}")
