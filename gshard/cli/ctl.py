"""The control commands that change a running gshard and wait for the outcome.

``gshard reload``, ``scale N``, ``recycle PID``, ``stop [--fast]`` and
``reopen`` each send one line to the manager's control socket and print its
answer: exit status 0 when it happened, 1 with the reason when it did not
(or the manager could not be reached), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gshard.cli import status
from gshard.manager.control import send_command

# (help, default seconds to wait) of each command.
COMMANDS = {
    "reload": ("Hot-restart (read the configuration again, re-import the application) and "
               "wait until the new generation serves.", 300.0),
    "scale": ("Change the number of shards and wait until that many serve.", 120.0),
    "recycle": ("Replace one shard gracefully: its successor serves before it drains.", 120.0),
    "stop": ("Stop gshard (gracefully, or --fast) and wait until it has.", 120.0),
    "reopen": ("Reopen the log files (after logrotate moved them).", 10.0),
}


def main(name: str, argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    """Run control command ``name`` with its arguments ``argv``; the exit status."""
    help_text, timeout = COMMANDS[name]
    parser.description = help_text
    status.add_target_arguments(parser)
    if name == "scale":
        parser.add_argument("count", type=int, metavar="N", help="Shards to run.")
    elif name == "recycle":
        parser.add_argument("shard_pid", type=int, metavar="PID", help="The shard to replace.")
    elif name == "stop":
        parser.add_argument("--fast", action="store_true",
                            help="Do not wait for requests in flight (as SIGINT).")
    parser.add_argument("--timeout", type=float, default=timeout, metavar="SECONDS",
                        help=f"How long to wait for the outcome (default {timeout:g}).")
    args = parser.parse_args(argv)
    command = {
        "scale": lambda: f"scale {args.count}",
        "recycle": lambda: f"recycle {args.shard_pid}",
        "stop": lambda: "stop fast" if args.fast else "stop",
    }.get(name, lambda: name)()
    ok, message = send_command(status.control_path(args), command, args.timeout)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
