"""gunicorn's server hooks: called at gunicorn's moments, with gunicorn-shaped arguments.

A gunicorn config file's hooks receive gunicorn's own objects: the arbiter as
``server``, a ``Worker``, the parsed ``Request`` and its ``Response``. gshard
has none of those, so this module builds look-alikes from gshard's own state
(the manager's slots, a shard's spec), with the attribute names hooks
actually use, and ``call`` runs a hook and decides what its failure means.
The manager and the shards both read it (a ``Worker`` is made before the
fork, as gunicorn's is); the per-request look-alikes are the shard's
(``shard/request_hooks.py``):

* a hook a shard's boot depends on (``post_fork``, ``post_worker_init``,
  ``ssl_context``) fails that boot: the shard reports the traceback and exits,
  so a reload with a broken hook leaves the serving generation alone, as a
  broken import does;
* any other hook's exception is logged with its traceback and the process
  carries on (gunicorn's master dies of one; gshard's manager never does);
* ``pre_request`` is run by the exchange, inside its error handling, so a
  raising one answers 500 as gunicorn does.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from typing import Any

from gshard import log
from gshard.config import Config, config_names

# Hooks whose failure fails the shard's boot.
BOOT_HOOKS = frozenset({"post_fork", "post_worker_init", "ssl_context"})


class HookFailed(Exception):
    """A hook the shard's boot depends on raised; the message holds its traceback."""


def call(config: Config, name: str, *args: Any) -> Any:
    """Run hook ``name`` if the configuration defines it; its result, or None."""
    hook = getattr(config, name)
    if hook is None:
        return None
    try:
        return hook(*args)
    except Exception:
        if name in BOOT_HOOKS:
            raise HookFailed(f"The {name} hook raised:\n{traceback.format_exc()}") from None
        log.error_log.exception("Exception in the %s hook", name)
        return None


# --- what every hook object carries ----------------------------------------------


class HookLog:
    """gunicorn's ``server.log`` / ``worker.log``: its methods, over gshard's loggers."""

    def __init__(self) -> None:
        error = log.error_log
        self.error_log = error
        self.access_log = log.access_log
        self.critical = error.critical
        self.error = error.error
        self.warning = error.warning
        self.info = error.info
        self.debug = error.debug
        self.exception = error.exception
        self.log = error.log

    def reopen_files(self) -> None:
        log.reopen_files()

    def close_on_exec(self) -> None:
        """gshard's log files are opened close-on-exec already (Python's default)."""


class ConfigView:
    """gunicorn's ``cfg``: settings read by gunicorn's names (``cfg.workers``, ``cfg.is_ssl``).

    gshard's own names work too; gunicorn settings gshard has no use for read
    as given in the configuration.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._names = config_names()
        self._foreign = dict(config.gunicorn_only)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (a copy being made): no setting has such a name
            raise AttributeError(name)
        if name in self._names:
            return getattr(self._config, self._names[name])
        if name in self._foreign:
            return self._foreign[name]
        if name == "is_ssl":
            return self._config.tls
        if name == "address":
            return list(self._config.bind)
        raise AttributeError(f"gshard has no setting {name!r}")


# --- the manager: gunicorn's arbiter ----------------------------------------------


class Server:
    """What hooks receive as ``server`` (gunicorn's Arbiter), kept by the manager.

    ``WORKERS`` maps the PID of each live shard to its ``Worker``, as
    gunicorn's does; a forked shard keeps the manager's copy as it was at the
    fork. ``num_workers`` is the manager's current shard count. ``config`` is
    the configuration read last (a reload reads it again, as gunicorn's
    arbiter does): the hooks of the server's own moments come from it, those
    about one shard from the configuration of its generation.
    """

    def __init__(
        self,
        config: Config,
        pid: int,
        addresses: Sequence[str | tuple[str, int]],
        count: Callable[[], int],
    ) -> None:
        self.config = config
        self.log = HookLog()
        self.pid = pid
        # Where the server listens, as gunicorn lists it: (host, port) or a unix path.
        self.address = list(addresses)
        self.WORKERS: dict[int, Worker] = {}
        self.worker_age = 0
        self._count = count

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = config
        self.cfg = ConfigView(config)
        self.timeout = config.timeout
        self.proc_name = config.proc_name or config.app

    @property
    def num_workers(self) -> int:
        return self._count()

    def call(self, name: str, *args: Any) -> None:
        """A manager-side hook taking the server first (on_starting, when_ready, ...)."""
        call(self.config, name, self, *args)

    def forking(self, slot: int, generation: int, config: Config) -> Worker:
        """Before a fork: the new shard's ``Worker`` (``config``: its generation's), after
        that configuration's ``pre_fork`` has seen it."""
        self.worker_age += 1
        worker = Worker(self, self.worker_age, slot, generation, config)
        call(config, "pre_fork", self, worker)
        return worker

    def forked(self, worker: Worker, pid: int) -> None:
        worker.pid = pid
        self.WORKERS[pid] = worker

    def reaped(self, pid: int) -> None:
        """A shard process ended: ``child_exit``, as gunicorn calls it when it reaps one."""
        worker = self.WORKERS.pop(pid, None)
        if worker is not None:
            call(worker.config, "child_exit", self, worker)


# --- a shard: gunicorn's worker -----------------------------------------------------


class Worker:
    """What hooks receive as ``worker``, made before the fork as gunicorn's is.

    ``pid`` is ``"[booting]"`` until the fork, as in gunicorn. ``slot`` and
    ``generation`` are gshard's own: which listener and which deploy. A hook
    that sets ``alive = False`` (gunicorn's way to have a worker replaced,
    e.g. past a memory limit) makes the shard ask for a successor, as
    ``--max-requests`` does: it drains once the successor serves.
    """

    def __init__(self, server: Server, age: int, slot: int, generation: int,
                 config: Config) -> None:
        self.server = server
        self.config = config  # its generation's
        self.cfg = ConfigView(config)
        self.log = server.log
        self.age = age
        self.pid: int | str = "[booting]"
        self.ppid = server.pid
        self.slot = slot
        self.generation = generation
        self.timeout = config.timeout / 2
        self._alive = True
        # Set by the serving shard: asks the manager for a successor.
        self.retire: Callable[[], None] | None = None
        self.booted = False
        self.aborted = False
        self.wsgi: Callable | None = None

    def __str__(self) -> str:
        return f"<Worker {self.pid}>"

    @property
    def alive(self) -> bool:
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        if self._alive and not value and self.retire is not None:
            self.retire()
        self._alive = bool(value)

    def notify(self) -> None:
        """gshard's shards report liveness on their own (a heartbeat greenlet)."""

    def call(self, name: str) -> None:
        """A shard-side hook taking the worker alone (post_worker_init, worker_int, ...)."""
        call(self.config, name, self)

    def call_with_server(self, name: str) -> None:
        """A shard-side hook taking the server and the worker (post_fork, worker_exit)."""
        call(self.config, name, self.server, self)


def ssl_context(config: Config, default: Callable[[], Any]) -> Any:
    """The shard's SSLContext: the ``ssl_context(cfg, default_factory)`` hook's, or the default."""
    if config.ssl_context is None:
        return default()
    context = call(config, "ssl_context", ConfigView(config), default)
    if context is None:
        raise HookFailed("The ssl_context hook returned None instead of an SSLContext")
    return context
