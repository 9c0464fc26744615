"""``raw_env`` and ``pythonpath``: the environment the application is imported in.

Applied in the manager before any shard is forked, as gunicorn's master does,
so the manager's hooks see it too; and applied again in each forked shard or
template for the configuration of its generation, since a reload may have
read another ``raw_env`` (gunicorn's reload puts back the variables the old
one set, then sets the new ones; so does ``apply``). Setting a variable or a
path imports nothing, so the manager stays free of the app.
"""

from __future__ import annotations

import os
import sys

from gshard.config import Config

# The value each variable had before raw_env set it (None: it was not set), so a
# configuration read again starts from the environment gshard was started with.
_before: dict[str, str | None] = {}


def apply(config: Config) -> None:
    """Export ``raw_env`` over the environment gshard started with, and put
    ``pythonpath`` first on ``sys.path``."""
    for name, value in _before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _before.clear()
    for entry in config.raw_env:
        name, _, value = entry.partition("=")
        _before.setdefault(name, os.environ.get(name))
        os.environ[name] = value
    if config.pythonpath:
        for directory in reversed(config.pythonpath.split(",")):
            directory = os.path.abspath(directory.strip())
            if directory not in sys.path:
                sys.path.insert(0, directory)
