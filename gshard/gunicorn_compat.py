"""How each gunicorn setting relates to gshard: the same, different, ignored or refused.

A gunicorn deployment moves to gshard by changing one word, so every one of
gunicorn's settings must be recognised; but a setting that would change
behaviour must never be dropped without a word. Each setting's verdict is a
``Compat`` value: gshard's own settings carry theirs in ``config.Config``'s
table, and the gunicorn settings gshard has no field for (they configure
things gshard does not have: threads, HTTP/2, ASGI...) are declared
in ``GUNICORN_ONLY`` below, with the flag shape the command line needs.
Nothing here imports gunicorn: the unit tests hold both lists against the
installed gunicorn.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SECURITY = "it would weaken a protection described in docs/security.md"


@dataclass(frozen=True)
class Compat:
    """A setting's relation to gunicorn's, and what a value other than the default gets.

    ``kind`` is ``same``, ``different`` (accepted; ``note`` says how it
    differs), ``gshard`` (not a gunicorn setting), ``ignored`` (accepted with
    one warning, ``note`` saying why it has no meaning here) or ``refused``
    (the start fails with ``note`` as the reason). ``judge`` overrides the
    kind for settings whose verdict depends on the value (``worker_class``).
    """

    kind: str
    note: str = ""
    judge: Callable[[Any], str | None] | None = None

    def verdict(self, value: Any, default: Any, label: str) -> str | None:
        """A warning for ``value`` of setting ``label``, or None; ValueError(reason) refuses it."""
        if self.judge is not None:
            return self.judge(value)
        if value == default or self.kind not in ("ignored", "refused"):
            return None
        if self.kind == "refused":
            raise ValueError(self.note)
        return f"Ignoring {label} = {value!r}: {self.note}"


SAME = Compat("same")
GSHARD = Compat("gshard")


def different(how: str) -> Compat:
    return Compat("different", how)


def ignored(why: str) -> Compat:
    return Compat("ignored", why)


def refused(why: str) -> Compat:
    return Compat("refused", why)


# --- worker classes -------------------------------------------------------------

_GEVENT = {"gevent", "gunicorn.workers.ggevent.geventworker", "egg:gunicorn#gevent"}
_THREADED = {"sync", "gthread", "eventlet", "gunicorn.workers.sync.syncworker",
             "gunicorn.workers.gthread.threadworker",
             "gunicorn.workers.geventlet.eventletworker"}


def judge_worker_class(value: Any) -> str | None:
    """gevent is gshard; sync/gthread/eventlet apps run, differently; ASGI cannot."""
    text = str(value).lower()
    if text in _GEVENT:
        return None
    if text in _THREADED:
        return (f"worker_class {value!r}: shards run gevent; the application now runs "
                "on greenlets under gevent's monkey-patching, many requests at once in "
                "each shard, instead of one request per worker or per thread")
    if "uvicorn" in text or "asgi" in text:
        raise ValueError("gshard serves WSGI applications; an ASGI worker class "
                         f"({value}) needs an ASGI server")
    raise ValueError("gshard shards run gevent; use gevent (or sync, gthread, eventlet)")


def worker_class_name(value: Any) -> str:
    """The converted ``worker_class``: gunicorn's short name (class paths shortened)."""
    text = str(value)
    judge_worker_class(text)  # refuses before converting
    lowered = text.lower()
    if lowered in _GEVENT:
        return "gevent"
    return next((name for name in ("sync", "gthread", "eventlet") if name in lowered), text)


def judge_header_map(value: Any) -> str | None:
    if value == "drop":
        return None
    if value == "refuse":
        return ("header_map 'refuse': gshard drops header names with '_' instead of "
                "refusing the request")
    raise ValueError(f"'dangerous' is refused: {SECURITY} (header names with '_' are "
                     "dropped so that they cannot pose as names with '-')")


# --- server hooks -----------------------------------------------------------------

