"""The settings table, the command line built from it, and gunicorn compatibility."""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap

import pytest

from gshard import log
from gshard.addresses import BindAddress, parse_bind
from gshard.cli import arguments, serve
from gshard.cli.main import main
from gshard.config import Config, config_names, flag_name, settings
from gshard.errors import EXIT_USAGE, ConfigError
from gshard.gunicorn_compat import migration_table


@pytest.fixture(autouse=True)
def _no_port_env(monkeypatch, tmp_path):
    # parse_config reads variables (as gunicorn does: $PORT on PaaS,
    # $WEB_CONCURRENCY, ...) and ./gunicorn.conf.py; keep them out of the way.
    for name in ("PORT", "FORWARDED_ALLOW_IPS", "WEB_CONCURRENCY", "SCRIPT_NAME", "SENDFILE",
                 "GUNICORN_CMD_ARGS", "GSHARD_CMD_ARGS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "start").mkdir()
    monkeypatch.chdir(tmp_path / "start")


def parse(*argv: str) -> Config:
    return arguments.parse_config(list(argv))


# For each setting with flags: a command-line value, what it converts to, and
# any other setting it needs. A new flagged setting without a row fails the
# parity test, so the table has to grow with the settings.
SAMPLES = {
    "bind": ("10.1.2.3:9001", (BindAddress("10.1.2.3", 9001),), {}),
    "shards": ("7", 7, {}),
    # The one value there is; gunicorn's class path is converted to it.
    "worker_class": ("gunicorn.workers.ggevent.GeventWorker", "gevent", {}),
    "worker_connections": ("77", 77, {}),
    "backlog": ("64", 64, {}),
    "keepalive": ("7.5", 7.5, {}),
    "header_timeout": ("3", 3.0, {}),
    "body_timeout": ("4", 4.0, {}),
    "timeout": ("0", 0.0, {}),
    "graceful_timeout": ("5", 5.0, {}),
    "shutdown_delay": ("2.5", 2.5, {}),
    "boot_timeout": ("6", 6.0, {}),
    "limit_request_line": ("100", 100, {}),
    "limit_request_fields": ("10", 10, {}),
    "limit_request_field_size": ("200", 200, {}),
    "limit_request_body": ("1000", 1000, {}),
    "limit_request_head": ("16384", 16384, {}),
    "max_requests": ("50", 50, {}),
    "max_requests_jitter": ("5", 5, {"max_requests": "50"}),
    "chdir": ("/srv/app", "/srv/app", {}),
    "pidfile": ("/run/g.pid", "/run/g.pid", {}),
    "control_socket": ("/run/g.ctl", "/run/g.ctl", {}),
    "user": ("nobody", "nobody", {}),
    "group": ("nogroup", "nogroup", {}),
    "umask": ("0o027", 0o027, {}),
    "proc_name": ("web", "web", {}),
    "loglevel": ("DEBUG", "debug", {}),
    "errorlog": ("/var/log/e.log", "/var/log/e.log", {}),
    "accesslog": ("-", "-", {}),
    "access_log_format": ("%(h)s %(s)s", "%(h)s %(s)s", {}),
    "certfile": ("/etc/ssl/server.pem", "/etc/ssl/server.pem", {}),
    "keyfile": ("/etc/ssl/server.key", "/etc/ssl/server.key", {"certfile": "/c.pem"}),
    "ca_certs": ("/etc/ssl/ca.pem", "/etc/ssl/ca.pem", {"certfile": "/c.pem"}),
    "cert_reqs": ("2", 2, {"certfile": "/c.pem"}),
    "ciphers": ("ECDHE+AESGCM", "ECDHE+AESGCM", {"certfile": "/c.pem"}),
    "forwarded_allow_ips": ("10.0.0.1, 192.168.0.0/16,*", ("10.0.0.1", "192.168.0.0/16", "*"),
                            {}),
    "proxy_protocol": ("v2", "v2", {}),
    "proxy_allow_ips": ("10.0.0.0/8", ("10.0.0.0/8",), {}),
    "metrics_bind": ("127.0.0.1:9100", BindAddress("127.0.0.1", 9100), {}),
    "statsd_host": ("localhost:8125", "localhost:8125", {}),
    "statsd_prefix": ("web", "web", {}),
    "dogstatsd_tags": ("env:prod,team:web", "env:prod,team:web", {}),
    "control_socket_disable": (None, True, {}),
    "capture_output": (None, True, {}),
    "logconfig": ("/etc/log.ini", "/etc/log.ini", {}),
    "logconfig_json": ("/etc/log.json", "/etc/log.json", {}),
    "raw_env": ("A=b=c", ("A=b=c",), {}),
    "pythonpath": ("/srv/lib,/srv/app", "/srv/lib,/srv/app", {}),
    "initgroups": (None, True, {}),
    "sendfile": (None, False, {}),
    "reuse_port": (None, True, {}),  # the default: gshard always reuses the port
    "preload_app": (None, True, {}),
    "reload": (None, True, {}),
    "reload_engine": ("poll", "poll", {}),
    "reload_extra_files": ("templates/*.html", ("templates/*.html",), {}),
    "check_config": (None, True, {}),
    "daemon": (None, True, {}),
    "syslog": (None, True, {}),
    "syslog_addr": ("unix:///dev/log#dgram", "unix:///dev/log#dgram", {}),
    "syslog_prefix": ("web", "web", {}),
    "syslog_facility": ("local0", "local0", {}),
    "disable_redirect_access_to_syslog": (None, True, {}),
    "enable_stdio_inheritance": (None, True, {}),
    "print_config": (None, True, {}),
}


def flagged_settings():
    return [spec for spec in settings() if spec.metadata["flags"]]


def default_of(spec):
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory()


def test_every_flagged_setting_has_a_sample():
    # -c has tests of its own: its value is a file that is read.
    assert {spec.name for spec in flagged_settings()} - {"config"} == set(SAMPLES)


@pytest.mark.parametrize("spec", [spec for spec in flagged_settings() if spec.name != "config"],
                         ids=lambda spec: spec.name)
def test_every_flag_reaches_its_setting(spec):
    text, expected, extra = SAMPLES[spec.name]
    if spec.name not in ("worker_class", "reuse_port"):
        assert expected != default_of(spec), "the sample must differ from the default"
    extra_argv = []
    for name, value in extra.items():
        extra_argv += [f"--{name.replace('_', '-')}", value]
    given = [] if text is None else [text]  # a switch takes no value
    parser = arguments.build_parser()
    for flag in spec.metadata["flags"]:
        namespace = vars(parser.parse_args(["app:x", flag, *given, *extra_argv]))
        assert spec.name in namespace, flag
        if spec.metadata["compat"].kind == "refused":
            with pytest.raises(ConfigError, match=f"{flag_name(spec)}: {expected}"):
                parse("app:x", flag, *given, *extra_argv)
            continue
        config = parse("app:x", flag, *given, *extra_argv)
        assert getattr(config, spec.name) == expected, flag
    if spec.metadata["compat"].kind == "refused":
        return
    # Config.from_values converts the same text when it comes from elsewhere.
    raw = text if text is not None else expected
    config = Config.from_values({"app": "app:x", spec.name: raw, **extra})
    assert getattr(config, spec.name) == expected


def test_defaults_without_flags():
    config = parse("app:x")
    for spec in settings():
        if spec.name == "given":
            assert config.given == {"app", "config"}  # the command line's APP; no -c
            continue
        assert getattr(config, spec.name) == (
            "app:x" if spec.name == "app" else default_of(spec)
        ), spec.name


def test_defaults_match_gunicorn():
    config = parse("app:x")
    assert config.keepalive == 2
    assert config.graceful_timeout == 30
    assert config.backlog == 2048
    assert config.worker_connections == 1000
    assert config.limit_request_fields == 100
    assert config.limit_request_field_size == 8190
    assert config.timeout == 30
    assert config.bind == (BindAddress("127.0.0.1", 8000),)


def test_request_line_default_is_gunicorns_maximum_and_says_so():
    """RFC 9112 3 asks for request lines of at least 8,000 octets; gunicorn's
    default (4094) refuses them, its maximum (8190) does not."""
    from gunicorn.config import Config as GunicornConfig
    from gunicorn.http.message import MAX_REQUEST_LINE

    assert parse("app:x").limit_request_line == 8190 == MAX_REQUEST_LINE
    assert GunicornConfig().settings["limit_request_line"].default == 4094
    spec = next(spec for spec in settings() if spec.name == "limit_request_line")
    assert spec.metadata["compat"].kind == "different"
    assert "4094" in spec.metadata["compat"].note


def test_defaults_and_flags_match_installed_gunicorn():
    from gunicorn.config import Config as GunicornConfig

    gunicorn = GunicornConfig().settings
    ours = {spec.name: spec for spec in settings()}
    dests = {
        option: action.dest
        for action in arguments.build_parser()._actions
        for option in action.option_strings
    }
    shared = 0
    for name, target in config_names().items():
        theirs = gunicorn.get(name)
        if theirs is None:
            continue
        shared += 1
        # gunicorn's flags work unchanged on a gshard command line.
        for flag in theirs.cli or ():
            assert dests.get(flag) == target, f"gunicorn flag {flag} is not accepted"
        # Same defaults, except where gshard documents its own choice. The
        # control socket: gshard's sits beside the pidfile (PIDFILE.ctl), so two
        # servers of one user never share gunicorn's single per-user path.
        # User, group, umask: gshard's None means "leave as started" (gunicorn
        # computes the current ids at import, and applies umask 0). The request
        # line: gunicorn's maximum (see the test above).
        if name in ("workers", "worker_class", "chdir", "bind", "control_socket",
                    "user", "group", "umask", "config", "reuse_port", "sendfile",
                    "limit_request_line"):
            continue
        # gunicorn's hooks default to functions that do nothing; gshard's to None.
        if callable(theirs.default):
            assert default_of(ours[target]) is None, name
            continue
        # gshard keeps settings converted (address lists as tuples, not
        # gunicorn's comma-separated text): gunicorn's default, read by
        # gshard's converter, must then be gshard's default.
        default = default_of(ours[target])
        if default != theirs.default:
            assert default == ours[target].metadata["convert"](theirs.default), name
    assert shared >= 15


def test_workers_aliases():
    for flag in ("-w", "--workers", "--shards"):
        assert parse("app:x", flag, "3").shards == 3
    assert Config.from_values({"app": "a:b", "shards": 2}).shards == 2


def test_gunicorn_spelling_of_field_size_flag():
    assert parse("app:x", "--limit-request-field_size", "100").limit_request_field_size == 100


def test_repeated_bind():
    config = parse("app:x", "-b", "127.0.0.1:1", "--bind", "unix:/tmp/s.sock", "-b", "[::1]:2")
    assert config.bind == (
        BindAddress("127.0.0.1", 1),
        BindAddress(unix_path="/tmp/s.sock"),
        BindAddress("::1", 2),
    )


def test_port_environment_variable(monkeypatch):
    monkeypatch.setenv("PORT", "5005")
    assert parse("app:x").bind == (BindAddress("0.0.0.0", 5005),)
    assert parse("app:x", "-b", "127.0.0.1:1").bind == (BindAddress("127.0.0.1", 1),)


def test_forwarded_allow_ips_environment_variable(monkeypatch):
    assert parse("app:x").forwarded_allow_ips == ("127.0.0.1", "::1")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8,10.1.0.1")
    assert parse("app:x").forwarded_allow_ips == ("10.0.0.0/8", "10.1.0.1")
    assert parse("app:x", "--forwarded-allow-ips", "*").forwarded_allow_ips == ("*",)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "")
    assert parse("app:x").forwarded_allow_ips == ()  # set but empty: nobody, as in gunicorn


