"""gshard: a sharded gevent WSGI server with lossless hot restarts."""

import os
import sys

__version__ = "0.1.0"
SERVER_SOFTWARE = f"gshard/{__version__}"

# Modules setup.py may compile with Cython; the same files run as Python otherwise.
COMPILABLE = ("protocol", "response", "exchange", "wsgi", "connection", "context")


class _SourceFirst:
    """A finder that imports gshard's modules from their ``.py`` files.

    Installed with ``GSHARD_PURE_PYTHON=1``, so one installation can run
    either build: CI runs the test suite against both.
    """

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> object:
        from importlib.util import spec_from_file_location

        if not name.startswith("gshard."):
            return None
        source = os.path.join(os.path.dirname(__file__), *name.split(".")[1:]) + ".py"
        return spec_from_file_location(name, source) if os.path.exists(source) else None


if os.environ.get("GSHARD_PURE_PYTHON"):
    sys.meta_path.insert(0, _SourceFirst)


def build() -> str:
    """Which build runs: the compiled modules, or pure Python (for ``--version``)."""
    from importlib import import_module

    compiled = [name for name in COMPILABLE
                if not import_module(f"gshard.{name}").__file__.endswith(".py")]
    if not compiled:
        return "pure Python"
    if len(compiled) == len(COMPILABLE):
        return "compiled with Cython"
    return f"partly compiled with Cython: {', '.join(compiled)}"