# gunicorn's server hooks and how many arguments each is called with.
HOOK_ARITY = {
    "on_starting": 1, "on_reload": 1, "when_ready": 1, "pre_fork": 2, "post_fork": 2,
    "post_worker_init": 1, "worker_int": 1, "worker_abort": 1, "pre_exec": 1,
    "pre_request": 2, "post_request": 4, "child_exit": 2, "worker_exit": 2,
    "nworkers_changed": 3, "on_exit": 1, "ssl_context": 2,
}


def hook(name: str) -> Callable[[Any], Callable | None]:
    """A converter for hook ``name``: a callable taking gunicorn's arguments, as gunicorn checks.

    A dotted ``"module.function"`` string is imported, as gunicorn allows.
    ``post_request`` may take 2 or 3 arguments (worker, req[, environ]), as in
    gunicorn; it is then wrapped to take all four.
    """
    arity = HOOK_ARITY[name]

    def convert(value: Any) -> Callable | None:
        if value is None:
            return None
        if isinstance(value, str):
            module, _, attr = value.rpartition(".")
            if not module:
                raise ValueError("a hook given as text must be MODULE.FUNCTION")
            try:
                value = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"cannot import {value!r}: {exc}") from None
        if not callable(value):
            raise ValueError("must be a function")
        try:
            count = len(inspect.getfullargspec(value).args)
        except TypeError:
            return value  # a builtin or C callable: its signature cannot be read
        if name == "post_request" and count in (2, 3):
            return _widen_post_request(value, count)
        if count != arity:
            raise ValueError(f"must take {arity} argument{'s' * (arity > 1)}, "
                             f"takes {count}")
        return value

    convert.__name__ = "hook"
    return convert


def _widen_post_request(function: Callable, count: int) -> Callable:
    def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> Any:
        return function(worker, req, environ) if count == 3 else function(worker, req)

    post_request.__qualname__ = function.__qualname__
    return post_request


# --- gunicorn settings that have no gshard field ----------------------------------------

GREENLETS = ("greenlets do that job: each shard serves up to --worker-connections "
             "requests at once")
ASGI = "an ASGI setting; gshard serves WSGI"
HTTP2 = "gshard serves HTTP/1.1 only"
DIRTY = "gshard has no dirty arbiters"


def _judge_logger_class(value: Any) -> str | None:
    if str(value) in ("gunicorn.glogging.Logger", "simple"):
        return None
    raise ValueError("gshard logs through its own loggers, which the gunicorn.error and "
                     "gunicorn.access loggers share; configure them with --log-config or "
                     "logconfig_dict instead of a Logger class")


def _judge_http_protocols(value: Any) -> str | None:
    protocols = [p.strip().lower() for p in str(value).split(",") if p.strip()]
    if protocols in (["h1"], []):
        return None
    if "h1" in protocols:
        return f"http_protocols {value!r}: {HTTP2}; only h1 is offered"
    raise ValueError(HTTP2)


def _judge_forwarder_headers(value: Any) -> str | None:
    names = value.split(",") if isinstance(value, str) else list(value)
    names = {str(n).strip().upper() for n in names if str(n).strip()}
    if names <= {"SCRIPT_NAME", "PATH_INFO"}:
        return None
    raise ValueError("header names with '_' are dropped from every peer "
                     f"({SECURITY}); a proxy cannot set {', '.join(sorted(names))}")


@dataclass(frozen=True)
class GunicornOnly:
    """A gunicorn setting gshard has nothing to configure with: recognised, then judged.

    ``takes`` is how its flag reads the command line: ``value``, ``append``
    (repeatable) or ``switch`` (no value; stores ``True``). ``default`` is
    gunicorn's, so that a file that spells the default out changes nothing
    and gets no warning.
    """

    name: str
    flags: tuple[str, ...]
    takes: str
    default: Any
    compat: Compat


