"""``--check-config``: set up logging and import the application the way a shard would.

The manager must never import the application nor be patched by gevent, so
the check happens in a forked child that patches first, applies the logging
config, takes the shards' user and group, changes directory and imports,
exactly as a booting shard does; the manager only reads its exit status.
What fails is named: a logging config
that will not work at start (``logging config: ...``), or the application
itself (a module it imports, a data directory it opens at import).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback

from gshard import log
from gshard.config import Config
from gshard.errors import AppLoadError
from gshard.shard import privileges


def check(config: Config) -> int:
    """0 if the logging config applies and the application imports; 1, with the reason
    on stderr, if either does not."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os._exit(_check_in_child(config))
    _, status = os.waitpid(pid, 0)
    ok = os.waitstatus_to_exitcode(status) == 0
    if ok:
        print(f"gshard: configuration OK; {config.app} imports")
    return 0 if ok else 1


def _check_in_child(config: Config) -> int:
    failed = "gshard: error: the configuration is valid, but the application failed to load:"
    try:
        from gevent import monkey

        monkey.patch_all()
        try:
            # Its output stays on this terminal: capture_output is a shard's business.
            log.configure_for(dataclasses.replace(config, capture_output=False))
        except Exception as exc:  # as the start reports it, where it would fail
            print(f"gshard: error: logging config: {log.failure(exc)}", file=sys.stderr)
            return 1
        from gshard.shard.loader import load_app

        # As a shard (or --preload's template) does: the application is imported
        # as --user/--group, never as root, so what it reads at import must be
        # theirs to read; checked as root, it would pass where the start fails.
        privileges.drop(privileges.resolve(config.user, config.group, config.initgroups))
        if config.chdir:
            os.chdir(config.chdir)
        load_app(config.app, os.getcwd())
    except AppLoadError as exc:
        print(f"{failed} {exc}", file=sys.stderr)
        return 1
    except BaseException:
        print(failed, file=sys.stderr)
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0
