"""Every gunicorn setting and flag against the installed gunicorn, and how gshard finds config."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import pwd
import socket
import subprocess
import sys
import textwrap

import pytest
from gunicorn.config import KNOWN_SETTINGS

from gshard import log, syslog_handler
from gshard.cli import arguments, serve
from gshard.cli.main import main
from gshard.config import BOOKKEEPING, Config, config_names, settings
from gshard.cpus import usable_cpus
from gshard.errors import EXIT_USAGE, ConfigError
from gshard.gunicorn_compat import GUNICORN_ONLY, migration_table
from gshard.http.access_log import AccessLogger
from gshard.shard import privileges

ENV_NAMES = ("PORT", "FORWARDED_ALLOW_IPS", "WEB_CONCURRENCY", "SCRIPT_NAME", "SENDFILE",
             "GUNICORN_CMD_ARGS", "GSHARD_CMD_ARGS")


@pytest.fixture(autouse=True)
def _clean_start(monkeypatch, tmp_path):
    """No variable gshard reads, and a directory without config files, unless a test adds them."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    start = tmp_path / "start"
    start.mkdir()
    monkeypatch.chdir(start)
    return start


def parse(*argv: str, env: dict | None = None) -> Config:
    return arguments.parse_config(list(argv), env or {})


def gunicorn_flag_shape(setting) -> str:
    if setting.action in ("store_true", "store_const"):
        return "switch"
    return "append" if setting.action == "append" else "value"


# --- every gunicorn setting is known ---------------------------------------------------------


def test_every_gunicorn_setting_is_known_once():
    ours = set(config_names())
    theirs_only = {entry.name for entry in GUNICORN_ONLY}
    assert not ours & theirs_only, "a setting declared twice"
    unknown = [s.name for s in KNOWN_SETTINGS if s.name not in ours | theirs_only]
    assert unknown == []
    # gunicorn_only lists only gunicorn's settings (nothing made up or removed).
    assert theirs_only <= {s.name for s in KNOWN_SETTINGS}


@pytest.mark.parametrize("setting", KNOWN_SETTINGS, ids=lambda s: s.name)
def test_every_gunicorn_flag_parses_with_gunicorns_shape(setting):
    parser = arguments.build_parser()
    dest = config_names().get(setting.name, setting.name)
    for flag in setting.cli or ():
        # A value is consumed, and the APP stays positional.
        value = [] if gunicorn_flag_shape(setting) == "switch" else ["1"]
        argv = [flag, *value, "app:x"]
        namespace = vars(parser.parse_args(argv))
        assert namespace["app"] == "app:x", flag
        assert dest in namespace, flag


@pytest.mark.parametrize("entry", GUNICORN_ONLY, ids=lambda e: e.name)
def test_gunicorn_only_entries_match_gunicorn(entry):
    theirs = next(s for s in KNOWN_SETTINGS if s.name == entry.name)
    assert entry.flags == tuple(theirs.cli or ())
    if theirs.cli:
        assert entry.takes == gunicorn_flag_shape(theirs)
    if callable(theirs.default):
        assert entry.default is None  # a dirty-arbiter hook: gunicorn's does nothing
    else:
        assert entry.default == theirs.default
    # Spelling the default out changes nothing and says nothing.
    config = Config.from_values({"app": "a:b", "shards": 2, entry.name: entry.default})
    assert config.compat_warnings() == []
    assert entry.compat.kind in ("ignored", "refused", "different")
    assert entry.compat.note


