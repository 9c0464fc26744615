"""``gshard status``: what a running gshard is doing, as a table or as JSON.

The manager builds the document (``document``) from its state machine, its
registry of shard reports and its listeners' queues, and answers the control
socket's ``status`` command with it; the command prints it (``render``).
The JSON is the interface for scripts; its schema is versioned (``SCHEMA``)
and documented in the README. Fields are only ever added within a version.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gshard import __version__
from gshard import manager_fsm as fsm
from gshard.registry import Registry

SCHEMA = 1


@dataclass(frozen=True)
class ManagerInfo:
    """What the status says about the manager itself."""

    pid: int
    started: float  # monotonic
    started_wall: float
    app: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class View:
    """Everything the manager knows that status, /metrics and statsd show, at one moment."""

    info: ManagerInfo
    machine: fsm.ManagerFSM
    registry: Registry
    queues: Mapping[int, tuple[int, int]]  # slot -> (waiting connections, limit)
    now: float  # monotonic
    wall: float


def document(view: View) -> dict[str, Any]:
    """The status as plain data, ready for JSON."""
    info, machine, registry, queues, now = (view.info, view.machine, view.registry,
                                            view.queues, view.now)
    shards = []
    for shard in sorted(machine.shards.values(), key=lambda s: (s.slot, s.generation)):
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
        },
        "generations": _generations(machine),
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


def _generations(machine: fsm.ManagerFSM) -> list[dict[str, Any]]:
    """Each generation with shards, newest first: serving, booting or draining."""
    numbers = sorted({s.generation for s in machine.shards.values()}, reverse=True)
    result = []
    for generation in numbers:
        if generation == machine.booting:
            state = "booting"
        elif generation == machine.live and machine.phase is not fsm.Phase.STOPPING:
            state = "serving"
        else:
            state = "draining"
        result.append({"generation": generation, "state": state,
                       "shards": len(machine.of_generation(generation))})
    return result


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(wall))


# --- rendering -----------------------------------------------------------------


def human_bytes(count: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if count < 1024 or unit == "G":
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024
    return f"{count:.1f}G"


def human_age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def queue_text(shard: Mapping[str, Any]) -> str:
    return "-" if shard["queue"] is None else f"{shard['queue']}/{shard['queue_limit']}"


def shard_state(doc: Mapping[str, Any], shard: Mapping[str, Any]) -> str:
    """A shard's state in the table: a ready shard shows its generation's state."""
    if shard["state"] != "ready":
        return shard["state"]
    for generation in doc["generations"]:
        if generation["generation"] == shard["generation"]:
            return generation["state"] if generation["state"] != "booting" else "ready"
    return "ready"


def header_lines(doc: Mapping[str, Any]) -> list[str]:
    manager, totals = doc["manager"], doc["totals"]
    generations = ", ".join(f"gen {g['generation']} {g['state']} ({g['shards']})"
                            for g in doc["generations"]) or "none"
    lines = [
        f"gshard {manager['gshard_version']} (Python {manager['python_version']})  "
        f"manager pid {manager['pid']}  up {human_age(manager['uptime'])}  "
        f"app {manager['app']}",
        f"listening: {' '.join(manager['bind'])}  phase: {manager['phase']}  "
        f"shards: {manager['shards']}",
        f"generations: {generations}",
        f"requests: {totals['requests']:,}  {totals['rps']:,.1f} req/s (10 s)  "
        f"in flight: {totals['in_flight']}  connections: {totals['connections']}",
    ]
    reload = doc["last_reload"]
    if reload is not None:
        lines.append(f"last reload: {'ok' if reload['ok'] else 'FAILED'} at {reload['at']}: "
                     f"{reload['message']}")
    return lines


COLUMNS = ("SLOT", "PID", "GEN", "STATE", "AGE", "REQUESTS", "REQ/S", "IN-FLIGHT", "CONNS",
           "QUEUE", "RSS", "BEAT")


def shard_row(doc: Mapping[str, Any], shard: Mapping[str, Any]) -> tuple[str, ...]:
    beat = shard["last_heartbeat"]
    return (
        str(shard["slot"]), str(shard["pid"]), str(shard["generation"]),
        shard_state(doc, shard), human_age(shard["age"]), f"{shard['requests']:,}",
        f"{shard['rps']:.1f}", str(shard["in_flight"]), str(shard["connections"]),
        queue_text(shard), human_bytes(shard["rss"]), "-" if beat is None else f"{beat:.1f}s",
    )


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def render(doc: Mapping[str, Any]) -> str:
    """The readable table ``gshard status`` prints."""
    lines = header_lines(doc)
    lines.append("")
    lines += table([COLUMNS, *(shard_row(doc, shard) for shard in doc["shards"])])
    if doc["restarts"]:
        counts = ", ".join(f"{reason} {count}" for reason, count in
                           sorted(doc["restart_counts"].items()))
        lines += ["", f"shards that left ({counts}):"]
        for departure in doc["restarts"][-10:]:
            lines.append(f"  {departure['at']}  slot {departure['slot']}  pid {departure['pid']}"
                         f"  gen {departure['generation']}  {departure['reason']}: "
                         f"{departure['detail']}")
    return "\n".join(lines) + "\n"


# --- the command -------------------------------------------------------------


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """``--pid FILE`` or ``--control-socket PATH``: which gshard to ask."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-p", "--pid", metavar="FILE",
                       help="The --pid file the server was started with (its socket is FILE.ctl).")
    where.add_argument("--control-socket", metavar="PATH",
                       help="The --control-socket the server was started with.")


def control_path(args: argparse.Namespace) -> str:
    return args.control_socket or f"{args.pid}.ctl"


def fetch(path: str, timeout: float = 5.0) -> dict[str, Any]:
    """The status document from the manager at ``path``; RuntimeError with the reason."""
    from gshard.control import send_command

    ok, message = send_command(path, "status", timeout)
    if not ok:
        raise RuntimeError(message)
    try:
        return json.loads(message)
    except ValueError:
        raise RuntimeError("the manager's answer is not a status document") from None


def main(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    """``gshard status``: print the status once (exit 1 if the manager cannot be reached)."""
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="Print the JSON document.")
    args = parser.parse_args(argv)
    try:
        doc = fetch(control_path(args))
    except RuntimeError as exc:
        print(f"gshard status: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.json else render(doc))
    return 0
