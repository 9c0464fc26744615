"""``gshard health [live|ready]``: the health checks, for supervisors that run a command.

Docker's ``HEALTHCHECK``, ECS and similar run a command in the container and
read its exit status; they cannot send an HTTP request without a tool the
image may not have. This asks the manager over its control socket (so it
works without ``--metrics-bind``) the same question ``/livez`` or ``/readyz``
answers, prints the one-line reason and exits 0 (healthy) or 1 (not, or the
manager could not be reached).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gshard.cli import status
from gshard.manager.control import send_command


def main(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    parser.description = ("Exit 0 if gshard is ready (or, with 'live', alive), 1 if not: "
                          "what /readyz and /livez answer.")
    parser.add_argument("kind", nargs="?", choices=("live", "ready"), default="ready",
                        help="ready (default): serving and not stopping; live: worth keeping "
                             "(a restart would not help).")
    status.add_target_arguments(parser)
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="How long to wait for the answer (default 5).")
    args = parser.parse_args(argv)
    ok, message = send_command(status.control_path(args), f"health {args.kind}", args.timeout)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
