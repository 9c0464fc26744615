"""``python -m gshard`` is the same as the ``gshard`` console script."""

from gshard.cli import run

run()
