"""``raw_env`` and ``pythonpath``: the environment the application is imported in.

Applied once in the manager, before any shard is forked, as gunicorn's
master does: every shard (and every later generation) inherits them. Setting
a variable or a path imports nothing, so the manager stays free of the app.
"""

from __future__ import annotations

import os
import sys

from gshard.config import Config


def apply(config: Config) -> None:
    """Export ``raw_env`` and put ``pythonpath`` first on ``sys.path``."""
    for entry in config.raw_env:
        name, _, value = entry.partition("=")
        os.environ[name] = value
    if config.pythonpath:
        for directory in reversed(config.pythonpath.split(",")):
            directory = os.path.abspath(directory.strip())
            if directory not in sys.path:
                sys.path.insert(0, directory)