GUNICORN_ONLY: tuple[GunicornOnly, ...] = (
    GunicornOnly("threads", ("--threads",), "value", 1, ignored(GREENLETS)),
    GunicornOnly("spew", ("--spew",), "switch", False,
                 ignored("gshard has no line tracer; run the application under a debugger")),
    GunicornOnly("worker_tmp_dir", ("--worker-tmp-dir",), "value", None,
                 ignored("shards report liveness over a pipe; there is no heartbeat file")),
    GunicornOnly("tmp_upload_dir", (), "value", None,
                 ignored("request bodies are streamed to the application, never stored")),
    GunicornOnly("logger_class", ("--logger-class",), "value", "gunicorn.glogging.Logger",
                 Compat("refused", "gshard logs through its own loggers (shared by gunicorn.error "
                        "and gunicorn.access); configure them with --log-config or logconfig_dict",
                        judge=_judge_logger_class)),
    GunicornOnly("enable_backlog_metric", ("--enable-backlog-metric",), "switch", False,
                 ignored("with --statsd-host, gunicorn.backlog is always sent")),
    GunicornOnly("default_proc_name", (), "value", "gunicorn",
                 ignored("process titles use --name, else the APP")),
    GunicornOnly("paste", ("--paste", "--paster"), "value", None,
                 refused("PasteDeploy applications are not supported; name the application "
                  "as MODULE:ATTR")),
    GunicornOnly("raw_paste_global_conf", ("--paste-global",), "append", [],
                 refused("PasteDeploy applications are not supported")),
    GunicornOnly("protocol", ("--protocol",), "value", "http",
                 refused("gshard speaks HTTP only, not uwsgi")),
    GunicornOnly("uwsgi_allow_ips", ("--uwsgi-allow-from",), "value", "127.0.0.1,::1",
                 ignored("gshard speaks HTTP only, not uwsgi")),
    GunicornOnly("ssl_version", ("--ssl-version",), "value", 2,
                 ignored("TLS uses Python's default context (TLS 1.2 or newer), as gunicorn "
                  "now recommends")),
    GunicornOnly("suppress_ragged_eofs", ("--suppress-ragged-eofs",), "switch", True,
                 ignored("a TLS connection closed without close_notify ends like any closed "
                  "connection")),
    GunicornOnly("do_handshake_on_connect", ("--do-handshake-on-connect",), "switch", False,
                 ignored("the TLS handshake always runs in the connection's greenlet, within "
                  "--header-timeout")),
    GunicornOnly("http_protocols", ("--http-protocols",), "value", "h1",
                 Compat("refused", HTTP2, judge=_judge_http_protocols)),
    GunicornOnly("http2_cleartext", ("--http2-cleartext",), "value", "off", refused(HTTP2)),
    GunicornOnly("http2_max_concurrent_streams", ("--http2-max-concurrent-streams",), "value",
                 100, ignored(HTTP2)),
    GunicornOnly("http2_initial_window_size", ("--http2-initial-window-size",), "value", 65535,
                 ignored(HTTP2)),
    GunicornOnly("http2_max_frame_size", ("--http2-max-frame-size",), "value", 16384,
                 ignored(HTTP2)),
    GunicornOnly("http2_max_header_list_size", ("--http2-max-header-list-size",), "value", 65536,
                 ignored(HTTP2)),
    GunicornOnly("permit_obsolete_folding", ("--permit-obsolete-folding",), "switch", False,
                 refused(f"{SECURITY} (obs-fold is refused against request smuggling)")),
    GunicornOnly("strip_header_spaces", ("--strip-header-spaces",), "switch", False,
                 refused(f"{SECURITY} (whitespace before the colon is refused against "
                  "request smuggling)")),
    GunicornOnly("permit_unconventional_http_method", ("--permit-unconventional-http-method",),
                 "switch", False, refused(f"{SECURITY} (lower-case methods are refused)")),
    GunicornOnly("permit_unconventional_http_version", ("--permit-unconventional-http-version",),
                 "switch", False,
                 refused(f"{SECURITY} (versions other than HTTP/1.x get 505)")),
    GunicornOnly("casefold_http_method", ("--casefold-http-method",), "switch", False,
                 refused(f"{SECURITY} (lower-case methods are refused, not upper-cased)")),
    GunicornOnly("forwarder_headers", ("--forwarder-headers",), "value", "SCRIPT_NAME,PATH_INFO",
                 Compat("different", "header names with '_' are dropped from every peer, trusted "
                        "proxies included, so a proxy cannot set SCRIPT_NAME or PATH_INFO through "
                        "headers; set the mount point with SCRIPT_NAME in the environment",
                        judge=_judge_forwarder_headers)),
    GunicornOnly("header_map", ("--header-map",), "value", "drop",
                 Compat("different", "'drop' as in gunicorn; 'refuse' drops too (with a warning); "
                        f"'dangerous' is refused: {SECURITY}", judge=judge_header_map)),
    GunicornOnly("asgi_loop", ("--asgi-loop",), "value", "auto", ignored(ASGI)),
    GunicornOnly("asgi_lifespan", ("--asgi-lifespan",), "value", "auto", ignored(ASGI)),
    GunicornOnly("asgi_disconnect_grace_period", ("--asgi-disconnect-grace-period",), "value", 3,
                 ignored(ASGI)),
    GunicornOnly("websocket_max_message_size", ("--websocket-max-message-size",), "value",
                 16777216, ignored(ASGI)),
    GunicornOnly("root_path", ("--root-path",), "value", "",
                 ignored(f"{ASGI}; a WSGI mount point is SCRIPT_NAME in the environment")),
    GunicornOnly("http_parser", ("--http-parser",), "value", "auto",
                 ignored("gshard always uses its own strict parser")),
    GunicornOnly("control_socket_mode", ("--control-socket-mode",), "value", 0o600,
                 ignored("gshard's control socket is always 0600 (its owner only)")),
    GunicornOnly("dirty_apps", ("--dirty-app",), "append", [], refused(DIRTY)),
    GunicornOnly("dirty_workers", ("--dirty-workers",), "value", 0, ignored(DIRTY)),
    GunicornOnly("dirty_timeout", ("--dirty-timeout",), "value", 300, ignored(DIRTY)),
    GunicornOnly("dirty_threads", ("--dirty-threads",), "value", 1, ignored(DIRTY)),
    GunicornOnly("dirty_graceful_timeout", ("--dirty-graceful-timeout",), "value", 30,
                 ignored(DIRTY)),
    GunicornOnly("on_dirty_starting", (), "value", None, ignored(DIRTY)),
    GunicornOnly("dirty_post_fork", (), "value", None, ignored(DIRTY)),
    GunicornOnly("dirty_worker_init", (), "value", None, ignored(DIRTY)),
    GunicornOnly("dirty_worker_exit", (), "value", None, ignored(DIRTY)),
)


