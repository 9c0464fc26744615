"""The ``gshard`` command: flags built from the settings table, then the manager.

Everything that can be wrong with the command line is reported here, in one
line with exit status 2, before any socket is bound or process forked.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import runpy
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from gshard import __version__, activation, build, log, privileges, upgrade
from gshard.config import Config, config_names, settings
from gshard.control import send_command
from gshard.errors import EXIT_USAGE, ConfigError
from gshard.listener import ListenerSet, open_listeners
from gshard.manager import Manager


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
    )
    parser.add_argument("app", nargs="?", metavar="APP",
                        help="The WSGI application: MODULE:ATTR or MODULE:FACTORY(ARGS).")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="A Python config file of settings (gunicorn's names work).")
    parser.add_argument("-v", "--version", action=_Version, nargs=0,
                        help="Show gshard's version and build (compiled or pure Python).")
    for spec in settings():
        flags = spec.metadata["flags"]
        if not flags:
            continue
        bare = spec.metadata["bare"]
        parser.add_argument(
            *flags,
            dest=spec.name,
            metavar=spec.metadata["metavar"],
            action="append" if spec.metadata["append"] else "store",
            help=spec.metadata["help"],
            **({"nargs": "?", "const": bare} if bare is not None else {}),
        )
    return parser


def load_config_file(path: str) -> dict[str, Any]:
    """Settings from a Python config file, as gunicorn's ``-c`` reads them.

    Names gshard does not know (gunicorn hooks, settings of other worker
    types) are reported and ignored, so a gunicorn config file still works.
    """
    try:
        namespace = runpy.run_path(path)
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {path!r}") from None
    except Exception as exc:
        raise ConfigError(f"--config: {path!r} failed: {exc!r}") from None
    names = config_names()
    values = {}
    for key, value in namespace.items():
        if key.startswith("_") or not key.islower() or type(value).__name__ == "module":
            continue
        if key in names:
            values[names[key]] = value
        else:
            log.error_log.warning("Ignoring setting %r from %s: gshard has no such setting",
                                  key, path)
    return values


def parse_config(argv: Sequence[str]) -> Config:
    """The validated ``Config`` for a command line; raises ``ConfigError``."""
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    config_path = args.pop("config", None)
    if config_path:
        values.update(load_config_file(config_path))
    values.update(args)
    if "bind" not in values and os.environ.get("PORT"):
        values["bind"] = [f"0.0.0.0:{os.environ['PORT']}"]  # as gunicorn does on PaaS
    if "forwarded_allow_ips" not in values and "FORWARDED_ALLOW_IPS" in os.environ:
        values["forwarded_allow_ips"] = os.environ["FORWARDED_ALLOW_IPS"]  # gunicorn's default
    return Config.from_values(values)


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


def reload_main(argv: Sequence[str]) -> int:
    """``gshard reload``: hot-restart a running gshard and wait for the outcome.

    Exit status 0 once the new generation serves; 1, with the reason, when it
    did not (the old generation then keeps serving).
    """
    parser = _Parser(
        prog="gshard reload",
        description="Hot-restart a running gshard (re-import the application) and wait.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-p", "--pid", metavar="FILE",
                       help="The --pid file the server was started with (its socket is FILE.ctl).")
    where.add_argument("--control-socket", metavar="PATH",
                       help="The --control-socket the server was started with.")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="How long to wait for the new generation (default 300).")
    try:
        args = parser.parse_args(argv)
    except ConfigError as exc:
        print(f"gshard reload: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    path = args.control_socket or f"{args.pid}.ctl"
    ok, message = send_command(path, "reload", args.timeout)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if list(argv[:1]) == ["reload"]:
        return reload_main(argv[1:])
    try:
        config = parse_config(argv)
        check_tls_files(config)
    except ConfigError as exc:
        print(f"gshard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        identity = privileges.resolve(config.user, config.group)
    except ConfigError as exc:
        print(f"gshard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if config.umask is not None:
        os.umask(config.umask)
    _raise_open_files_limit()
    log.configure(config.loglevel, config.errorlog, config.accesslog)
    inherited = upgrade.inheritance(os.environ)
    try:
        listeners = _listeners(config, identity, inherited)
    except (OSError, ValueError) as exc:
        log.error_log.error("Cannot listen: %s", exc)
        return 1
    return Manager(config, listeners, argv, inherited).run()


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