def test_proxy_protocol_forms():
    # gunicorn 27: a bare flag means auto; booleans in config files too.
    assert parse("app:x", "--proxy-protocol").proxy_protocol == "auto"
    assert parse("app:x", "--proxy-protocol", "V1").proxy_protocol == "v1"
    assert parse("app:x", "--proxy-protocol=off").proxy_protocol == "off"
    assert Config.from_values({"app": "a:b", "proxy_protocol": True}).proxy_protocol == "auto"
    assert Config.from_values({"app": "a:b", "proxy_protocol": False}).proxy_protocol == "off"
    # Before the application, a bare flag would take it as its value: say so.
    with pytest.raises(ConfigError, match="put APP before"):
        parse("--proxy-protocol", "myapp:app")


def test_secure_scheme_headers_from_a_config_file(tmp_path, warnings):
    path = write_config(tmp_path, "secure_scheme_headers = {'X-Scheme': 'https'}\n")
    assert parse("app:x", "-c", path).secure_scheme_headers == (("X-SCHEME", "https"),)
    assert not warnings


def test_limit_zeros_are_read_as_gunicorn_reads_them_but_the_request_line_keeps_its_bound():
    """gunicorn 27 (http/message.py): fields 0 is MAX_HEADERS, field_size 0 its
    default; line 0 is no limit there, 8190 (the most gshard reads) here."""
    from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS

    config = parse(
        "app:x", "--limit-request-line", "0", "--limit-request-fields", "0",
        "--limit-request-field-size", "0",
    )
    assert config.limits_kwargs() == {
        "request_line": 8190, "fields": MAX_HEADERS, "field_size": DEFAULT_MAX_HEADERFIELD_SIZE,
        "body": 0, "head_total": 65536,
    }
    assert parse("app:x").limits_kwargs() == {
        "request_line": 8190, "fields": 100, "field_size": 8190, "body": 0,
        "head_total": 65536,
    }


