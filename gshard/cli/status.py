"""``gshard status``: what a running gshard is doing, as a table or as JSON.

The manager answers the control socket's ``status`` command with its status
document (``manager/observe/status.py``); this asks for it and prints it
(``render``), and ``gshard top`` redraws the same pieces every second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from gshard.manager.control import send_command


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
