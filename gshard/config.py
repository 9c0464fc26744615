"""Every setting, declared once: its type, default, check, help and CLI flags.

Each field of ``Config`` carries its own metadata, so the command line
(``cli.py``), config files and validation all read the same table and cannot
drift apart. Nothing here touches the network, the file system or the
application: ``Config`` is checked data, built before anything binds.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gshard.errors import ConfigError
from gshard.log import DEFAULT_ACCESS_FORMAT

# --- bind addresses ----------------------------------------------------------


@dataclass(frozen=True)
class BindAddress:
    """Where to listen: a TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    unix_path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.unix_path is not None

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def url(self, port: int | None = None) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"http://{host}:{self.port if port is None else port}"


DEFAULT_PORT = 8000


def parse_bind(text: str) -> BindAddress:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT``, ``HOST`` or ``unix:PATH``, read as gunicorn does."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("unix: needs a path")
        return BindAddress(unix_path=path)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed IPv6 address {text!r}")
        port_text = rest[1:] if rest else str(DEFAULT_PORT)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, str(DEFAULT_PORT)
        if ":" in host:
            raise ValueError(f"an IPv6 address needs brackets: [{host}]:{port_text}")
        host = host or "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port {port_text!r} (0-65535)")
    return BindAddress(host=host, port=int(port_text))


# --- converters: each takes a CLI string or a config-file value ----------


def _int_range(low: int, high: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        number = int(value)
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {bound}")
        return number

    convert.__name__ = "integer"
    return convert


def _seconds(value: Any) -> float:
    number = float(value)
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


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _binds(value: Any) -> tuple[BindAddress, ...]:
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ValueError("needs at least one address")
    return tuple(parse_bind(str(item)) for item in items)


def _worker_class(value: Any) -> str:
    text = str(value).lower()
    # gunicorn's spellings of "gevent", so a command line moved from gunicorn works.
    if text not in ("gevent", "gunicorn.workers.ggevent.geventworker"):
        raise ValueError("gshard shards always run gevent; only 'gevent' is accepted")
    return "gevent"


def _umask(value: Any) -> int:
    number = int(value, 0) if isinstance(value, str) else int(value)
    if not 0 <= number <= 0o777:
        raise ValueError("must be a file mode mask between 0 and 0o777")
    return number


def _cert_reqs(value: Any) -> int:
    # gunicorn's values, those of ssl.CERT_NONE/OPTIONAL/REQUIRED (ssl itself
    # is not imported here: the manager must never import it).
    number = int(value, 0) if isinstance(value, str) else int(value)
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
) -> Any:
    """Declare a ``Config`` field with what the CLI and config files need to know.

    ``aliases`` are extra names accepted in config files (gunicorn's, where
    they differ); ``append`` makes a repeatable flag; ``bare`` is the value of
    a flag given without one (gunicorn's ``--proxy-protocol``).
    """
    metadata = {
        "convert": convert,
        "help": help,
        "flags": flags,
        "metavar": metavar,
        "aliases": aliases,
        "append": append,
        "bare": bare,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Config:
    """The validated settings of one gshard run; build it with ``Config.from_values``."""

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
        "Number of shard processes, each with its own listener (default: one per CPU).",
        flags=("--shards", "-w", "--workers"), metavar="N", aliases=("workers",),
        default_factory=lambda: os.cpu_count() or 1,
    )
    worker_class: str = setting(
        "gevent", _worker_class, "Accepted for gunicorn compatibility; only gevent.",
        flags=("-k", "--worker-class"), metavar="CLASS",
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
        flags=("--header-timeout",), metavar="SECONDS",
    )
    body_timeout: float = setting(
        30.0, _seconds,
        "Seconds a request body or a response may stall before the connection is dropped.",
        flags=("--body-timeout",), metavar="SECONDS",
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
    boot_timeout: float = setting(
        30.0, _seconds,
        "Seconds a new shard has to import the application and start serving.",
        flags=("--boot-timeout",), metavar="SECONDS",
    )
    limit_request_line: int = setting(
        4094, _int_range(0, 8190),
        "Longest request line in bytes (414 beyond it); 0 means the maximum, 8190.",
        flags=("--limit-request-line",), metavar="BYTES",
    )
    limit_request_fields: int = setting(
        100, _int_range(0, 32768),
        "Most header fields in a request (431 beyond it); 0 means the maximum, 32768.",
        flags=("--limit-request-fields",), metavar="N",
    )
    limit_request_field_size: int = setting(
        8190, _int_range(0, 65536),
        "Longest header field line in bytes, CRLF included (431 beyond it); "
        "0 means the maximum, 65536.",
        # gunicorn spells its flag with an underscore; both are accepted.
        flags=("--limit-request-field-size", "--limit-request-field_size"), metavar="BYTES",
    )
    limit_request_head: int = setting(
        65536, _int_range(0),
        "Largest whole request head in bytes (431 beyond it), so a stalled head costs "
        "each connection at most this much memory; 0 leaves only the per-line limits.",
        flags=("--limit-request-head",), metavar="BYTES",
    )
    limit_request_body: int = setting(
        0, _int_range(0), "Largest request body in bytes (413 beyond it); 0 is unlimited.",
        flags=("--limit-request-body",), metavar="BYTES",
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
    )
    control_socket: str | None = setting(
        None, _optional_text,
        "Unix socket on which 'gshard reload' reaches this manager "
        "(default: PIDFILE.ctl when --pid is given).",
        flags=("--control-socket",), metavar="PATH",
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
        DEFAULT_ACCESS_FORMAT, _text, "Access log format, in gunicorn's atoms.",
        flags=("--access-logformat",), metavar="FORMAT",
    )

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Config:
        """Convert and check raw values (strings from the CLI or Python from a file).

        Unknown names are refused, each value is converted by its setting, and
        a failure names the setting and the rule it broke.
        """
        known = {f.name: f for f in dataclasses.fields(cls)}
        converted: dict[str, Any] = {}
        for name, raw in values.items():
            spec = known.get(name)
            if spec is None:
                raise ConfigError(f"unknown setting {name!r}")
            try:
                converted[name] = spec.metadata["convert"](raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{flag_name(spec)}: {exc} (got {raw!r})") from None
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

    @property
    def tls(self) -> bool:
        """Whether the listeners speak TLS."""
        return self.certfile is not None

    @property
    def control_path(self) -> str | None:
        """Where the control socket lives, if anywhere."""
        if self.control_socket:
            return self.control_socket
        return f"{self.pidfile}.ctl" if self.pidfile else None

    def limits_kwargs(self) -> dict[str, int]:
        """The request limits, with gunicorn's 0-means-maximum applied."""
        return {
            "request_line": self.limit_request_line or 8190,
            "fields": self.limit_request_fields or 32768,
            "field_size": self.limit_request_field_size or 65536,
            "body": self.limit_request_body,
            "head_total": self.limit_request_head,
        }


def settings() -> Iterable[dataclasses.Field]:
    """The settings table, in declaration order."""
    return dataclasses.fields(Config)


def flag_name(spec: dataclasses.Field) -> str:
    """How to name a setting in a message: its long flag, else its name."""
    flags = spec.metadata["flags"]
    return next((f for f in flags if f.startswith("--")), spec.name.upper())


def config_names() -> dict[str, str]:
    """Names a config file may use (settings and their aliases) -> setting name."""
    names = {}
    for spec in settings():
        names[spec.name] = spec.name
        for alias in spec.metadata["aliases"]:
            names[alias] = spec.name
    return names