def test_a_request_line_limit_of_zero_is_said_once_at_start():
    (warning,) = parse("app:x", "-w", "1", "--limit-request-line", "0").compat_warnings()
    assert warning.startswith("limit_request_line = 0: gunicorn reads 0 as no limit")
    assert "gshard keeps 8190 bytes" in warning
    # From a config file as from the command line; any other value says nothing.
    assert len(Config.from_values({"app": "a:b", "shards": 1,
                                   "limit_request_line": 0}).compat_warnings()) == 1
    for given in ("4094", "8190"):
        assert parse("app:x", "-w", "1", "--limit-request-line", given).compat_warnings() == []
    assert parse("app:x", "-w", "1", "--limit-request-field-size", "0",
                 "--limit-request-fields", "0").compat_warnings() == []


def test_the_limits_help_and_the_migration_table_say_what_zero_means():
    specs = {spec.name: spec for spec in settings()}
    assert "0 means 8190 too (gunicorn reads 0 as no limit)" in \
        specs["limit_request_line"].metadata["help"]
    assert "0 means the default, 8190, as in gunicorn" in \
        specs["limit_request_field_size"].metadata["help"]
    (row,) = [line for line in migration_table(settings()).splitlines()
              if line.startswith("| `limit_request_line` |")]
    assert "0 means 8190 with one warning (gunicorn: no limit" in row


