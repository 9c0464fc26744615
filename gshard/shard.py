"""A shard's start: from the fork to a loaded application and a serving loop.

The manager imports this module (to call ``run`` in the child it forks) and
must stay unpatched. ``preload`` imports gevent and the serving modules in the
manager before it forks, without patching anything, so shards do not import
them again; each shard then patches the standard library first thing in
``run``, before it imports the application. ``tls`` (and with it ``ssl``) is
imported only in a shard, after patching, and only when TLS is configured.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Any, NoReturn

from gshard import ipc, log, privileges
from gshard.errors import (
    EXIT_APP_LOAD_ERROR,
    EXIT_BOOT_ERROR,
    EXIT_OK,
    AppLoadError,
    TLSError,
)


def _exit_now(signum: int, frame: object) -> None:
    os._exit(EXIT_OK)


def preload() -> None:
    """Import gevent and the serving modules in the manager, once, before forking.

    Every shard then starts with them loaded instead of importing them again
    (four shards on two cores contend for the CPU while they boot). Importing
    is not patching: the manager stays unpatched, no event loop is created,
    and each shard still patches the standard library before it imports the
    application, as gunicorn's master does with its gevent worker module.
    """
    import gshard.serving  # noqa: F401


def run(spec: ipc.ShardSpec) -> NoReturn:
    """Become a shard; never returns, so the manager's stack is never unwound here."""
    # Until the loop installs its handlers, being told to stop means exiting.
    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(signum, _exit_now)
    for signum in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU,
                   signal.SIGWINCH):  # the manager's to act on; SIGUSR2 until serving
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    status = EXIT_BOOT_ERROR
    try:
        status = _run(spec)
    except BaseException:
        traceback.print_exc()
    finally:
        for handler in (*log.error_log.handlers, *log.access_log.handlers):
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _patch_stdlib() -> None:
    """gevent's ``patch_all``, with its plugin lookups answered once per kind.

    ``patch_all`` announces each module it patches to gevent plugins, and each
    announcement looks the plugins up by scanning every installed
    distribution's metadata: 25 scans, about half of ``patch_all``'s ~90 ms,
    in every shard at every start. Nothing is installed during the call, so
    each kind of lookup is scanned once (5 here) and answered from that.
    """
    from importlib import metadata

    from gevent import monkey

    scan = metadata.entry_points
    found: dict[tuple, Any] = {}

    def entry_points(**params: Any) -> Any:
        key = tuple(sorted(params.items()))
        if key not in found:
            found[key] = scan(**params)
        return found[key]

    metadata.entry_points = entry_points
    try:
        monkey.patch_all()
    finally:
        metadata.entry_points = scan


def _run(spec: ipc.ShardSpec) -> int:
    _patch_stdlib()

    from gshard.loader import load_app
    from gshard.serving import ShardServer

    config = spec.config
    log.set_process_title(f"shard {spec.slot} gen {spec.generation}", config)
    log.configure_for(config)
    spec.channel.setblocking(False)

    try:
        # TLS files are read before dropping privileges, so a key may be
        # readable by root only (as with nginx).
        tls_context = None
        if config.tls:
            from gshard.tls import server_context

            tls_context = server_context(config)
        privileges.drop(privileges.resolve(config.user, config.group, config.initgroups))
        if config.chdir:
            os.chdir(config.chdir)
        app = load_app(config.app, os.getcwd())
    except Exception as exc:
        detail = str(exc) if isinstance(exc, (AppLoadError, TLSError)) else traceback.format_exc()
        if not ipc.send(spec.channel, ipc.Kind.BOOT_FAILED, detail):
            log.error_log.error("Failed to load the application:\n%s", detail)
        return EXIT_APP_LOAD_ERROR
    return ShardServer(spec, app, tls_context).serve()
