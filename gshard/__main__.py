"""``python -m gshard`` is the same as the ``gshard`` console script."""

from gshard.cli.main import run

run()
