"""gshard: a sharded gevent WSGI server with lossless hot restarts.

The package is cut by process: ``manager/`` runs in the one unpatched
manager process, ``shard/`` after each fork, ``http/`` once per connection
inside a shard, ``sockets/`` holds the listeners across generations, and
``cli/`` is what a person types. The modules at this level (errors, config,
addresses, gunicorn_compat, log, ipc, hooks, snapshot, version) are what
every process reads. setup.cfg states which folder may import which, and
``lint-imports`` checks it.
"""

from __future__ import annotations

from typing import Any

from gshard.version import SERVER_SOFTWARE, __version__

__all__ = ["SERVER_SOFTWARE", "__version__", "run"]


def run(app: str, **settings: Any) -> int:
    """Serve ``app`` (``"myapp:app"``) until stopped; the exit status, as the command's.

    ``settings`` are the settings table's names (``bind``, ``shards``,
    ``timeout``...; ``gshard --print-config`` lists them), checked exactly as
    the command line's are: a bad one raises ``gshard.errors.ConfigError``
    before anything binds. Values are Python values (``shards=4``,
    ``bind=["127.0.0.1:8000"]``) or the strings a command line would give.
    Unlike the command, nothing is read from a config file or the
    environment unless asked: pass ``config="gunicorn.conf.py"`` to read one
    (these settings win over its values, as the command line's do; a reload
    reads that file again).
    """
    from gshard.cli.arguments import settings_config
    from gshard.cli.serve import serve

    return serve(lambda: settings_config(app, settings))
