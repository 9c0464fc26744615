"""Every setting, declared once: its type, default, check, help and CLI flags.

Each field of ``Config`` carries its own metadata, so the command line
(``cli/main.py``), config files and validation all read the same table and cannot
drift apart. Nothing here touches the network, the file system or the
application: ``Config`` is checked data, built before anything binds.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gshard import gunicorn_compat as compat
from gshard import syslog_handler
from gshard.addresses import DEFAULT_PORT, BindAddress, parse_bind, parse_statsd_host
from gshard.cpus import usable_cpus
from gshard.errors import ConfigError
from gshard.gunicorn_compat import GSHARD, SAME, Compat, different, hook, ignored

# gunicorn's access-log format: the default of --access-logformat.
DEFAULT_ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

# The request limits' bounds. The request line's is gunicorn's maximum
# (http/message.py: MAX_REQUEST_LINE) and the most gshard reads, whatever the
# configuration says; a header field line's default is gunicorn's, which its
# 0 also means; a request's field count is capped at gunicorn's MAX_HEADERS.
MAX_REQUEST_LINE = 8190
DEFAULT_FIELD_SIZE = 8190
MAX_FIELD_SIZE = 65536
MAX_FIELDS = 32768

# --- converters: each takes a CLI string or a config-file value ----------


def _whole(value: Any, base: int = 10) -> int:
    """An integer from a CLI string or a config value, refused in words a user reads."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("must be a whole number")
    try:
        return int(value, base) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ValueError("must be a whole number") from None