def test_print_config_shows_the_limit_a_zero_stands_for():
    def printed(*argv: str) -> dict[str, str]:
        lines = parse("app:x", *argv).describe().splitlines()
        return {name.strip(): value for name, value in (line.split(" = ", 1) for line in lines)}

    shown = printed("--limit-request-line", "0", "--limit-request-field-size", "0",
                    "--limit-request-fields", "0")
    assert shown["limit_request_line"] == "8190  # given as 0"
    assert shown["limit_request_field_size"] == "8190  # given as 0"
    assert shown["limit_request_fields"] == "32768  # given as 0"
    plain = printed()
    assert plain["limit_request_line"] == "8190"
    assert plain["limit_request_body"] == "0"  # no limit, as it says


@pytest.mark.parametrize(
    "values",
    [
        {"app": "a:b", "shards": 0},
        {"app": "a:b", "shards": True},
        {"app": "a:b", "shards": "many"},
        {"app": "a:b", "backlog": 70000},
        {"app": "a:b", "keepalive": -1},
        {"app": "a:b", "keepalive": "nan"},
        {"app": "a:b", "timeout": "inf"},
        {"app": "a:b", "limit_request_line": 8191},
        {"app": "a:b", "loglevel": "loud"},
        {"app": "a:b", "worker_class": "uvicorn.workers.UvicornWorker"},
        {"app": "a:b", "worker_class": "tornado"},
        {"app": "a:b", "raw_env": ["NOVALUE"]},
        {"app": "a:b", "script_name": "app"},
        {"app": "a:b", "post_fork": "not callable"},
        {"app": "a:b", "post_fork": lambda server: None},  # gunicorn's takes two
        {"app": "a:b", "statsd_host": "localhost:port"},
        {"app": "a:b", "logconfig_dict": [("version", 1)]},
        {"app": "a:b", "bind": []},
        {"app": "a:b", "bind": ["127.0.0.1:1", "127.0.0.1:1"]},
        {"app": "a:b", "max_requests_jitter": 5},
        {"app": ""},
        {"shards": 2},
        {"app": "a:b", "no_such_setting": 1},
        {"app": "a:b", "cert_reqs": 3},
        {"app": "a:b", "certfile": "/c.pem", "cert_reqs": "required"},
        {"app": "a:b", "keyfile": "/k.pem"},
        {"app": "a:b", "ca_certs": "/ca.pem"},
        {"app": "a:b", "cert_reqs": 2},
        {"app": "a:b", "forwarded_allow_ips": "10.0.0.1/8"},  # host bits set: a typo
        {"app": "a:b", "forwarded_allow_ips": "localhost"},
        {"app": "a:b", "proxy_allow_ips": "10.0.0.300"},
        {"app": "a:b", "proxy_protocol": "v3"},
        {"app": "a:b", "secure_scheme_headers": ["X-FORWARDED-PROTO"]},
    ],
)
def test_invalid_values(values):
    with pytest.raises(ConfigError):
        Config.from_values(values)


