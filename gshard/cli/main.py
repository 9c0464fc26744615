"""The ``gshard`` command: subcommands talk to a running gshard; anything else starts one.

Parsing is ``arguments``, starting is ``serve``: this only chooses between
them and turns a ``ConfigError`` into one line and exit status 2 (1 under
``--check-config``, as gunicorn's).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from gshard.cli import ctl, health, status, top
from gshard.cli.arguments import SUBCOMMANDS, Parser, parse_config
from gshard.cli.serve import serve
from gshard.errors import EXIT_USAGE, ConfigError


def subcommand_main(name: str, argv: Sequence[str]) -> int:
    """``gshard status|top|health|reload|scale|recycle|stop|reopen ...``: talk to a running
    gshard (the one this user runs, unless an option names another)."""
    parser = Parser(prog=f"gshard {name}")
    try:
        if name == "status":
            return status.main(argv, parser)
        if name == "top":
            return top.main(argv, parser)
        if name == "health":
            return health.main(argv, parser)
        return ctl.main(name, argv, parser)
    except ConfigError as exc:
        print(f"gshard {name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except status.TargetError as exc:
        print(f"gshard {name}: {exc}", file=sys.stderr)
        return exc.status


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return subcommand_main(argv[0], argv[1:])
    environ = dict(os.environ)  # as gshard started: raw_env changes os.environ later
    try:
        return serve(lambda: parse_config(argv, environ), argv)
    except ConfigError as exc:
        print(f"gshard: error: {exc}", file=sys.stderr)
        # --check-config answers 0 or 1, as gunicorn's; a run refuses with 2.
        return 1 if "--check-config" in argv else EXIT_USAGE


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
