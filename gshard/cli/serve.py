"""Starting a server from a ``Config``: the one path of the ``gshard`` command and ``gshard.run``.

``serve`` checks what can only be checked against the machine (the files
and directories named, the user to run as), applies the environment the application is imported
in, binds the listeners (or takes them from systemd or an upgrading
predecessor), detaches if asked, and runs the manager until it exits.
Anything wrong before a socket is bound is a ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from collections.abc import Callable, Sequence

from gshard import log
from gshard.cli import app_check, daemon
from gshard.config import Config
from gshard.errors import EXIT_USAGE, ConfigError
from gshard.manager import process_env, upgrade
from gshard.manager.loop import Manager
from gshard.shard import privileges
from gshard.sockets import activation
from gshard.sockets.listener import ListenerSet, open_listeners


def serve(read: Callable[[], Config], argv: Sequence[str] | None = None) -> int:
    """Run a server for the configuration ``read`` returns until it stops; the exit status.

    ``read`` layers the configuration (the command line's sources, or
    ``gshard.run``'s settings over their file); the manager calls it again for
    every reload, as gunicorn's arbiter reads its configuration again on HUP.
    ``argv`` is the command line that started it, which ``SIGUSR2`` starts
    again to upgrade gshard in place; without one (``gshard.run``), an
    upgrade is refused and the server keeps running. Raises ConfigError for
    a setting that cannot work here, before anything binds.
    """
    config = read()
    if config.print_config:
        print(config.describe())
        return 0
    check_paths(config)
    identity = privileges.resolve(config.user, config.group)
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
        print(f"gshard: error: logging config: {log.failure(exc)}", file=sys.stderr)
        return EXIT_USAGE
    for warning in config.compat_warnings():
        log.error_log.warning(warning)
    inherited = upgrade.inheritance(os.environ)
    try:
        listeners = _listeners(config, identity, inherited)
    except (OSError, ValueError) as exc:
        # Our bind errors carry their whole sentence as strerror ("cannot bind ...").
        log.error_log.error("Cannot listen: %s", getattr(exc, "strerror", None) or exc)
        return 1
    if config.daemon and inherited is None:  # a USR2 successor stays where it was started
        daemon.daemonize(config.enable_stdio_inheritance)
    try:
        manager = Manager(config, listeners, argv, inherited, reread=lambda: _checked(read))
    except OSError as exc:  # --metrics-bind or --statsd-host
        log.error_log.error("Cannot start: %s", exc)
        return 1
    return manager.run()


def _checked(read: Callable[[], Config]) -> Config:
    """The configuration read again for a reload, its paths checked as at start."""
    config = read()
    check_paths(config)
    return config


def check_paths(config: Config) -> None:
    """Refuse files and directories that cannot work, before anything binds.

    TLS files and logging configs must be there and readable; the pidfile,
    control socket and log files must be writable where they go (their
    directory exists); ``chdir`` and gunicorn's ``worker_tmp_dir`` must be
    directories. Each failure is a ConfigError naming the setting, so a typo
    in a path is one line and exit status 2, not a traceback after "Listening
    at". TLS files are only found here: loading them needs ``ssl``, which the
    manager never imports (gevent must patch it first, in the shards), so a
    file that is there but does not load fails the shards' boot instead.
    """
    for flag, path in (("--certfile", config.certfile), ("--keyfile", config.keyfile),
                       ("--ca-certs", config.ca_certs), ("--log-config", config.logconfig),
                       ("--log-config-json", config.logconfig_json)):
        if path is None:
            continue
        if not os.path.isfile(path):
            raise ConfigError(f"{flag}: no such file {path!r}")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{flag}: {path!r} is not readable")
    foreign = dict(config.gunicorn_only)
    for flag, directory in (("--chdir", config.chdir),
                            ("--worker-tmp-dir", foreign.get("worker_tmp_dir"))):
        if directory is not None and not os.path.isdir(directory):
            raise ConfigError(f"{flag}: no such directory {directory!r}")
    logs = [(flag, path) for flag, path in (("--error-logfile", config.errorlog),
                                            ("--access-logfile", config.accesslog))
            if path not in (None, "-")]
    for flag, path in (("--pid", config.pidfile), ("--control-socket", config.control_path),
                       *logs):
        if path is not None:
            _check_writable(flag, path)


def _check_writable(flag: str, path: str) -> None:
    if os.path.isdir(path):
        raise ConfigError(f"{flag}: {path!r} is a directory")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{flag}: {path!r} is not writable")
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"{flag}: cannot create {path!r}: no such directory {directory!r}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: cannot create {path!r}: {directory!r} is not writable")


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