def gunicorn_only(name: str) -> GunicornOnly | None:
    return _BY_NAME.get(name)


_BY_NAME = {entry.name: entry for entry in GUNICORN_ONLY}


# --- the "Moving from gunicorn" page's table ----------------------------------------

_VERDICTS = {"same": "same", "different": "different", "ignored": "ignored (one warning)",
             "refused": "refused"}


def migration_table(fields: Any) -> str:
    """A Markdown row per gunicorn setting, from gshard's settings table and ``GUNICORN_ONLY``.

    ``fields`` are ``Config``'s; a field's gunicorn name is its first alias if
    it has one (``workers`` for ``shards``). The docs' "Moving from gunicorn"
    page is built with it (``docs/hooks.py``); ``python -m gshard.config`` prints it.
    """
    rows = []
    for spec in fields:
        compat = spec.metadata["compat"]
        if compat.kind == "gshard":
            continue
        name = (spec.metadata["aliases"] or (spec.name,))[0]
        rows.append((name, spec.metadata["flags"], compat))
    rows += [(entry.name, entry.flags, entry.compat) for entry in GUNICORN_ONLY]
    lines = ["| gunicorn setting | flags | in gshard | how, or why |", "| --- | --- | --- | --- |"]
    for name, flags, compat in sorted(rows, key=lambda row: row[0]):
        shown = ", ".join(f"`{flag}`" for flag in flags)
        note = compat.note.replace("|", "\\|")
        if name in HOOK_ARITY:
            note = ("a server hook (config files and gshard.run()), checked as gunicorn checks "
                    "it" + (f"; {note}" if note else ""))
        lines.append(f"| `{name}` | {shown} | {_VERDICTS[compat.kind]} | {note} |")
    return "\n".join(lines)
