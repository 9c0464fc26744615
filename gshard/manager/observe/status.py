"""The status document: what ``gshard status`` and ``gshard top`` show, as plain data.

The manager builds it (``document``) from a view of its state machine
(``manager.view``), its registry of shard reports and its listeners' queues,
and answers the control socket's ``status`` command with it as JSON. The
JSON is the interface for scripts; its schema is versioned (``SCHEMA``) and
documented on the docs' Observing page. Fields are only ever added within a version.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gshard.manager.observe.registry import Registry
from gshard.manager.view import MachineView
from gshard.version import __version__

SCHEMA = 1


@dataclass(frozen=True)
class ManagerInfo:
    """What the status says about the manager itself."""

    pid: int
    started: float  # monotonic
    started_wall: float
    app: str
    urls: tuple[str, ...]
    # --timeout: a shard that has not reported for this long is not alive (0: no limit).
    heartbeat_timeout: float = 30.0


@dataclass(frozen=True)
class View:
    """Everything the manager knows that status, /metrics and statsd show, at one moment."""

    info: ManagerInfo
    machine: MachineView
    registry: Registry
    queues: Mapping[int, tuple[int, int]]  # slot -> (waiting connections, limit)
    now: float  # monotonic
    wall: float


def document(view: View) -> dict[str, Any]:
    """The status as plain data, ready for JSON."""
    info, machine, registry, queues, now = (view.info, view.machine, view.registry,
                                            view.queues, view.now)
    shards = []
    for shard in sorted(machine.shards, key=lambda s: (s.slot, s.generation)):
        record = registry.shards.get(shard.pid)
        snap = record.snapshot if record is not None else None
        depth, limit = queues.get(shard.slot, (None, None))
        shards.append({
            "slot": shard.slot,
            "pid": shard.pid,
            "generation": shard.generation,
            "state": shard.state.value,
            "age": round(now - (record.started if record else shard.since), 1),
            "requests": snap.requests if snap else 0,
            "rps": round(record.rate(), 1) if record else 0.0,
            "in_flight": snap.in_flight if snap else 0,
            "connections": snap.connections if snap else 0,
            "idle": snap.idle if snap else 0,
            "queue": depth,
            "queue_limit": limit,
            "rss": snap.rss if snap else 0,
            "blocked": record.blocked if record else 0,
            "responses": snap.by_class() if snap else {},
            "last_heartbeat": (round(now - record.reported, 1)
                               if record is not None and record.reported is not None else None),
        })
    totals = registry.totals()
    return {
        "schema": SCHEMA,
        "manager": {
            "pid": info.pid,
            "gshard_version": __version__,
            "python_version": platform.python_version(),
            "uptime": round(now - info.started, 1),
            "started": _iso(info.started_wall),
            "app": info.app,
            "bind": list(info.urls),
            "phase": machine.phase.value,
            "shards": machine.slots,
            # Seconds a delayed stop still serves before it drains (--shutdown-delay).
            "lame_duck": (None if machine.lame_duck_until is None
                          else round(max(machine.lame_duck_until - now, 0.0), 1)),
        },
        "generations": [{"generation": g.number, "state": g.state.value, "shards": g.shards}
                        for g in machine.generations],
        "shards": shards,
        "queues": [{"slot": slot, "queue": depth, "queue_limit": limit}
                   for slot, (depth, limit) in sorted(queues.items())],
        "totals": {
            "requests": totals.requests,
            "rps": round(registry.rate(), 1),
            "responses": totals.by_class(),
            "bytes_in": totals.bytes_in,
            "bytes_out": totals.bytes_out,
            "in_flight": totals.in_flight,
            "connections": totals.connections,
            "blocked": registry.blocked_events,
        },
        "restarts": [
            {"at": _iso(d.at), "slot": d.slot, "pid": d.pid, "generation": d.generation,
             "reason": d.reason.value, "detail": d.detail}
            for d in registry.history
        ],
        "restart_counts": {reason.value: count for reason, count in registry.departures.items()},
        "last_reload": None if registry.last_reload is None else {
            "at": _iso(registry.last_reload.at),
            "ok": registry.last_reload.ok,
            "message": registry.last_reload.message,
        },
    }


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(wall))
