"""A shard's start: from the fork to a loaded application and a serving loop.

The manager imports this module (to call ``run`` in the child it forks) and
must stay unpatched. ``preload`` imports gevent and the serving modules in the
manager before it forks, without patching anything, so shards do not import
them again; each shard then patches the standard library first thing in
``run``, before it imports the application. ``tls`` (and with it ``ssl``) is
imported only in a shard, after patching, and only when TLS is configured.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any, NoReturn

from gshard import hooks, ipc, log
from gshard.config import Config
from gshard.errors import (
    EXIT_ABORTED,
    EXIT_APP_LOAD_ERROR,
    EXIT_BOOT_ERROR,
    EXIT_OK,
    AppLoadError,
    TLSError,
)
from gshard.shard import privileges, sources


def preload() -> None:
    """Import gevent and the serving modules in the manager, once, before forking.

    Every shard then starts with them loaded instead of importing them again
    (four shards on two cores contend for the CPU while they boot). Importing
    is not patching: the manager stays unpatched, no event loop is created,
    and each shard still patches the standard library before it imports the
    application, as gunicorn's master does with its gevent worker module.
    """
    import gshard.shard.serving  # noqa: F401


def run(spec: ipc.ShardSpec, preloaded: Preloaded | None = None) -> NoReturn:
    """Become a shard; never returns, so the manager's stack is never unwound here.

    ``preloaded``: the application a template already loaded (``--preload``);
    without it the shard patches the standard library and loads its own.
    """
    spec.worker.pid = os.getpid()
    # Until the loop installs its handlers, being told to stop means exiting
    # (through worker_exit, as a gunicorn worker's exit always goes).
    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: _exit(spec, EXIT_OK))
    for signum in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU,
                   signal.SIGWINCH, ipc.LAME_DUCK_SIGNAL):
        # the manager's to act on; SIGUSR2 and the lame duck's until serving
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGABRT, lambda signum, frame: _abort(spec))
    # Signals sent since the fork were held for these handlers (manager._fork).
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    status = EXIT_BOOT_ERROR
    try:
        status = _run(spec, preloaded)
    except BaseException:
        traceback.print_exc()
    finally:
        _exit(spec, status)


def _abort(spec: ipc.ShardSpec) -> NoReturn:
    """SIGABRT: the manager found this shard's event loop blocked past --timeout.

    A real signal handler, not a gevent one, so it runs even though the loop
    is blocked (between two bytecodes, or when a blocking call is interrupted);
    as gunicorn's worker does, it calls worker_abort and exits. A shard
    blocked where no Python runs is killed by the manager a moment later.
    """
    worker = spec.worker
    worker.aborted = True
    worker.call("worker_abort")
    _exit(spec, EXIT_ABORTED)


def _exit(spec: ipc.ShardSpec, status: int) -> NoReturn:
    spec.worker.call_with_server("worker_exit")
    for handler in (*log.error_log.handlers, *log.access_log.handlers):
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def patch_stdlib() -> None:
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


@dataclass
class Preloaded:
    """The application a template process loaded for the shards it forks (``--preload``).

    ``failure`` holds (detail, exit status) when loading failed: each shard
    forked from the template then reports it and exits, exactly as a shard
    that failed to load the application itself does.
    """

    app: Any = None
    tls_context: Any = None
    failure: tuple[str, int] | None = None


def load(config: Config) -> Preloaded:
    """Load what serving needs, in a patched process: TLS context, privileges, the app."""
    from gshard.shard.loader import load_app

    try:
        # TLS files are read before dropping privileges, so a key may be
        # readable by root only (as with nginx).
        tls_context = None
        if config.tls:
            from gshard.shard.tls import server_context

            tls_context = hooks.ssl_context(config, lambda: server_context(config))
        privileges.drop(privileges.resolve(config.user, config.group, config.initgroups))
        if config.chdir:
            os.chdir(config.chdir)
        app = load_app(config.app, os.getcwd())
        _freeze_what_imports_made()
        return Preloaded(app, tls_context)
    except hooks.HookFailed as exc:
        return Preloaded(failure=(str(exc), EXIT_BOOT_ERROR))
    except Exception as exc:
        detail = str(exc) if isinstance(exc, (AppLoadError, TLSError)) else traceback.format_exc()
        return Preloaded(failure=(detail, EXIT_APP_LOAD_ERROR))


def _freeze_what_imports_made() -> None:
    """Move every object alive after the application's import out of the collector's sight.

    Modules, classes and functions live as long as the process; without
    this, each full collection walks them all again (tens of milliseconds
    for a Flask application, a pause every request waiting then shares), and
    under --preload writing their collector fields would copy the template's
    pages into every shard. Garbage from the import is collected first, so
    freezing keeps only what is reachable.
    """
    gc.collect()
    gc.freeze()


def _run(spec: ipc.ShardSpec, preloaded: Preloaded | None) -> int:
    worker = spec.worker
    try:
        # Before patching, as gunicorn's gevent worker calls it (it patches in
        # init_process, after post_fork): a post_fork that makes a database
        # driver cooperative (psycogreen) sees the same process in both. A
        # preloaded shard was forked from a patched template, as with
        # gunicorn's --preload, where the application is imported first.
        worker.call_with_server("post_fork")
    except hooks.HookFailed as exc:
        return _boot_failed(spec, str(exc), EXIT_BOOT_ERROR)
    if preloaded is None:
        patch_stdlib()
    else:
        import gevent

        gevent.reinit()  # the template's event loop state belongs to the template

    from gshard.shard.serving import ShardServer

    config = spec.config
    log.set_process_title(f"shard {spec.slot} gen {spec.generation}", config)
    log.configure_for(config)
    spec.channel.setblocking(False)

    loaded = load(config) if preloaded is None else preloaded
    if loaded.failure is not None:
        return _boot_failed(spec, *loaded.failure)
    try:
        worker.wsgi = loaded.app
        worker.call("post_worker_init")
    except hooks.HookFailed as exc:
        return _boot_failed(spec, str(exc), EXIT_BOOT_ERROR)
    if config.reload:
        sources.report_sources(spec.channel)
    worker.booted = True
    return ShardServer(spec, loaded.app, loaded.tls_context).serve()


def _boot_failed(spec: ipc.ShardSpec, detail: str, status: int) -> int:
    """Tell the manager why this shard will not serve; the exit status that says so too."""
    if not ipc.send(spec.channel, ipc.Kind.BOOT_FAILED, detail):
        log.error_log.error("Shard failed to boot:\n%s", detail)
    return status