def test_gshards_own_settings_are_exactly_those_gunicorn_lacks():
    theirs = {s.name for s in KNOWN_SETTINGS}
    for spec in settings():
        name = (spec.metadata["aliases"] or (spec.name,))[0]  # the gunicorn table's name
        own = spec.metadata["compat"].kind == "gshard"
        assert (name not in theirs) == own, spec.name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp://localhost:514", (socket.SOCK_DGRAM, ("localhost", 514))),
        ("tcp://LOGS.example:6514", (socket.SOCK_STREAM, ("logs.example", 6514))),
        ("udp://[::1]:5140", (socket.SOCK_DGRAM, ("::1", 5140))),
        ("udp://", (socket.SOCK_DGRAM, ("localhost", 514))),
        ("unix:///dev/log", (None, "/dev/log")),
        ("unix:///run/log.sock#dgram", (socket.SOCK_DGRAM, "/run/log.sock")),
    ],
)
def test_syslog_addresses_read_as_gunicorn_reads_them(text, expected):
    assert syslog_handler.parse_address(text) == expected


@pytest.mark.parametrize("text", ["localhost:514", "udp://host:port", "unix://", "unix:///x#raw",
                                  "http://host"])
def test_bad_syslog_addresses_refused(text):
    with pytest.raises(ConfigError, match="--log-syslog-to"):
        parse("app:x", "--log-syslog-to", text)


def test_every_verdict_says_why():
    for spec in settings():
        compat = spec.metadata["compat"]
        if compat.kind in ("different", "ignored", "refused"):
            assert compat.note, spec.name


def test_the_migration_table_has_one_row_per_gunicorn_setting():
    rows = [line for line in migration_table(settings()).splitlines() if line.startswith("| `")]
    names = [row.split("`")[1] for row in rows]
    assert sorted(names) == sorted(setting.name for setting in KNOWN_SETTINGS)


# --- accepted with one warning, or refused with one line ----------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--threads", "4"], "Ignoring threads = '4': greenlets do that job"),
        (["-k", "sync"], "worker_class 'sync': shards run gevent; the application now runs "
                         "on greenlets"),
        (["-k", "gthread"], "worker_class 'gthread'"),
        (["--worker-class", "eventlet"], "worker_class 'eventlet'"),
        (["--worker-tmp-dir", "/dev/shm"], "there is no heartbeat file"),
        (["--enable-backlog-metric"], "gunicorn.backlog is always sent"),
        (["--header-map", "refuse"], "drops header names with '_' instead of refusing"),
        (["--http2-max-frame-size", "32768"], "HTTP/1.1 only"),
    ],
)
def test_accepted_with_one_warning(argv, expected):
    warnings = parse("app:x", "-w", "2", *argv).compat_warnings()
    assert len(warnings) == 1, warnings
    assert expected in warnings[0]


