"""``gshard status``: what a running gshard is doing, as a table or as JSON.

The manager answers the control socket's ``status`` command with its status
document (``manager/observe/status.py``); this asks for it and prints it
(``render``), and ``gshard top`` redraws the same pieces every second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from gshard.addresses import parse_bind
from gshard.errors import EXIT_USAGE
from gshard.manager import discovery
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
    """Which gshard to ask: without an option, the one this user runs."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-p", "--pid", metavar="PID|FILE",
                       help="The manager's pid, or the --pid file it was started with "
                            "(its socket is FILE.ctl).")
    where.add_argument("--bind", metavar="ADDRESS",
                       help="The gshard listening at ADDRESS (as its --bind says it).")
    where.add_argument("--control-socket", metavar="PATH",
                       help="The --control-socket the server was started with.")


class TargetError(Exception):
    """No single gshard to ask; the message says why, ``status`` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def control_path(args: argparse.Namespace) -> str:
    """The control socket of the gshard the options name, else of the one running.

    Without options, gshard looks where managers put their sockets by default
    (``manager.discovery``); with none running it fails (1), with several it
    lists them and asks which (2).
    """
    if args.control_socket:
        return args.control_socket
    if args.pid and not (args.pid.isdigit() and not os.path.exists(args.pid)):
        return f"{args.pid}.ctl"
    found = discovery.running()
    if args.pid:
        chosen = [i for i in found if i.pid == int(args.pid)]
        what = f"with manager pid {args.pid}"
    elif args.bind:
        wanted = _bind_url(args.bind)
        chosen = [i for i in found if i.status is not None
                  and wanted in (_bind_url(url) for url in i.status["manager"]["bind"])]
        what = f"listening at {args.bind}"
    else:
        chosen, what = found, "of this user"
    if len(chosen) == 1:
        return chosen[0].path
    if not chosen:
        places = ", ".join(discovery.candidate_dirs())
        raise TargetError(f"no running gshard {what} found (looked in {places}); "
                          "name one with --pid, --bind or --control-socket", 1)
    rows = [("PID", "BIND", "APP", "STARTED"), *(i.describe() for i in chosen)]
    listing = "\n".join("  " + line for line in table(rows))
    raise TargetError(f"{len(chosen)} gshards are running; say which with --pid PID, "
                      f"--bind ADDRESS or --control-socket PATH:\n{listing}", EXIT_USAGE)


def _bind_url(text: str) -> str:
    """An address as the status's ``bind`` spells it, without the scheme's TLS."""
    text = text.replace("https://", "http://", 1)
    if text.startswith(("http://", "unix:")):
        return text
    try:
        return parse_bind(text).url()
    except ValueError:
        return text


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