def test_error_names_the_flag():
    with pytest.raises(ConfigError, match="--keep-alive"):
        Config.from_values({"app": "a:b", "keepalive": "soon"})


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"shards": "x"}, "--shards: must be a whole number (got 'x')"),
        ({"backlog": "1.5"}, "--backlog: must be a whole number (got '1.5')"),
        ({"limit_request_line": 2.5}, "--limit-request-line: must be a whole number (got 2.5)"),
        ({"umask": "zz"}, "--umask: must be a whole number (got 'zz')"),
        ({"timeout": "soon"}, "--timeout: must be a number of seconds, 0 or more (got 'soon')"),
        ({"timeout": None}, "--timeout: must be a number of seconds, 0 or more (got None)"),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_in_words_not_a_python_message(values, words):
    with pytest.raises(ConfigError) as refused:
        Config.from_values({"app": "a:b", **values})
    assert str(refused.value) == words


def test_a_whole_number_written_as_a_float_or_a_string_is_taken():
    config = Config.from_values({"app": "a:b", "shards": 3.0, "backlog": "64", "umask": "0o22"})
    assert (config.shards, config.backlog, config.umask) == (3, 64, 0o22)


# --- bind addresses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("localhost:0", "localhost", 0),
        ("[::1]:9000", "::1", 9000),
        ("[::]:80", "::", 80),
        ("[::1]", "::1", 8000),
        (":9000", "0.0.0.0", 9000),
        ("example.com", "example.com", 8000),
        (" 10.0.0.1:65535 ", "10.0.0.1", 65535),
    ],
)
def test_parse_bind(text, host, port):
    assert parse_bind(text) == BindAddress(host, port)


def test_parse_bind_unix():
    address = parse_bind("unix:/run/gshard.sock")
    assert address.is_unix
    assert address.unix_path == "/run/gshard.sock"
    assert address.url() == "unix:/run/gshard.sock"


def test_bind_url():
    assert parse_bind("[::1]:80").url() == "http://[::1]:80"
    assert parse_bind("127.0.0.1:0").url(port=4321) == "http://127.0.0.1:4321"


@pytest.mark.parametrize(
    "text",
    ["host:65536", "host:99999", "host:-1", "host:abc", "host:", "host: 80", "::1",
     "::1:8000", "fe80::1:80", "[::1", "[::1]80", "[::1]:", "[nothost]:80", "unix:"],
)
def test_parse_bind_errors(text):
    with pytest.raises(ValueError):
        parse_bind(text)


# --- main: refusals before anything binds --------------------------------------------


