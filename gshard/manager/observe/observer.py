"""The manager's window onto itself: shard reports in, status, /metrics and statsd out.

The manager hands this a few things it already has (each shard message, each
action it performs, its poll loop's readable sockets, a tick) and asks it for
the status document; what to record and what to show is decided here, so the
manager's loop has no metric code of its own. Decisions about shards (why one
left, how a reload ended) are the state machine's; this only keeps books.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from gshard import ipc, log, snapshot
from gshard.config import Config
from gshard.manager import events
from gshard.manager.observe import health
from gshard.manager.observe.registry import Registry
from gshard.manager.observe.status import ManagerInfo, View, document
from gshard.manager.view import MachineQueries

# Each slot's accept queue: slot -> (waiting connections, limit).
Queues = dict[int, tuple[int, int]]


class Observer:
    """Books of the shards' reports, and the outlets that show them."""

    def __init__(self, config: Config, machine: MachineQueries, urls: tuple[str, ...],
                 queues: Callable[[], Queues], shared_ports: bool) -> None:
        """``machine``: the state machine, asked only for views of itself;
        ``urls``: where the server listens; ``queues``: reads each slot's
        accept queue now (the manager holds the listeners). ``shared_ports``:
        this manager is an upgrade's successor, and its predecessor still
        holds the metrics port until it hands over."""
        self.machine = machine
        self.queues = queues
        self.registry = Registry()
        self.info = ManagerInfo(
            pid=os.getpid(), started=time.monotonic(), started_wall=time.time(),
            app=config.app or "", urls=urls, heartbeat_timeout=config.timeout,
        )
        self._log_counter = snapshot.LogCounter(self.registry.manager_logs)
        log.error_log.addHandler(self._log_counter)
        self.metrics_server = None
        self.statsd = None
        self._statsd_settings = _statsd_settings(config)
        try:
            if config.metrics_bind is not None:
                from gshard.manager.observe.prometheus import MetricsServer  # only when asked for

                self.metrics_server = MetricsServer.open(config.metrics_bind, self.view,
                                                         shared_ports)
                log.error_log.info("Metrics at: %s (health checks: /livez, /readyz)",
                                   self.metrics_server.url)
            self.statsd = _open_statsd(config)
        except BaseException:
            self.close()
            raise

    def reconfigure(self, config: Config) -> None:
        """A reload read the configuration again: the application it names, and statsd's
        destination (one that cannot be opened leaves the old one sending)."""
        self.info = dataclasses.replace(self.info, app=config.app or "")
        if _statsd_settings(config) == self._statsd_settings:
            return
        try:
            statsd = _open_statsd(config)
        except OSError as exc:
            log.error_log.error("statsd: keeping %s: %s", self._statsd_settings[0], exc)
            return
        if self.statsd is not None:
            with contextlib.suppress(OSError):
                self.statsd.close()
        self.statsd, self._statsd_settings = statsd, _statsd_settings(config)

    # --- what the manager tells it ------------------------------------------

    def message(self, message: ipc.Message, now: float) -> None:
        """A shard's message: heartbeats carry its counters, BLOCKED where it is stuck."""
        if message.kind is ipc.Kind.BEAT and message.detail:
            shard = self.machine.shard(message.pid)
            if shard is None and message.pid not in self.registry.departed:
                return
            try:
                counters = snapshot.decode(message.detail)
            except ValueError:
                log.error_log.warning("Ignoring malformed counters from shard pid %d",
                                      message.pid)
                return
            slot, generation = (shard.slot, shard.generation) if shard else (-1, -1)
            self.registry.report(message.pid, slot, generation, counters, now)
        elif message.kind is ipc.Kind.BLOCKED:
            self.registry.blocked(message.pid, message.detail)

    def action(self, action: events.Action) -> None:
        """An action the manager carries out; departures and reload outcomes are booked."""
        match action:
            case events.Departed():
                self.registry.shard_gone(action.pid, action.slot, action.generation,
                                         action.reason, action.detail, time.time())
            case events.ReloadFinished():
                self.registry.reload_finished(action.ok, action.message, time.time())

    def descriptors(self) -> list:
        return self.metrics_server.descriptors() if self.metrics_server is not None else []

    def handle(self, readable: list) -> None:
        """Serve the scrapes among ``readable``."""
        if self.metrics_server is not None:
            self.metrics_server.handle(readable)

    def tick(self, now: float) -> None:
        if self.statsd is not None and self.statsd.due(now):
            self.statsd.flush(self.view())

    # --- what it shows ---------------------------------------------------------

    def view(self) -> View:
        return View(self.info, self.machine.view(), self.registry, self.queues(), time.monotonic(),
                    time.time())

    def status(self) -> dict[str, Any]:
        return document(self.view())

    def health(self, kind: str) -> health.Verdict:
        """``kind`` ("live" or "ready"): what /livez or /readyz answers now."""
        return health.check(kind, self.view())

    # --- teardown ----------------------------------------------------------------

    def close(self) -> None:
        """Close the outlets (at exit, and in a forked shard, which must not hold them)."""
        log.error_log.removeHandler(self._log_counter)
        for outlet in (self.metrics_server, self.statsd):
            if outlet is not None:
                with contextlib.suppress(OSError):
                    outlet.close()
        self.metrics_server = self.statsd = None


def _statsd_settings(config: Config) -> tuple[str | None, str, str]:
    return config.statsd_host, config.statsd_prefix, config.dogstatsd_tags


def _open_statsd(config: Config) -> Any:
    """A sender to ``--statsd-host``, or None without one (imported only when asked for)."""
    if not config.statsd_host:
        return None
    from gshard.manager.observe.statsd import StatsdSender

    return StatsdSender.open(config.statsd_host, config.statsd_prefix, config.dogstatsd_tags)