def _int_range(low: int, high: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        number = _whole(value)
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {bound}")
        return number

    convert.__name__ = "integer"
    return convert


def _seconds(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0  # refused below, with the message every wrong value gets
    if not number >= 0 or number == float("inf"):
        raise ValueError("must be a number of seconds, 0 or more")
    return number


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = str(value).lower()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return convert


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


class _AnyAtom:
    """Answers every atom with 0, which every conversion (%s, %d, %r, %f...) can show."""

    def __getitem__(self, key: str) -> int:
        return 0


def _access_format(value: Any) -> str:
    """A format of gunicorn's atoms (``%(h)s %(s)s``), checked once here rather than
    failing on every access-log line."""
    text = _text(value)
    try:
        text % _AnyAtom()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a format of named atoms like %(h)s: {exc}") from None
    return text


def _judge_request_line(value: Any) -> str | None:
    """``limit_request_line = 0`` is gunicorn's "no limit"; gshard keeps its bound."""
    if value != 0:
        return None
    return (f"limit_request_line = 0: gunicorn reads 0 as no limit (request lines up to "
            f"1 MiB); gshard keeps {MAX_REQUEST_LINE} bytes, the most it reads, so a "
            "client's request line stays bounded (414 beyond it)")


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _binds(value: Any) -> tuple[BindAddress, ...]:
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ValueError("needs at least one address")
    return tuple(parse_bind(str(item)) for item in items)


def _metrics_bind(value: Any) -> BindAddress | None:
    if value is None:
        return None
    address = parse_bind(str(value))
    if address.is_unix:
        raise ValueError("must be a TCP address, HOST:PORT")
    return address


def _statsd_host(value: Any) -> str | None:
    if value is None:
        return None
    parse_statsd_host(str(value))
    return str(value)


def _bool(value: Any) -> bool:
    """A switch: booleans from files; gunicorn's words for them from the environment."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", "y"):
        return True
    if text in ("0", "false", "no", "off", "n"):
        return False
    raise ValueError("must be true or false")


def _text_list(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)
    return tuple(_text(item) for item in items)


def _raw_env(value: Any) -> tuple[str, ...]:
    entries = _text_list(value)
    for entry in entries:
        if "=" not in entry or entry.startswith("="):
            raise ValueError(f"{entry!r} is not NAME=VALUE")
    return entries


def _mapping(value: Any) -> dict:
    if not isinstance(value, Mapping):
        raise ValueError("must be a dict")
    return dict(value)


def _syslog_address(value: Any) -> str:
    syslog_handler.parse_address(_text(value))
    return value


def _script_name(value: Any) -> str:
    text = str(value).rstrip("/")
    if text and not text.startswith("/"):
        raise ValueError("must start with '/'")
    return text


def _umask(value: Any) -> int:
    number = _whole(value, 0)
    if not 0 <= number <= 0o777:
        raise ValueError("must be a file mode mask between 0 and 0o777")
    return number


def _cert_reqs(value: Any) -> int:
    # gunicorn's values, those of ssl.CERT_NONE/OPTIONAL/REQUIRED (ssl itself
    # is not imported here: the manager must never import it).
    number = _whole(value, 0)
    if not 0 <= number <= 2:
        raise ValueError("must be 0 (none), 1 (optional) or 2 (required)")
    return number


def _address_list(value: Any) -> tuple[str, ...]:
    """Comma-separated addresses and CIDR networks, or ``*``, as gunicorn reads them.

    Networks are checked strictly (``10.0.0.1/8`` has host bits set and is
    refused), so a typo cannot silently trust a wider range than meant.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    entries = tuple(str(item).strip() for item in items if str(item).strip())
    for entry in entries:
        if entry != "*":
            ipaddress.ip_network(entry)
    return entries


def _proxy_protocol(value: Any) -> str:
    # gunicorn 27's values; a bare --proxy-protocol (or True) means auto.
    if value is None or isinstance(value, bool):
        return "auto" if value else "off"
    text = str(value).strip().lower()
    mode = {"off": "off", "false": "off", "0": "off", "none": "off",
            "auto": "auto", "true": "auto", "1": "auto", "v1": "v1", "v2": "v2"}.get(text)
    if mode is None:
        raise ValueError("must be off, v1, v2 or auto (put APP before a bare --proxy-protocol)")
    return mode


def _scheme_headers(value: Any) -> tuple[tuple[str, str], ...]:
    """gunicorn's ``secure_scheme_headers`` dict, as (UPPER-CASE NAME, value) pairs."""
    if not isinstance(value, Mapping):
        raise ValueError("must be a dict of header name to value")
    pairs = []
    for name, expected in value.items():
        if not isinstance(name, str) or not isinstance(expected, str) or not name:
            raise ValueError("names and values must be strings")
        pairs.append((name.strip().upper(), expected))
    return tuple(pairs)


def setting(
    default: Any,
    convert: Callable[[Any], Any],
    help: str,
    flags: tuple[str, ...] = (),
    metavar: str | None = None,
    aliases: tuple[str, ...] = (),
    append: bool = False,
    default_factory: Callable[[], Any] | None = None,
    bare: str | None = None,
    switch: Any = None,
    compat: Compat = SAME,
) -> Any:
    """Declare a ``Config`` field with what the CLI and config files need to know.

    ``aliases`` are extra names accepted in config files (gunicorn's, where
    they differ); ``append`` makes a repeatable flag; ``bare`` is the value of
    a flag given without one (gunicorn's ``--proxy-protocol``); ``switch`` is
    what a flag that never takes a value stores (``--preload``: True,
    ``--no-sendfile``: False). ``compat`` says how the setting relates to
    gunicorn's, and what a value other than the default gets.
    """
    metadata = {
        "convert": convert,
        "help": help,
        "flags": flags,
        "metavar": metavar,
        "aliases": aliases,
        "append": append,
        "bare": bare,
        "switch": switch,
        "compat": compat,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# Hooks that run at another moment than gunicorn's (docs/gunicorn.md's hooks table says
# when each runs, and why).
HOOK_DIFFERENCES = {
    "on_starting": "runs after the listeners are bound (gunicorn binds after it)",
    "when_ready": "with --preload, once the first generation serves (gunicorn: once its "
                  "master imported the application, before forking)",
    "pre_exec": "runs in the old manager on USR2: the new one is started with posix_spawn, "
                "not a fork that then execs",
}


def server_hook(name: str) -> Any:
    """A gunicorn server hook: a function from a config file (or ``gshard.run``),
    checked as gunicorn checks it."""
    difference = HOOK_DIFFERENCES.get(name)
    return setting(None, hook(name),
                   f"gunicorn's {name} server hook (config files and gshard.run() only).",
                   compat=different(difference) if difference else SAME)


@dataclass(frozen=True)
class Config:
    """The validated settings of one gshard run; build it with ``Config.from_values``."""

    config: str | None = setting(
        None, _optional_text,
        "A Python file of settings (gunicorn's names work), or python:MODULE "
        "(default: ./gshard.conf.py if present, else ./gunicorn.conf.py).",
        flags=("-c", "--config"), metavar="FILE",
        compat=different("without -c, ./gshard.conf.py is read if present, before "
                         "./gunicorn.conf.py"),
    )
    app: str = setting(
        None, _text, "The WSGI application, as MODULE:ATTR or MODULE:FACTORY(ARGS).",
        aliases=("wsgi_app",),
    )
    bind: tuple[BindAddress, ...] = setting(
        None, _binds,
        "Address to listen on: HOST:PORT, [IPV6]:PORT, :PORT or unix:PATH. Repeatable. "
        "Port 0 picks one free port for all shards.",
        flags=("-b", "--bind"), metavar="ADDRESS", append=True,
        default_factory=lambda: (BindAddress("127.0.0.1", DEFAULT_PORT),),
    )
    shards: int = setting(
        None, _int_range(1, 1024),
        "Number of shard processes, each with its own listener (default: one per CPU this "
        "process may use: its CPU affinity, capped by a cgroup CPU quota).",
        flags=("--shards", "-w", "--workers"), metavar="N", aliases=("workers",),
        default_factory=usable_cpus,
        compat=different("default $WEB_CONCURRENCY, else one per CPU (gunicorn: 1)"),
    )
    worker_class: str = setting(
        "gevent", compat.worker_class_name,
        "gevent; gunicorn's sync, gthread and eventlet are accepted with a warning "
        "(the application runs on greenlets).",
        flags=("-k", "--worker-class"), metavar="CLASS",
        compat=Compat("different", "gevent as in gunicorn; sync, gthread and eventlet start "
                      "with a warning (the application runs on greenlets under gevent's "
                      "patching); ASGI classes are refused: gshard serves WSGI",
                      judge=compat.judge_worker_class),
    )
    worker_connections: int = setting(
        1000, _int_range(1),
        "Most connections one shard serves at once; past it the shard stops accepting.",
        flags=("--worker-connections",), metavar="N",
    )
    backlog: int = setting(
        2048, _int_range(1, 65535), "Length of each listener's accept queue.",
        flags=("--backlog",), metavar="N",
    )
    keepalive: float = setting(
        2.0, _seconds, "Seconds to wait for the next request on a keep-alive connection.",
        flags=("--keep-alive",), metavar="SECONDS",
    )
    header_timeout: float = setting(
        10.0, _seconds,
        "Seconds a request head may take to arrive in full (slow clients are cut off).",
        flags=("--header-timeout",), metavar="SECONDS", compat=GSHARD,
    )
    body_timeout: float = setting(
        30.0, _seconds,
        "Seconds a request body or a response may stall before the connection is dropped.",
        flags=("--body-timeout",), metavar="SECONDS", compat=GSHARD,
    )
    timeout: float = setting(
        30.0, _seconds,
        "Seconds a shard's event loop may stay blocked before the shard is replaced "
        "(0 disables).",
        flags=("-t", "--timeout"), metavar="SECONDS",
    )
    graceful_timeout: float = setting(
        30.0, _seconds,
        "Seconds a stopping shard has to finish its requests before it is killed.",
        flags=("--graceful-timeout",), metavar="SECONDS",
    )
    shutdown_delay: float = setting(
        0.0, _seconds,
        "On SIGTERM, keep accepting and serving this many seconds (readiness fails at once; "
        "every response closes its connection) while load balancers drop this server, then "
        "drain within --graceful-timeout. A second SIGTERM ends the delay early.",
        flags=("--shutdown-delay",), metavar="SECONDS", compat=GSHARD,
    )
    boot_timeout: float = setting(
        30.0, _seconds,
        "Seconds a new shard has to import the application and start serving.",
        flags=("--boot-timeout",), metavar="SECONDS", compat=GSHARD,
    )
    limit_request_line: int = setting(
        MAX_REQUEST_LINE, _int_range(0, MAX_REQUEST_LINE),
        "Longest request line in bytes (beyond it 414, or 400 if the method leaves no room "
        f"for a target), at most {MAX_REQUEST_LINE}; 0 means {MAX_REQUEST_LINE} too "
        "(gunicorn reads 0 as no limit).",
        flags=("--limit-request-line",), metavar="BYTES",
        compat=Compat("different", f"default {MAX_REQUEST_LINE}, gunicorn's maximum "
                      "(gunicorn: 4094), since RFC 9112 section 3 asks for at least 8,000 "
                      f"octets; 0 means {MAX_REQUEST_LINE} with one warning (gunicorn: no "
                      "limit, lines up to 1 MiB)", judge=_judge_request_line),
    )
    limit_request_fields: int = setting(
        100, _int_range(0, MAX_FIELDS),
        f"Most header fields in a request (431 beyond it); 0 means the maximum, {MAX_FIELDS}.",
        flags=("--limit-request-fields",), metavar="N",
    )
    limit_request_field_size: int = setting(
        DEFAULT_FIELD_SIZE, _int_range(0, MAX_FIELD_SIZE),
        "Longest header field line in bytes, CRLF included (431 beyond it), at most "
        f"{MAX_FIELD_SIZE}; 0 means the default, {DEFAULT_FIELD_SIZE}, as in gunicorn.",
        # gunicorn spells its flag with an underscore; both are accepted.
        flags=("--limit-request-field-size", "--limit-request-field_size"), metavar="BYTES",
    )
    limit_request_head: int = setting(
        65536, _int_range(0),
        "Largest whole request head in bytes (431 beyond it), so a stalled head costs "
        "each connection at most this much memory; 0 leaves only the per-line limits.",
        flags=("--limit-request-head",), metavar="BYTES", compat=GSHARD,
    )
    limit_request_body: int = setting(
        0, _int_range(0), "Largest request body in bytes (413 beyond it); 0 is unlimited.",
        flags=("--limit-request-body",), metavar="BYTES", compat=GSHARD,
    )
    max_requests: int = setting(
        0, _int_range(0),
        "Replace a shard after it served this many requests (0 disables).",
        flags=("--max-requests",), metavar="N",
    )
    max_requests_jitter: int = setting(
        0, _int_range(0), "Random extra requests added to --max-requests per shard.",
        flags=("--max-requests-jitter",), metavar="N",
    )
    chdir: str | None = setting(
        None, _optional_text, "Change to this directory before loading the application.",
        flags=("--chdir",), metavar="DIR",
    )
    pidfile: str | None = setting(
        None, _optional_text, "Write the manager's PID to this file.",
        flags=("-p", "--pid"), metavar="FILE",
    )
    user: str | None = setting(
        None, _optional_text,
        "Run the shards as this user (name or uid); the manager stays root to bind.",
        flags=("-u", "--user"), metavar="USER",
    )
    group: str | None = setting(
        None, _optional_text, "Run the shards as this group (default: the user's).",
        flags=("-g", "--group"), metavar="GROUP",
    )
    umask: int | None = setting(
        None, _umask, "File mode mask for files gshard creates (unix sockets, pidfile), "
        "e.g. 0o007.", flags=("-m", "--umask"), metavar="MASK",
        compat=different("by default the umask is left as gshard was started with "
                         "(gunicorn sets 0)"),
    )
    control_socket: str | None = setting(
        None, _optional_text,
        "Unix socket on which 'gshard status', 'reload' and the others reach this manager "
        "(default: PIDFILE.ctl with --pid, else a path of this manager's own under "
        "$XDG_RUNTIME_DIR/gshard/, ~/.gshard/ or a private runtime directory, where the "
        "commands find it without options).",
        flags=("--control-socket",), metavar="PATH",
        compat=different("default PIDFILE.ctl with --pid, else a path of each manager's own "
                         "under $XDG_RUNTIME_DIR/gshard/, ~/.gshard/ or a private runtime "
                         "directory, so two instances never collide (gunicorn: one fixed "
                         "path, $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl)"),
    )
    control_socket_disable: bool = setting(
        False, _bool, "Open no control socket.",
        flags=("--no-control-socket",), switch=True,
    )
    proc_name: str | None = setting(
        None, _optional_text, "Name shown in process titles (default: the APP).",
        flags=("-n", "--name"), metavar="NAME",
    )
    certfile: str | None = setting(
        None, _optional_text, "TLS certificate file (PEM); serve HTTPS on every listener.",
        flags=("--certfile",), metavar="FILE",
    )
    keyfile: str | None = setting(
        None, _optional_text, "TLS private key file (PEM), if not in --certfile.",
        flags=("--keyfile",), metavar="FILE",
    )
    ca_certs: str | None = setting(
        None, _optional_text, "CA certificates (PEM) that client certificates are checked against.",
        flags=("--ca-certs",), metavar="FILE",
    )
    cert_reqs: int = setting(
        0, _cert_reqs,
        "Client certificates: 0 not asked for, 1 checked if sent, 2 required.",
        flags=("--cert-reqs",), metavar="N",
    )
    ciphers: str | None = setting(
        None, _optional_text, "TLS cipher suites, as an OpenSSL cipher list (default: Python's).",
        flags=("--ciphers",), metavar="CIPHERS",
    )
    forwarded_allow_ips: tuple[str, ...] = setting(
        None, _address_list,
        "Proxies (addresses, CIDR networks, '*' for any) whose X-Forwarded-For and "
        "scheme headers are believed (default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1).",
        flags=("--forwarded-allow-ips",), metavar="ADDRESSES",
        default_factory=lambda: ("127.0.0.1", "::1"),
        compat=different("X-Forwarded-For from an allowed proxy sets REMOTE_ADDR (read "
                         "from the right, past other allowed proxies); gunicorn leaves it "
                         "to the application"),
    )
    secure_scheme_headers: tuple[tuple[str, str], ...] = setting(
        None, _scheme_headers,
        "Headers (and values) by which a trusted proxy says the request came over HTTPS.",
        default_factory=lambda: (
            ("X-FORWARDED-PROTOCOL", "ssl"), ("X-FORWARDED-PROTO", "https"),
            ("X-FORWARDED-SSL", "on"),
        ),
    )
    proxy_protocol: str = setting(
        "off", _proxy_protocol,
        "Require a PROXY protocol header (v1, v2, or auto: either) at the start of "
        "every connection; a bare --proxy-protocol means auto.",
        flags=("--proxy-protocol",), metavar="MODE", bare="auto",
        compat=different("a connection without a PROXY header is refused, not served, "
                         "and forwarded headers are judged by the client the header names"),
    )
    proxy_allow_ips: tuple[str, ...] = setting(
        None, _address_list,
        "Peers (addresses, CIDR networks, '*' for any) allowed to connect with "
        "--proxy-protocol.",
        flags=("--proxy-allow-from",), metavar="ADDRESSES",
        default_factory=lambda: ("127.0.0.1", "::1"),
    )
    loglevel: str = setting(
        "info", _choice("debug", "info", "warning", "error", "critical"),
        "Error log level.", flags=("--log-level",), metavar="LEVEL",
    )
    errorlog: str = setting(
        "-", _text, "Error log file, '-' for stderr.",
        flags=("--error-logfile", "--log-file"), metavar="FILE",
    )
    accesslog: str | None = setting(
        None, _optional_text, "Access log file, '-' for stdout (default: none).",
        flags=("--access-logfile",), metavar="FILE",
    )
    access_log_format: str = setting(
        DEFAULT_ACCESS_FORMAT, _access_format, "Access log format, in gunicorn's atoms.",
        flags=("--access-logformat",), metavar="FORMAT",
    )
    metrics_bind: BindAddress | None = setting(
        None, _metrics_bind,
        "Serve Prometheus metrics at http://HOST:PORT/metrics, answered by the manager "
        "(default: off). Not the application's port.",
        flags=("--metrics-bind",), metavar="HOST:PORT", compat=GSHARD,
    )
    statsd_host: str | None = setting(
        None, _statsd_host,
        "Send gunicorn's statsd metrics to HOST:PORT (or unix:PATH) once a second.",
        flags=("--statsd-host",), metavar="HOST:PORT",
    )
    statsd_prefix: str = setting(
        "", str, "Prefix of the statsd metric names (a dot is added).",
        flags=("--statsd-prefix",), metavar="PREFIX",
    )
    dogstatsd_tags: str = setting(
        "", str, "DogStatsD tags added to every statsd metric: 'key:value,key:value'.",
        flags=("--dogstatsd-tags",), metavar="TAGS",
    )
    daemon: bool = setting(
        False, _bool, "Detach from the terminal once the listeners are bound (use a "
        "supervisor's Type=notify instead where there is one).",
        flags=("-D", "--daemon"), switch=True,
    )
    enable_stdio_inheritance: bool = setting(
        False, _bool, "With --daemon, keep stdin, stdout and stderr instead of /dev/null.",
        flags=("-R", "--enable-stdio-inheritance"), switch=True,
    )
    syslog: bool = setting(
        False, _bool, "Also send the error log (and the access log) to syslog.",
        flags=("--log-syslog",), switch=True,
    )
    syslog_addr: str = setting(
        "udp://localhost:514", _syslog_address,
        "Where syslog is: udp://HOST:PORT, tcp://HOST:PORT or unix://PATH[#dgram|#stream].",
        flags=("--log-syslog-to",), metavar="ADDRESS",
    )
    syslog_prefix: str | None = setting(
        None, _optional_text, "The syslog tag's middle: gunicorn.PREFIX.error (default: "
        "--name, else the APP).", flags=("--log-syslog-prefix",), metavar="PREFIX",
    )
    syslog_facility: str = setting(
        "user", _choice(*syslog_handler.FACILITIES), "The syslog facility.",
        flags=("--log-syslog-facility",), metavar="FACILITY",
    )
    disable_redirect_access_to_syslog: bool = setting(
        False, _bool, "Keep the access log out of syslog.",
        flags=("--disable-redirect-access-to-syslog",), switch=True,
    )
    capture_output: bool = setting(
        False, _bool, "Send the application's stdout and stderr to --error-logfile.",
        flags=("--capture-output",), switch=True,
    )
    logconfig: str | None = setting(
        None, _optional_text,
        "A logging.config.fileConfig file, applied after gshard's own logging setup.",
        flags=("--log-config",), metavar="FILE",
    )
    logconfig_dict: dict = setting(
        None, _mapping, "A logging.config.dictConfig dict (config files and gshard.run() only), "
        "laid over gunicorn's logging defaults key by key, as gunicorn does.",
        default_factory=dict,
    )
    logconfig_json: str | None = setting(
        None, _optional_text, "A JSON file holding a logging.config.dictConfig dict, laid "
        "over gunicorn's logging defaults as logconfig_dict is.",
        flags=("--log-config-json",), metavar="FILE",
    )
    raw_env: tuple[str, ...] = setting(
        None, _raw_env, "Set an environment variable (NAME=VALUE) for the application. "
        "Repeatable.", flags=("-e", "--env"), metavar="NAME=VALUE", append=True,
        default_factory=tuple,
    )
    pythonpath: str | None = setting(
        None, _optional_text,
        "Comma-separated directories put first on sys.path, e.g. /srv/lib,/srv/app.",
        flags=("--pythonpath",), metavar="DIRS",
    )
    script_name: str = setting(
        "", _script_name,
        "Where the application is mounted (WSGI SCRIPT_NAME; default: $SCRIPT_NAME); "
        "PATH_INFO is what follows it.",
        compat=GSHARD,
    )
    initgroups: bool = setting(
        False, _bool,
        "Give shards every group of --user; without it they keep only --group.",
        flags=("--initgroups",), switch=True,
        compat=different("without it, shards have only their group: gunicorn's workers keep "
                         "the supplementary groups gunicorn was started with (root's)"),
    )
    sendfile: bool = setting(
        True, _bool, "Read wsgi.file_wrapper files and send their bytes instead of handing "
        "them to sendfile() (sendfile = False; sendfile is on unless $SENDFILE says otherwise).",
        flags=("--no-sendfile",), switch=False,
    )
    reuse_port: bool = setting(
        True, _bool, "Always on: each shard has its own SO_REUSEPORT listener.",
        flags=("--reuse-port",), switch=True,
        compat=ignored("always on: each shard has its own SO_REUSEPORT listener"),
    )
    preload_app: bool = setting(
        False, _bool, "Import the application once per generation, in a template process that "
        "forks that generation's shards, so they share its memory copy-on-write; a reload "
        "still loads new code.", flags=("--preload",), switch=True,
        compat=different("one template process per generation imports the application, so a "
                         "reload loads new code (gunicorn's master keeps the old); post_fork "
                         "runs after gevent's patching; with --user the template imports as "
                         "that user (gunicorn's master imports as root), so no application "
                         "code runs as root and what it reads at import must be the user's"),
    )
    reload: bool = setting(
        False, _bool, "Hot-reload when a source file of the application (or a "
        "--reload-extra-file) changes; for development.", flags=("--reload",), switch=True,
        compat=different("a hot reload through the lossless handover; a file that fails to "
                         "load keeps the old code serving"),
    )
    reload_engine: str = setting(
        "auto", _choice("auto", "poll", "inotify"), "Accepted for gunicorn's sake: gshard "
        "compares modification times once a second, whatever the engine.",
        compat=different("accepted; gshard compares modification times once a second "
                         "whatever the engine"),
        flags=("--reload-engine",), metavar="ENGINE",
    )
    reload_extra_files: tuple[str, ...] = setting(
        None, _text_list, "Another file (or glob) --reload watches. Repeatable.",
        flags=("--reload-extra-file",), metavar="FILE", append=True, default_factory=tuple,
    )
    check_config: bool = setting(
        False, _bool, "Check the configuration, import the application in a child process, "
        "and exit: 0, or 1 with the reason.", flags=("--check-config",), switch=True,
    )
    print_config: bool = setting(
        False, _bool, "Print the effective settings and exit.",
        flags=("--print-config",), switch=True,
    )
    # --- bookkeeping: what the configuration said, not settings one can give -----
    gunicorn_only: tuple[tuple[str, Any], ...] = setting(
        (), tuple, "gunicorn settings given that gshard has no use for, as (name, value).",
        compat=GSHARD,
    )
    misspelt: tuple[tuple[str, str], ...] = setting(
        (), tuple, "Names in the config file that look like a misspelt setting, as "
        "(name, the setting it resembles).", compat=GSHARD,
    )
    given: frozenset[str] = setting(
        frozenset(), frozenset, "The settings the configuration gave, whatever the source "
        "(the others have their defaults).", compat=GSHARD,
    )
    # gunicorn's server hooks, as gunicorn checks them; called at gunicorn's moments.
    on_starting: Callable | None = server_hook("on_starting")
    on_reload: Callable | None = server_hook("on_reload")
    when_ready: Callable | None = server_hook("when_ready")
    pre_fork: Callable | None = server_hook("pre_fork")
    post_fork: Callable | None = server_hook("post_fork")
    post_worker_init: Callable | None = server_hook("post_worker_init")
    worker_int: Callable | None = server_hook("worker_int")
    worker_abort: Callable | None = server_hook("worker_abort")
    pre_exec: Callable | None = server_hook("pre_exec")
    pre_request: Callable | None = server_hook("pre_request")
    post_request: Callable | None = server_hook("post_request")
    child_exit: Callable | None = server_hook("child_exit")
    worker_exit: Callable | None = server_hook("worker_exit")
    nworkers_changed: Callable | None = server_hook("nworkers_changed")
    on_exit: Callable | None = server_hook("on_exit")
    ssl_context: Callable | None = server_hook("ssl_context")

    @classmethod
    def from_values(cls, values: Mapping[str, Any],
                    misspelt: Iterable[tuple[str, str]] = ()) -> Config:
        """Convert and check raw values (strings from the CLI or Python from a file).

        Each value is converted by its setting, and a failure names the setting
        and the rule it broke; so does a value gunicorn accepts and gshard
        refuses. gunicorn's settings that gshard has no field for are judged
        the same way and kept in ``gunicorn_only`` (to warn about); any other
        name is refused. ``misspelt``: the config file's names that look like a
        misspelt setting (kept to warn about).
        """
        known = {f.name: f for f in dataclasses.fields(cls)}
        converted: dict[str, Any] = {}
        foreign = []
        for name, raw in values.items():
            spec = known.get(name)
            if spec is None or spec.name in BOOKKEEPING:
                foreign.append((name, _judge_gunicorn_only(name, raw)))
                continue
            try:
                converted[name] = spec.metadata["convert"](raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{flag_name(spec)}: {exc} (got {raw!r})") from None
            try:
                spec.metadata["compat"].verdict(converted[name], default_of(spec), name)
            except ValueError as exc:
                raise ConfigError(f"{flag_name(spec)}: {exc}") from None
        converted["gunicorn_only"] = tuple(foreign)
        converted["misspelt"] = tuple(misspelt)
        converted["given"] = frozenset(values)
        if "app" not in converted:
            raise ConfigError("the application is required (APP, e.g. myapp:app)")
        config = cls(**converted)
        config.validate()
        return config

    def validate(self) -> None:
        """Rules that involve more than one setting."""
        if self.max_requests_jitter and not self.max_requests:
            raise ConfigError("--max-requests-jitter needs --max-requests")
        if self.certfile is None:
            for name, flag in (("keyfile", "--keyfile"), ("ca_certs", "--ca-certs"),
                               ("cert_reqs", "--cert-reqs"), ("ciphers", "--ciphers")):
                if getattr(self, name):
                    raise ConfigError(f"{flag} needs --certfile (TLS is off without it)")
        tcp = [b for b in self.bind if not b.is_unix]
        if len({(b.host, b.port) for b in tcp}) != len(tcp):
            raise ConfigError("--bind: the same address is given twice")
        metrics = self.metrics_bind
        if metrics is not None and metrics.port and metrics.port in {b.port for b in tcp}:
            raise ConfigError("--metrics-bind: must not be the application's port "
                              f"({metrics.port})")

    def compat_warnings(self) -> list[str]:
        """What a start says once, as warnings: each setting given that gshard accepts but
        that means nothing or something else here (``--threads``, ``-k sync``), each name
        of the config file that looks like a misspelt setting, and the defaults and
        values a gunicorn user would not expect (one shard per CPU, a trust in
        forwarded headers from anyone)."""
        lines = []
        for spec in settings():
            value = getattr(self, spec.name)
            lines.append(spec.metadata["compat"].verdict(value, default_of(spec), spec.name))
        for name, value in self.gunicorn_only:
            entry = compat.gunicorn_only(name)
            if entry is not None:
                lines.append(entry.compat.verdict(value, entry.default, name))
        lines += [f"Ignoring {name!r} in {self.config}: not a setting; did you mean {meant}?"
                  for name, meant in self.misspelt]
        logging_configs = [name for name in ("logconfig_dict", "logconfig_json", "logconfig")
                           if getattr(self, name)]
        if len(logging_configs) > 1:
            lines.append(f"Ignoring {' and '.join(logging_configs[1:])}: {logging_configs[0]} "
                         "is given, and one logging config applies, as in gunicorn")
        if "shards" not in self.given:
            lines.append(
                f"Starting one shard per CPU ({self.shards}): neither workers nor "
                "$WEB_CONCURRENCY is set, and gunicorn would start 1 worker. To keep "
                "gunicorn's count, set workers = 1 (or -w 1, or WEB_CONCURRENCY=1)")
        tcp = [str(b) for b in self.bind if not b.is_unix]
        if "*" in self.forwarded_allow_ips and tcp:
            lines.append(
                f"forwarded_allow_ips = '*' on {', '.join(tcp)}: any client that connects "
                "directly chooses its REMOTE_ADDR and scheme (X-Forwarded-For, "
                "X-Forwarded-Proto); list your proxies' addresses instead")
        return [line for line in lines if line is not None]

    def describe(self) -> str:
        """Every setting as ``name = value``, sorted, as gunicorn's --print-config shows them.

        A request limit given as 0 shows the value enforced, then what was given
        (``limit_request_line = 8190  # given as 0``): a bare 0 would read as "no
        limit", which it is not here.
        """
        shown = {spec.name: getattr(self, spec.name) for spec in settings()
                 if spec.name not in BOOKKEEPING}
        enforced = self.limits_kwargs()
        width = max(len(name) for name in shown)
        lines = []
        for name, value in sorted(shown.items()):
            if callable(value):
                value = f"<{value.__qualname__}()>"
            elif name == "bind":
                value = [str(address) for address in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif name in _ZERO_MEANS and value == 0:
                value = f"{enforced[_ZERO_MEANS[name]]}  # given as 0"
            lines.append(f"{name:{width}} = {value}")
        return "\n".join(lines)

    @property
    def tls(self) -> bool:
        """Whether the listeners speak TLS."""
        return self.certfile is not None

    @property
    def control_path(self) -> str | None:
        """The control socket's path when one is given (``--control-socket``, or
        ``FILE.ctl`` beside ``--pid``); None: the manager chooses its own
        (``manager.discovery``), unless ``--no-control-socket``."""
        if self.control_socket_disable:
            return None
        if self.control_socket:
            return self.control_socket
        return f"{self.pidfile}.ctl" if self.pidfile else None

    def limits_kwargs(self) -> dict[str, int]:
        """The request limits as enforced, each 0 read as gunicorn 27 reads it
        (``http/message.py``): no more fields than 32768, a field line of the default
        8190; but a request line of 8190 where gunicorn has no limit (said once at
        start: a server facing hostile input keeps its bound)."""
        return {
            "request_line": self.limit_request_line or MAX_REQUEST_LINE,
            "fields": self.limit_request_fields or MAX_FIELDS,
            "field_size": self.limit_request_field_size or DEFAULT_FIELD_SIZE,
            "body": self.limit_request_body,
            "head_total": self.limit_request_head,
        }


# Fields that record what the configuration said rather than settings one can give.
BOOKKEEPING = frozenset({"gunicorn_only", "misspelt", "given"})

# The limits whose 0 stands for a number (``limits_kwargs``' keys): --print-config shows it.
_ZERO_MEANS = {"limit_request_line": "request_line", "limit_request_fields": "fields",
               "limit_request_field_size": "field_size"}


def _judge_gunicorn_only(name: str, raw: Any) -> Any:
    """The value of a gunicorn setting gshard has no field for; ConfigError if refused."""
    entry = compat.gunicorn_only(name)
    if entry is None:
        raise ConfigError(f"unknown setting {name!r}")
    if entry.takes == "value" and isinstance(raw, str) and raw == str(entry.default):
        raw = entry.default  # the default spelled on a command line changes nothing
    try:
        entry.compat.verdict(raw, entry.default, name)
    except ValueError as exc:
        raise ConfigError(f"{next(iter(entry.flags), name)}: {exc}") from None
    return raw


def default_of(spec: dataclasses.Field) -> Any:
    """A setting's default value."""
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory()


def settings() -> Iterable[dataclasses.Field]:
    """The settings table, in declaration order."""
    return dataclasses.fields(Config)


def flag_name(spec: dataclasses.Field) -> str:
    """How to name a setting in a message: its long flag, else its name."""
    flags = spec.metadata["flags"]
    return next((f for f in flags if f.startswith("--")), spec.name)


def config_names() -> dict[str, str]:
    """Names a config file may use (settings and their aliases) -> setting name."""
    names = {}
    for spec in settings():
        if spec.name in BOOKKEEPING:
            continue
        names[spec.name] = spec.name
        for alias in spec.metadata["aliases"]:
            names[alias] = spec.name
    return names


# The settings by what a reader looks for: `gshard --help` and the settings
# reference show them in these groups (a unit test holds every setting to
# exactly one), in the order of the table above within each.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Application", ("config", "app", "chdir", "pythonpath", "raw_env", "script_name",
                     "preload_app", "check_config", "print_config")),
    ("Listening", ("bind", "backlog", "reuse_port")),
    ("Shards and connections", ("shards", "worker_class", "worker_connections", "keepalive",
                                "max_requests", "max_requests_jitter", "sendfile")),
    ("Timeouts", ("header_timeout", "body_timeout", "timeout", "graceful_timeout",
                  "shutdown_delay", "boot_timeout")),
    ("Request limits", ("limit_request_line", "limit_request_fields",
                        "limit_request_field_size", "limit_request_head",
                        "limit_request_body")),
    ("TLS", ("certfile", "keyfile", "ca_certs", "cert_reqs", "ciphers")),
    ("Proxies", ("forwarded_allow_ips", "secure_scheme_headers", "proxy_protocol",
                 "proxy_allow_ips")),
    ("Process", ("pidfile", "user", "group", "initgroups", "umask", "daemon",
                 "enable_stdio_inheritance", "proc_name", "control_socket",
                 "control_socket_disable")),
    ("Logging", ("loglevel", "errorlog", "accesslog", "access_log_format", "capture_output",
                 "logconfig", "logconfig_dict", "logconfig_json", "syslog", "syslog_addr",
                 "syslog_prefix", "syslog_facility", "disable_redirect_access_to_syslog")),
    ("Metrics", ("metrics_bind", "statsd_host", "statsd_prefix", "dogstatsd_tags")),
    ("Development", ("reload", "reload_engine", "reload_extra_files")),
    ("Server hooks", ("on_starting", "on_reload", "when_ready", "pre_fork", "post_fork",
                      "post_worker_init", "worker_int", "worker_abort", "pre_exec",
                      "pre_request", "post_request", "child_exit", "worker_exit",
                      "nworkers_changed", "on_exit", "ssl_context")),
)


def grouped_settings() -> list[tuple[str, list[dataclasses.Field]]]:
    """The settings table in ``GROUPS``' order: (group title, its settings)."""
    by_name = {spec.name: spec for spec in settings()}
    return [(title, [by_name[name] for name in names]) for title, names in GROUPS]


if __name__ == "__main__":  # the gunicorn page's table: each gunicorn setting and what it gets
    print(compat.migration_table(settings()))