@pytest.fixture
def nothing_starts(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("reached past the command-line checks")

    monkeypatch.setattr(serve, "open_listeners", forbidden)
    monkeypatch.setattr(serve, "Manager", forbidden)
    monkeypatch.setattr(log, "configure", forbidden)


@pytest.mark.parametrize(
    "argv",
    [
        ["--no-such-flag", "app:x"],
        ["app:x", "stray-argument"],
        ["app:x", "--keep-alive"],
        ["app:x", "--workers", "zero"],
        ["app:x", "--workers", "0"],
        ["app:x", "-b", "[::1"],
        ["app:x", "-b", "::1:8000"],
        ["app:x", "-b", "host:70000"],
        ["app:x", "-k", "uvicorn.workers.UvicornWorker"],
        ["app:x", "--statsd-host", "localhost:port"],
        ["app:x", "--strip-header-spaces"],
        ["app:x", "--header-map", "dangerous"],
        ["app:x", "--log-syslog-to", "http://localhost"],
        ["app:x", "--logger-class", "myapp.MyLogger"],
        ["app:x", "--timeout", "nan"],
        ["app:x", "--max-requests-jitter", "5"],
        ["app:x", "-c", "/nonexistent/gshard.conf.py"],
        ["app:x", "--certfile", "/nonexistent/server.pem"],
        ["app:x", "--certfile", "/"],
        ["app:x", "--keyfile", __file__],
        ["app:x", "--certfile", __file__, "--ca-certs", "/nonexistent/ca.pem"],
        ["app:x", "--forwarded-allow-ips", "10.0.0.300"],
        ["app:x", "--access-logformat", "%(h)s %(s)s 100%"],
        # Paths that cannot work, found before anything binds.
        ["app:x", "--pid", "/nonexistent/run/g.pid"],
        ["app:x", "--control-socket", "/nonexistent/run/g.ctl"],
        ["app:x", "--chdir", "/nonexistent/srv/app"],
        ["app:x", "--worker-tmp-dir", "/nonexistent/shm"],
        ["app:x", "--error-logfile", "/nonexistent/log/error.log"],
        ["app:x", "--access-logfile", "/"],
        ["app:x", "--log-config", "/nonexistent/logging.ini"],
        [],
    ],
)
def test_main_refuses_bad_command_lines_with_one_line(argv, nothing_starts, capsys):
    assert main(argv) == EXIT_USAGE == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("gshard: error: ")
    assert err.endswith("\n")
    assert err.count("\n") == 1, err


# --- config files -----------------------------------------------------------------


def write_config(tmp_path, text: str) -> str:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(textwrap.dedent(text))
    return str(path)


GUNICORN_CONF = """
    import multiprocessing

    workers = 3
    bind = ["127.0.0.1:0"]
    keepalive = 5
    wsgi_app = "hello:app"
    threads = 4
    cores = 2
    _private = 1

    def on_starting(server):
        pass
"""


@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(
        log.error_log, "warning", lambda message, *args: seen.append(message % args)
    )
    return seen


def test_config_file_with_gunicorn_names(tmp_path, warnings):
    path = write_config(tmp_path, GUNICORN_CONF)
    config = parse("-c", path)
    assert config.app == "hello:app"
    assert config.shards == 3
    assert config.bind == (BindAddress("127.0.0.1", 0),)
    assert config.keepalive == 5.0
    # The file's own names (cores), modules, functions and _names are not
    # settings and are ignored without a word, as gunicorn ignores them. Hooks
    # are settings.
    assert warnings == []
    assert config.misspelt == ()
    assert not [line for line in config.compat_warnings() if "cores" in line]
    assert config.on_starting.__name__ == "on_starting"
    assert config.gunicorn_only == (("threads", 4),)


# Shapes real config files have: postponed annotations, helper variables and
# functions built around the settings, a dataclass, and one misspelt setting.
HELPERS_CONF = """
    from __future__ import annotations

    import os
    from dataclasses import dataclass

    from settings_helper import TIMEOUT  # a module beside the file

    cores = os.cpu_count() or 1
    workers_per_core = 2
    timeout_str = "60"
    use_bind = "127.0.0.1:0"
    log_level = "debug"  # a helper beside the setting it resembles
    env = "staging"


    @dataclass
    class Limits:
        requests: int = 100


    def workers_for(count: int) -> int:
        return count * workers_per_core


    workers = workers_for(1)
    bind = use_bind
    loglevel = log_level
    timeout = TIMEOUT
    max_requests = Limits().requests
    max_request_jitter = 10
    preload = True
    acceslogformat = "%(h)s %(s)s"
    wsgi_app = "hello:app"

    def post_worker_int(worker):
        pass
"""


def test_a_config_files_own_names_are_quiet_and_misspelt_settings_are_named(
        tmp_path, warnings, monkeypatch):
    (tmp_path / "start" / "settings_helper.py").write_text("TIMEOUT = 300\n")
    path = write_config(tmp_path / "start", HELPERS_CONF)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    monkeypatch.delitem(sys.modules, "settings_helper", raising=False)
    config = parse("-c", path)
    assert sys.path[0] == os.getcwd()  # as gunicorn puts it there before reading the file
    assert (config.shards, config.timeout, config.loglevel, config.max_requests) == (
        2, 300.0, "debug", 100)
    assert config.misspelt == (("max_request_jitter", "max_requests_jitter"),
                               ("preload", "preload_app"),
                               ("acceslogformat", "access_log_format"),
                               ("post_worker_int", "post_worker_init"))
    assert warnings == []  # nothing is logged while the file is read: serve logs the list
    named = [line for line in config.compat_warnings() if line.startswith("Ignoring '")]
    assert named == [
        f"Ignoring 'max_request_jitter' in {path}: not a setting; did you mean "
        "max_requests_jitter?",
        f"Ignoring 'preload' in {path}: not a setting; did you mean preload_app?",
        f"Ignoring 'acceslogformat' in {path}: not a setting; did you mean "
        "access_log_format?",
        f"Ignoring 'post_worker_int' in {path}: not a setting; did you mean "
        "post_worker_init?"]


def test_a_config_file_runs_as_the_module_gunicorn_names(tmp_path, warnings):
    path = write_config(tmp_path, """
        import logging
        import sys

        class Quiet(logging.Filter):
            pass

        ME = sys.modules[__name__]
        logconfig_dict = {"version": 1, "filters": {"quiet": {"()": "__config__.Quiet"}}}
    """)
    parse("app:x", "-c", path)
    module = sys.modules["__config__"]
    assert module.__file__ == path and module.ME is module


def test_a_reload_reads_an_edit_made_within_the_same_second(tmp_path, warnings):
    path = write_config(tmp_path, "workers = 2\n")
    assert parse("app:x", "-c", path).shards == 2
    stamp = os.stat(path).st_mtime_ns
    write_config(tmp_path, "workers = 3\n")  # same size
    os.utime(path, ns=(stamp, stamp))  # and the same time
    assert parse("app:x", "-c", path).shards == 3


def test_command_line_overrides_config_file(tmp_path, warnings):
    path = write_config(tmp_path, GUNICORN_CONF)
    config = parse("other:app", "--config", path, "-w", "5", "--keep-alive", "1",
                   "-b", "127.0.0.1:7000")
    assert config.app == "other:app"
    assert config.shards == 5
    assert config.keepalive == 1.0
    assert config.bind == (BindAddress("127.0.0.1", 7000),)


def test_config_file_values_are_checked(tmp_path, warnings):
    path = write_config(tmp_path, "workers = 0\n")
    with pytest.raises(ConfigError, match="--shards"):
        parse("app:x", "-c", path)


def test_config_file_that_raises(tmp_path, warnings):
    path = write_config(tmp_path, "raise RuntimeError('broken config')\n")
    with pytest.raises(ConfigError, match="broken config"):
        parse("app:x", "-c", path)


def test_help_and_version_still_exit_zero(capsys):
    for flag in ("--help", "--version"):
        with pytest.raises(SystemExit) as info:
            arguments.build_parser().parse_args([flag])
        assert info.value.code == 0
    assert "gshard" in capsys.readouterr().out


def test_metrics_bind_is_never_the_applications_port():
    with pytest.raises(ConfigError, match="metrics-bind: must not be the application's port"):
        parse("app:x", "--bind", "127.0.0.1:8000", "--metrics-bind", "127.0.0.1:8000")
    with pytest.raises(ConfigError, match="metrics-bind: must be a TCP address"):
        parse("app:x", "--metrics-bind", "unix:/tmp/m.sock")


@pytest.mark.parametrize("bad", ["host:port", "host:0", ":80", "unix:", "a:1:2"])
def test_statsd_host_must_be_an_address(bad):
    with pytest.raises(ConfigError, match="--statsd-host"):
        parse("app:x", "--statsd-host", bad)


def test_shutdown_delay_comes_from_files_and_the_environment_like_every_setting(tmp_path):
    (tmp_path / "start" / "gshard.conf.py").write_text("shutdown_delay = 6\n")
    assert parse("app:x").shutdown_delay == 6.0
    environ = {"GSHARD_CMD_ARGS": "--shutdown-delay 4"}
    assert arguments.parse_config(["app:x"], environ).shutdown_delay == 4.0
    assert arguments.parse_config(["app:x", "--shutdown-delay", "2"], environ) \
        .shutdown_delay == 2.0
    with pytest.raises(ConfigError, match="--shutdown-delay: must be a number of seconds"):
        parse("app:x", "--shutdown-delay", "-1")


def test_every_setting_is_in_exactly_one_group():
    from gshard.config import BOOKKEEPING, GROUPS

    named = [name for _, names in GROUPS for name in names]
    assert len(named) == len(set(named)), "a setting is in two groups"
    assert set(named) | BOOKKEEPING == {spec.name for spec in settings()}
