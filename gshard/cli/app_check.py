"""``--check-config``: import the application the way a shard would, then report.

The manager must never import the application nor be patched by gevent, so
the import happens in a forked child that patches first, changes directory
and imports, exactly as a booting shard does; the manager only reads its
exit status.
"""

from __future__ import annotations

import os
import sys
import traceback

from gshard.config import Config
from gshard.errors import AppLoadError


def check(config: Config) -> int:
    """0 if the application imports; 1, with the reason on stderr, if it does not."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os._exit(_import_in_child(config))
    _, status = os.waitpid(pid, 0)
    ok = os.waitstatus_to_exitcode(status) == 0
    if ok:
        print(f"gshard: configuration OK; {config.app} imports")
    return 0 if ok else 1


def _import_in_child(config: Config) -> int:
    try:
        from gevent import monkey

        monkey.patch_all()
        from gshard.shard.loader import load_app

        if config.chdir:
            os.chdir(config.chdir)
        load_app(config.app, os.getcwd())
    except AppLoadError as exc:
        print(f"gshard: error: the application failed to load: {exc}", file=sys.stderr)
        return 1
    except BaseException:
        print("gshard: error: the application failed to load:", file=sys.stderr)
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0