def test_gevent_worker_class_is_silent():
    for name in ("gevent", "gunicorn.workers.ggevent.GeventWorker", "egg:gunicorn#gevent"):
        config = parse("app:x", "-w", "2", "-k", name)
        assert config.worker_class == "gevent"
        assert config.compat_warnings() == []


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["-k", "uvicorn.workers.UvicornWorker"], "gshard serves WSGI"),
        (["--strip-header-spaces"], "weaken a protection described in docs/security.md"),
        (["--header-map", "dangerous"], "weaken a protection described in docs/security.md"),
        (["--permit-obsolete-folding"], "docs/security.md"),
        (["--forwarder-headers", "REMOTE_USER"], "docs/security.md"),
        (["--logger-class", "myapp.JsonLogger"], "logconfig_dict"),
        (["--paste", "app.ini"], "PasteDeploy"),
        (["--http-protocols", "h2"], "HTTP/1.1 only"),
        (["--protocol", "uwsgi"], "HTTP only"),
    ],
)
def test_refused_with_the_reason(argv, reason, capsys, monkeypatch):
    with pytest.raises(ConfigError, match=reason.replace(".", r"\.")):
        parse("app:x", *argv)
    monkeypatch.setattr(serve, "Manager", None)  # never reached
    assert main(["app:x", *argv]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("gshard: error: ") and err.count("\n") == 1, err


def test_gunicorn_logger_class_by_its_default_names_is_accepted():
    for name in ("gunicorn.glogging.Logger", "simple"):
        assert parse("app:x", "-w", "2", "--logger-class", name).compat_warnings() == []


# --- where configuration comes from ------------------------------------------------------


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_gunicorn_conf_in_the_start_directory_is_read(_clean_start):
    write(_clean_start / "gunicorn.conf.py", "workers = 3\nwsgi_app = 'hello:app'\n")
    config = parse()
    assert (config.app, config.shards, config.config) == ("hello:app", 3, "gunicorn.conf.py")


def test_gshard_conf_wins_over_gunicorn_conf(_clean_start):
    write(_clean_start / "gunicorn.conf.py", "workers = 3\n")
    write(_clean_start / "gshard.conf.py", "workers = 5\n")
    assert parse("app:x").shards == 5
    # -c names the file; the others are not read.
    other = write(_clean_start / "other.py", "keepalive = 9\n")
    config = parse("app:x", "-c", str(other))
    assert (config.keepalive, config.shards == 5) == (9.0, False)


def test_config_from_a_python_module(_clean_start):
    package = _clean_start / "deploy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write(package / "gunicorn_settings.py", "workers = 6\n")
    assert parse("app:x", "-c", "python:deploy.gunicorn_settings").shards == 6
    with pytest.raises(ConfigError, match=r"python:deploy\.missing"):
        parse("app:x", "-c", "python:deploy.missing")


def test_precedence_file_then_gunicorn_args_then_gshard_args_then_command_line(_clean_start):
    write(_clean_start / "gunicorn.conf.py",
          "workers = 2\nkeepalive = 3\nbacklog = 100\nmax_requests = 10\n")
    env = {"GUNICORN_CMD_ARGS": "--keep-alive 4 --backlog 200 --max-requests 20",
           "GSHARD_CMD_ARGS": "--backlog 300 --max-requests 30", "WEB_CONCURRENCY": "9"}
    config = parse("app:x", "--max-requests", "40", env=env)
    assert (config.shards, config.keepalive, config.backlog, config.max_requests) == (
        2, 4.0, 300, 40)
    # WEB_CONCURRENCY is only the default.
    (_clean_start / "gunicorn.conf.py").unlink()
    assert parse("app:x", env={"WEB_CONCURRENCY": "9"}).shards == 9


@pytest.mark.parametrize(("env", "argv", "words"), [
    ({"WEB_CONCURRENCY": "zz"}, (), "$WEB_CONCURRENCY: must be a whole number (got 'zz')"),
    ({"PORT": "99999"}, (), "$PORT: invalid port '99999' (0-65535) (got '99999')"),
    ({"FORWARDED_ALLOW_IPS": "10.0.0.1/8"}, (), "$FORWARDED_ALLOW_IPS: 10.0.0.1/8 has host bits"),
    ({}, ("-e", "SCRIPT_NAME=shop"), "$SCRIPT_NAME: must start with '/' (got 'shop')"),
])
def test_a_wrong_default_from_the_environment_is_refused_under_its_variable(env, argv, words):
    with pytest.raises(ConfigError) as refused:
        parse("app:x", *argv, env=env)
    assert str(refused.value).startswith(words)


def test_a_wrong_default_from_the_environment_is_not_read_when_the_setting_is_given():
    assert parse("app:x", "-w", "2", env={"WEB_CONCURRENCY": "zz"}).shards == 2


def test_args_variables_are_split_like_a_shell():
    config = parse("app:x", env={"GUNICORN_CMD_ARGS": "-e 'GREETING=hello world' -w 3"})
    assert (config.raw_env, config.shards) == (("GREETING=hello world",), 3)
    with pytest.raises(ConfigError, match=r"^\$GSHARD_CMD_ARGS: unrecognized arguments"):
        parse("app:x", env={"GSHARD_CMD_ARGS": "--no-such-flag"})
    with pytest.raises(ConfigError, match=r"^\$GUNICORN_CMD_ARGS: No closing quotation"):
        parse("app:x", env={"GUNICORN_CMD_ARGS": "-e 'A=b"})


def test_a_broken_logging_config_is_one_line(capsys, monkeypatch, _clean_start, restore_logging):
    (_clean_start / "gshard.conf.py").write_text("logconfig_dict = {'version': 99}\n")
    monkeypatch.setattr(serve, "open_listeners", None)  # never reached
    assert main(["app:x"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("gshard: error: logging config: ") and err.count("\n") == 1


def test_script_name_from_the_environment_or_raw_env():
    assert parse("app:x").script_name == ""
    assert parse("app:x", env={"SCRIPT_NAME": "/shop/"}).script_name == "/shop"
    assert parse("app:x", "-e", "SCRIPT_NAME=/api", env={"SCRIPT_NAME": "/x"}).script_name == (
        "/api")


def test_sendfile_switch_and_variable():
    assert parse("app:x").sendfile is True
    assert parse("app:x", "--no-sendfile").sendfile is False
    assert parse("app:x", env={"SENDFILE": "0"}).sendfile is False


def test_control_socket_can_be_disabled():
    assert parse("app:x", "--pid", "/run/g.pid").control_path == "/run/g.pid.ctl"
    assert parse("app:x", "--pid", "/run/g.pid", "--no-control-socket").control_path is None


# --- hooks ------------------------------------------------------------------------------------


HOOKS_CONF = """
    def on_starting(server):
        pass

    def post_fork(server, worker):
        pass

    def post_request(worker, req):
        return ("two", worker, req)

    def pre_request(worker, req, extra):
        pass
"""


def test_hooks_are_checked_as_gunicorn_checks_them(_clean_start):
    path = write(_clean_start / "hooks.py", HOOKS_CONF)
    with pytest.raises(ConfigError, match=r"pre_request: must take 2 arguments, takes 3"):
        parse("app:x", "-c", str(path))
    path.write_text(path.read_text().replace(", extra", ""))
    config = parse("app:x", "-c", str(path))
    assert config.on_starting.__name__ == "on_starting"
    assert config.post_fork.__name__ == "post_fork"
    # gunicorn lets post_request take 2 or 3 arguments and calls it with 4.
    assert config.post_request("w", "r", {}, "resp") == ("two", "w", "r")
    assert config.worker_abort is None
    assert "post_fork" in config.describe() and "<post_fork()>" in config.describe()


def test_a_hook_named_by_its_dotted_path():
    config = Config.from_values({"app": "a:b", "on_exit": "os.path.exists"})
    assert config.on_exit is __import__("os").path.exists


# --- print-config, loggers ---------------------------------------------------------------------


def test_print_config_prints_every_setting_and_exits_zero(capsys):
    assert main(["app:x", "-w", "3", "--print-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = {line.split(" = ")[0].strip(): line.split(" = ", 1)[1] for line in lines}
    assert shown["shards"] == "3"
    assert shown["bind"] == "['127.0.0.1:8000']"
    assert set(shown) == {spec.name for spec in settings()} - BOOKKEEPING
    assert lines == sorted(lines)


@pytest.fixture
def restore_logging():
    saved = {}
    for logger in (*(name for pair in log.GUNICORN_LOGGERS for name in pair), logging.root):
        saved[logger] = (logger.handlers[:], logger.level, logger.disabled, logger.propagate)
    yield
    for logger, (handlers, level, disabled, propagate) in saved.items():
        logger.handlers, logger.level = handlers, level
        logger.disabled, logger.propagate = disabled, propagate


def test_gunicorn_loggers_carry_gshards_handlers(restore_logging, tmp_path):
    log.configure_for(parse("app:x", "--error-logfile", str(tmp_path / "e.log"),
                            "--access-logfile", "-"))
    error = logging.getLogger("gunicorn.error")
    assert error.handlers and error.handlers == log.error_log.handlers
    assert logging.getLogger("gunicorn.access").handlers == log.access_log.handlers
    error.warning("borrowed by the application")
    for handler in error.handlers:
        handler.flush()
    assert "[WARNING] borrowed by the application" in (tmp_path / "e.log").read_text()


def test_logconfig_dict_configures_gshards_own_messages(restore_logging, tmp_path):
    target = tmp_path / "json.log"
    config = Config.from_values({"app": "a:b", "logconfig_dict": {
        "version": 1,
        "formatters": {"plain": {"format": "CUSTOM %(levelname)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(target),
                              "formatter": "plain"}},
        "loggers": {"gunicorn.error": {"handlers": ["file"], "level": "DEBUG"}},
        # Replacing "handlers" drops gunicorn's "console", which its default root names.
        "root": {"handlers": []},
    }})
    log.configure_for(config)
    log.error_log.debug("said by gshard")
    for handler in log.error_log.handlers:
        handler.flush()
    assert target.read_text() == "CUSTOM DEBUG said by gshard\n"


def test_module_help_lists_gunicorn_settings():
    # The --help text names what each gunicorn-only flag gets.
    out = subprocess.run([sys.executable, "-m", "gshard", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--threads" in out and "ignored: greenlets do that job" in out


def test_initgroups_decides_whether_shards_get_the_users_groups():
    me = pwd.getpwuid(os.getuid()).pw_name
    # With a name, privileges.drop calls os.initgroups; without, setgroups([gid]).
    assert privileges.resolve(me, None, initgroups=True).name == me
    assert privileges.resolve(me, None).name is None


# --- defaults and values a gunicorn user would not expect, said once ----------------------


def test_one_shard_per_cpu_is_said_when_no_count_is_given():
    (notice,) = parse("app:x").compat_warnings()
    assert notice.startswith(f"Starting one shard per CPU ({usable_cpus()}): neither workers "
                             "nor $WEB_CONCURRENCY is set, and gunicorn would start 1 worker")
    assert "workers = 1" in notice
    for given in (["-w", "4"], ["--shards", "1"]):
        assert parse("app:x", *given).compat_warnings() == []
    assert parse("app:x", env={"WEB_CONCURRENCY": "3"}).compat_warnings() == []
    assert Config.from_values({"app": "a:b", "shards": 2}).compat_warnings() == []


def test_trusting_every_forwarder_on_a_tcp_listener_is_said_once():
    (warning,) = parse("app:x", "-w", "1", "--forwarded-allow-ips", "*", "-b", "0.0.0.0:80",
                       "-b", "unix:/run/a.sock").compat_warnings()
    assert warning.startswith("forwarded_allow_ips = '*' on 0.0.0.0:80: any client that "
                              "connects directly chooses its REMOTE_ADDR")
    # Behind a unix socket only local proxies connect: nothing to say.
    assert parse("app:x", "-w", "1", "--forwarded-allow-ips", "*",
                 "-b", "unix:/run/a.sock").compat_warnings() == []


def test_access_lines_left_to_the_root_logger_are_written(restore_logging, tmp_path):
    """gunicorn writes access lines that reach a handler only through the root
    logger (its defaults make gunicorn.access propagate); so does gshard."""
    target = tmp_path / "root.log"
    config = Config.from_values({"app": "a:b", "logconfig_dict": {
        "version": 1,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(target)}},
        "root": {"handlers": ["file"], "level": "INFO"},
        "loggers": {"gunicorn.access": {"level": "INFO", "propagate": True},
                    "gunicorn.error": {"level": "INFO", "propagate": True}},
    }})
    log.configure_for(config)
    access = AccessLogger("%(s)s")
    assert access.enabled
    log.access_log.info("an access line")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert target.read_text() == "an access line\n"


def test_a_logging_config_may_name_gshards_loggers_instead(restore_logging, tmp_path):
    target = tmp_path / "gshard.log"
    config = Config.from_values({"app": "a:b", "logconfig_dict": {
        "version": 1,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(target)}},
        "loggers": {"gshard.error": {"handlers": ["file"], "level": "WARNING"}},
        "root": {"handlers": []},
    }})
    log.configure_for(config)
    error = logging.getLogger("gunicorn.error")
    assert error is log.error_log  # gshard logs on gunicorn's logger, as gunicorn does
    error.info("below the level given to gshard.error")
    error.warning("said on gunicorn.error")
    for handler in error.handlers:
        handler.flush()
    assert target.read_text() == "said on gunicorn.error\n"


# --- logging configs are laid over gunicorn's defaults, as gunicorn lays them ------------

# A real config's shape: only gunicorn's two handlers redefined, with a JSON formatter.
JSON_HANDLERS_ONLY = {
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"json": {"format": '{"lvl": "%(levelname)s", "msg": "%(message)s"}'}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"},
                 "error_console": {"class": "logging.StreamHandler", "formatter": "json"}},
}


def test_the_logging_defaults_are_gunicorns():
    from gunicorn.glogging import CONFIG_DEFAULTS

    assert log.GUNICORN_DEFAULTS == CONFIG_DEFAULTS


def test_a_logging_config_is_merged_as_gunicorn_merges_it():
    merged = log.over_gunicorn_defaults(JSON_HANDLERS_ONLY)
    expected = dict(log.GUNICORN_DEFAULTS)
    expected.update(JSON_HANDLERS_ONLY)  # gunicorn's own config.update: key by key
    assert merged == expected
    assert merged["loggers"] == log.GUNICORN_DEFAULTS["loggers"]
    merged["loggers"]["gunicorn.error"]["level"] = "DEBUG"  # a copy per use
    assert log.GUNICORN_DEFAULTS["loggers"]["gunicorn.error"]["level"] == "INFO"


def test_redefined_handlers_format_both_logs_and_turn_the_access_log_on(
        restore_logging, capsys):
    from gshard.http.access_log import AccessLogger

    log.configure_for(Config.from_values({"app": "a:b", "loglevel": "debug",
                                          "logconfig_dict": JSON_HANDLERS_ONLY}))
    assert AccessLogger("%(h)s").enabled  # no accesslog given, as gunicorn reads it
    log.error_log.debug("below the defaults' level")  # gunicorn's levels: INFO
    log.error_log.info("said by gshard")
    log.access_log.info("an access line")
    err = capsys.readouterr().err.splitlines()
    # Each line twice, as in gunicorn: the logger's handler, then the root's.
    assert err == ['{"lvl": "INFO", "msg": "said by gshard"}'] * 2 + \
        ['{"lvl": "INFO", "msg": "an access line"}'] * 2


def test_a_config_gunicorn_refuses_is_refused_in_one_line(restore_logging, capsys,
                                                         _clean_start):
    """"handlers" without "console", which the default root names: gunicorn's
    Logger.setup fails on it ("Unable to configure root logger"), and so does gshard."""
    refused = {"version": 1, "handlers": {"file": {"class": "logging.StreamHandler"}},
               "loggers": {"gunicorn.error": {"handlers": ["file"]}}}
    with pytest.raises(ValueError, match="Unable to configure root logger"):
        log.configure_for(Config.from_values({"app": "a:b", "logconfig_dict": refused}))
    (_clean_start / "gshard.conf.py").write_text(f"logconfig_dict = {refused!r}\n")
    assert main(["app:x"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == ("gshard: error: logging config: ValueError: Unable to configure root "
                   "logger: ValueError: Unable to add handler 'console': KeyError: 'console'\n")


def test_logconfig_json_is_merged_like_the_dict(restore_logging, capsys, tmp_path):
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(JSON_HANDLERS_ONLY))
    log.configure_for(parse("app:x", "--log-config-json", str(path)))
    log.error_log.info("from the file")
    assert capsys.readouterr().err.count('{"lvl": "INFO", "msg": "from the file"}') == 2


def test_one_logging_config_applies_as_in_gunicorn_and_the_others_are_named(tmp_path):
    path = tmp_path / "logging.json"
    path.write_text("{}")
    config = Config.from_values({"app": "a:b", "shards": 1, "logconfig_json": str(path),
                                 "logconfig_dict": JSON_HANDLERS_ONLY})
    assert config.compat_warnings() == [
        "Ignoring logconfig_json: logconfig_dict is given, and one logging config applies, "
        "as in gunicorn"]
