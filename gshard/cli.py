"""The ``gshard`` command: flags built from the settings table, then the manager.

Everything that can be wrong with the command line is reported here, in one
line with exit status 2, before any socket is bound or process forked.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import resource
import runpy
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from gshard import (
    __version__,
    activation,
    app_check,
    build,
    ctl,
    daemon,
    log,
    privileges,
    process_env,
    status,
    top,
    upgrade,
)
from gshard.config import Config, config_names, settings
from gshard.errors import EXIT_USAGE, ConfigError
from gshard.gunicorn_compat import GUNICORN_ONLY
from gshard.listener import ListenerSet, open_listeners
from gshard.manager import Manager

# Commands that talk to a running gshard instead of starting one.
SUBCOMMANDS = ("status", "top", *ctl.COMMANDS)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Report a bad command line as ``ConfigError``, so ``main`` prints one line and returns 2.

        (argparse's own ``error`` prints the usage too and exits the process.)
        """
        raise ConfigError(f"{message} (see gshard --help)")


class _Version(argparse.Action):
    """``--version``, saying whether the compiled modules run (imported only when asked)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        print(f"gshard {__version__} ({build()}; Python {platform.python_version()})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gshard",
        description="A sharded gevent WSGI server: one SO_REUSEPORT listener per shard.",
        argument_default=argparse.SUPPRESS,
        epilog=f"To watch or steer a running gshard: gshard {{{','.join(SUBCOMMANDS)}}} "
               "--pid FILE (gshard COMMAND --help for each).",
    )
    parser.add_argument("app", nargs="?", metavar="APP",
                        help="The WSGI application: MODULE:ATTR or MODULE:FACTORY(ARGS).")
    parser.add_argument("-v", "--version", action=_Version, nargs=0,
                        help="Show gshard's version and build (compiled or pure Python).")
    for spec in settings():
        flags = spec.metadata["flags"]
        if not flags:
            continue
        bare, switch = spec.metadata["bare"], spec.metadata["switch"]
        if switch is not None:
            parser.add_argument(*flags, dest=spec.name, action="store_const", const=switch,
                                help=spec.metadata["help"])
            continue
        parser.add_argument(
            *flags,
            dest=spec.name,
            metavar=spec.metadata["metavar"],
            action="append" if spec.metadata["append"] else "store",
            help=spec.metadata["help"],
            **({"nargs": "?", "const": bare} if bare is not None else {}),
        )
    gunicorn = parser.add_argument_group(
        "gunicorn settings gshard ignores (with a warning) or refuses (saying why)")
    for entry in GUNICORN_ONLY:
        if not entry.flags:
            continue
        shape: dict[str, Any] = (
            {"action": "store_const", "const": True} if entry.takes == "switch"
            else {"action": "append" if entry.takes == "append" else "store",
                  "metavar": "VALUE"})
        gunicorn.add_argument(*entry.flags, dest=entry.name,
                              help=f"{entry.compat.kind}: {entry.compat.note}", **shape)
    return parser


# Config files found without -c, in the directory gshard starts in; gunicorn's last.
DEFAULT_CONFIG_FILES = ("gshard.conf.py", "gunicorn.conf.py")
# Variables parsed like command lines, in rising precedence (all below the real one).
ARGS_VARIABLES = ("GUNICORN_CMD_ARGS", "GSHARD_CMD_ARGS")


def load_config_file(path: str) -> dict[str, Any]:
    """Settings from a config file, or a module named ``python:MODULE``, as gunicorn reads them.

    Every gunicorn setting is known (gshard's own or one gshard judges); other
    names are the file's own helpers and are reported once, then ignored.
    """
    try:
        if path.startswith("python:"):
            sys.path.insert(0, os.getcwd())  # as gunicorn's chdir puts it there
            namespace = vars(importlib.import_module(path[len("python:"):]))
        else:
            namespace = runpy.run_path(path)
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {path!r}") from None
    except Exception as exc:
        raise ConfigError(f"--config: {path!r} failed: {exc!r}") from None
    names = {**config_names(), **{entry.name: entry.name for entry in GUNICORN_ONLY}}
    values = {}
    for key, value in namespace.items():
        if key.startswith("_") or not key.islower() or type(value).__name__ == "module":
            continue
        if key in names:
            values[names[key]] = value
        elif not callable(value):
            log.error_log.warning("Ignoring setting %r from %s: gshard has no such setting",
                                  key, path)
    return values


def parse_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """The validated ``Config`` for a command line; raises ``ConfigError``.

    Precedence as gunicorn's: defaults (some read from the environment, as
    gunicorn does) < the config file < $GUNICORN_CMD_ARGS < $GSHARD_CMD_ARGS
    < the command line.
    """
    environ = os.environ if environ is None else environ
    parser = build_parser()
    layers = []
    for name in ARGS_VARIABLES:
        if environ.get(name):
            try:
                layers.append(vars(parser.parse_args(shlex.split(environ[name]))))
            except (ConfigError, ValueError) as exc:  # ValueError: shlex, unbalanced quotes
                raise ConfigError(f"${name}: {exc}") from None
    layers.append(vars(parser.parse_args(argv)))
    config_path = next((layer["config"] for layer in reversed(layers) if "config" in layer),
                       None) or next(
        (name for name in DEFAULT_CONFIG_FILES if os.path.isfile(name)), None)
    values: dict[str, Any] = load_config_file(config_path) if config_path else {}
    for layer in layers:
        values.update(layer)
    values["config"] = config_path
    for name, default in _environment_defaults({**environ, **_raw_env(values)}).items():
        values.setdefault(name, default)
    return Config.from_values(values)


def _environment_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """Defaults gunicorn takes from the environment (and, for SCRIPT_NAME, from raw_env)."""
    defaults: dict[str, Any] = {}
    if environ.get("PORT"):
        defaults["bind"] = [f"0.0.0.0:{environ['PORT']}"]  # as gunicorn does on PaaS
    for variable, name in (("FORWARDED_ALLOW_IPS", "forwarded_allow_ips"),
                           ("WEB_CONCURRENCY", "shards"), ("SENDFILE", "sendfile"),
                           ("SCRIPT_NAME", "script_name")):
        if variable in environ:
            defaults[name] = environ[variable]
    return defaults


def _raw_env(values: Mapping[str, Any]) -> dict[str, str]:
    entries = values.get("raw_env", ())
    entries = [entries] if isinstance(entries, str) else entries
    return dict(str(entry).partition("=")[::2] for entry in entries)


def check_tls_files(config: Config) -> None:
    """Refuse TLS files that are missing or unreadable, before anything binds.

    Only their presence is checked here: loading them needs ``ssl``, which the
    manager never imports (gevent must patch it first, in the shards). A file
    that is there but does not load fails the shards' boot instead.
    """
    for flag, path in (("--certfile", config.certfile), ("--keyfile", config.keyfile),
                       ("--ca-certs", config.ca_certs)):
        if path is None:
            continue
        if not os.path.isfile(path):
            raise ConfigError(f"{flag}: no such file {path!r}")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{flag}: {path!r} is not readable")


def subcommand_main(name: str, argv: Sequence[str]) -> int:
    """``gshard status|top|reload|scale|recycle|stop|reopen ...``: talk to a running gshard."""
    parser = _Parser(prog=f"gshard {name}")
    try:
        if name == "status":
            return status.main(argv, parser)
        if name == "top":
            return top.main(argv, parser)
        return ctl.main(name, argv, parser)
    except ConfigError as exc:
        print(f"gshard {name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return subcommand_main(argv[0], argv[1:])
    try:
        config = parse_config(argv)
        if config.print_config:
            print(config.describe())
            return 0
        check_tls_files(config)
        identity = privileges.resolve(config.user, config.group)
    except ConfigError as exc:
        print(f"gshard: error: {exc}", file=sys.stderr)
        # --check-config answers 0 or 1, as gunicorn's; a run refuses with 2.
        return 1 if "--check-config" in argv else EXIT_USAGE
    process_env.apply(config)
    if config.check_config:
        for warning in config.compat_warnings():
            print(f"gshard: warning: {warning}", file=sys.stderr)
        return app_check.check(config)
    if config.umask is not None:
        os.umask(config.umask)
    _raise_open_files_limit()
    try:
        log.configure_for(config)
    except Exception as exc:  # a logging config can fail in any way its handlers can
        print(f"gshard: error: logging config: {exc!r}", file=sys.stderr)
        return EXIT_USAGE
    for warning in config.compat_warnings():
        log.error_log.warning(warning)
    inherited = upgrade.inheritance(os.environ)
    try:
        listeners = _listeners(config, identity, inherited)
    except (OSError, ValueError) as exc:
        log.error_log.error("Cannot listen: %s", exc)
        return 1
    if config.daemon and inherited is None:  # a USR2 successor stays where it was started
        daemon.daemonize(config.enable_stdio_inheritance)
    try:
        manager = Manager(config, listeners, argv, inherited)
    except OSError as exc:  # --metrics-bind or --statsd-host
        log.error_log.error("Cannot start: %s", exc)
        return 1
    return manager.run()


def _listeners(
    config: Config, identity: privileges.Identity, inherited: upgrade.Inheritance | None
) -> list[ListenerSet]:
    """The sockets to serve on: a predecessor's (SIGUSR2), systemd's, or bound for --bind.

    systemd's ``LISTEN_*`` variables are removed from the environment either
    way, so no shard or successor mistakes them for its own.
    """
    passed = activation.take(os.environ, os.getpid())
    if passed.ignored:
        log.error_log.warning("Socket activation ignored: %s", passed.ignored)
    if inherited is not None:
        return inherited.adopt(config.bind)
    if passed.sockets:
        return activation.listeners(passed, config.bind, config.shards, config.backlog)
    listeners = open_listeners(config.bind, config.shards, config.backlog)
    for listener_set in listeners:
        listener_set.chown(identity.uid, identity.gid)
    return listeners


def _raise_open_files_limit() -> None:
    """Lift the soft limit on open files to the hard one, for the shards to inherit.

    The usual soft limit (1024) exists for select(); gshard's processes do not
    select() on connections, and a shard at the default --worker-connections
    would otherwise run out of descriptors near 1,000 connections. Go
    programs do the same at start.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
