"""gshard: a sharded gevent WSGI server with lossless hot restarts."""

import glob
import os
import sys

__version__ = "0.1.0"
SERVER_SOFTWARE = f"gshard/{__version__}"

# Modules setup.py may compile with Cython; the same files run as Python otherwise.
COMPILABLE = ("protocol", "response", "exchange", "wsgi", "connection", "context")
_HERE = os.path.dirname(__file__)


class _SourceWhereNewer:
    """Imports a compilable module from its ``.py`` file when told to or when it is newer.

    ``GSHARD_PURE_PYTHON=1`` runs one installation as pure Python (CI runs
    the test suite against both builds). Without it, in a git checkout (an
    editable install), a module edited after it was compiled runs from its
    source too, so an edit is never silently shadowed by a stale extension
    module. (Installed from a wheel, file times say nothing: pip writes each
    file when it unpacks it.)
    """

    pure = bool(os.environ.get("GSHARD_PURE_PYTHON"))
    checkout = os.path.exists(os.path.join(_HERE, os.pardir, ".git"))

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> object:
        package, _, module = name.partition(".")
        if package != "gshard" or module not in COMPILABLE:
            return None
        source = os.path.join(_HERE, module + ".py")
        if not cls.pure:
            if not cls.checkout:
                return None
            compiled = glob.glob(os.path.join(_HERE, module + ".*.so"))
            if not compiled or os.path.getmtime(compiled[0]) >= os.path.getmtime(source):
                return None  # the regular finders take the compiled module
        from importlib.util import spec_from_file_location

        return spec_from_file_location(name, source)


sys.meta_path.insert(0, _SourceWhereNewer)


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
