"""What a reload may change: the configuration read again, less what only a new manager can change.

A reload (HUP, ``gshard reload``, ``--reload``) reads the configuration again,
as gunicorn's does, and the new generation runs with it: shard count,
timeouts, hooks, ``raw_env``, logging, limits. A few settings describe what
the manager itself holds for its whole life (its listeners, its files, its
detaching, its template processes); those keep the value the manager
started with, and the reload says so in one warning naming each.
"""

from __future__ import annotations

import dataclasses

from gshard.config import Config
from gshard.manager.events import Timings

# Each setting a reload cannot change, and why.
FIXED = {
    "bind": "the listeners are the manager's",
    "backlog": "the listeners' queues were made with it",
    "user": "the manager gave the listeners' files to that user",
    "group": "the manager gave the listeners' files to that group",
    "umask": "the manager and everything it forks run under it",
    "pidfile": "the manager owns its pidfile",
    "control_socket": "the manager owns its control socket",
    "control_socket_disable": "the manager owns its control socket",
    "daemon": "the manager detached (or not) at start",
    "enable_stdio_inheritance": "the manager detached (or not) at start",
    "metrics_bind": "the manager holds the metrics listener",
    "preload_app": "the manager starts template processes (or not) from the start",
    "reload": "the manager watches files (or not) from the start",
    "check_config": "the server is running",
    "print_config": "the server is running",
}


def keep_fixed(running: Config, read: Config) -> tuple[Config, list[str]]:
    """``read`` with the settings a reload cannot change kept as ``running`` has them;
    and the names of those the reload asked to change (one warning names them)."""
    changed = [name for name in FIXED if getattr(read, name) != getattr(running, name)]
    if not changed:
        return read, []
    return dataclasses.replace(read, **{name: getattr(running, name) for name in changed}), changed


def kept_message(changed: list[str]) -> str:
    """The warning for settings a reload kept: each named, with why."""
    reasons = "; ".join(f"{name} ({FIXED[name]})" for name in changed)
    return (f"Reload keeps the value gshard started with for {reasons}: they change only "
            "when gshard is restarted")


def timings_of(config: Config) -> Timings:
    """What the state machine judges a generation's shards by."""
    return Timings(boot_timeout=config.boot_timeout, heartbeat_timeout=config.timeout,
                   graceful_timeout=config.graceful_timeout,
                   shutdown_delay=config.shutdown_delay)
