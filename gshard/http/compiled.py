"""The compiled set: which modules of ``gshard/http`` Cython compiles, and when they are used.

The per-request modules ``cimport`` each other's classes (an ``Exchange``
holds a typed ``ResponseWriter``), so a compiled module is only valid beside
compiled modules built from the same sources: one module run from its
``.py`` next to the others compiled fails at import with "size changed, may
indicate binary incompatibility". So the set is one unit, decided once per
process:

* ``GSHARD_PURE_PYTHON=1``: every module runs from its ``.py`` file;
* an extension missing for any of them (no compiler, a module that did not
  build): every module runs from its ``.py``;
* in a git checkout (an editable install), any ``.py`` or ``.pxd`` of the set
  newer than its extension: every module runs from its ``.py``, with one
  warning naming the file and how to rebuild. (Installed from a wheel, file
  times say nothing: pip writes each file when it unpacks it.)

``COMPILED`` is the one list: ``setup.py`` reads it from this file (without
importing gshard, which is not built yet) and the runtime imports it. This
module imports only the standard library for the same reason.
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from importlib.util import spec_from_file_location

# Every request runs through these; the rest of gshard runs once per process.
COMPILED = ("protocol", "response", "wsgi", "exchange", "connection", "context")
PACKAGE = "gshard.http"
HERE = os.path.dirname(os.path.abspath(__file__))
REBUILD = "pip install -e . (or python setup.py build_ext --inplace)"


class StaleBuildWarning(RuntimeWarning):
    """The compiled modules are older than their sources: pure Python runs instead."""


def extension_path(module: str, directory: str = HERE) -> str | None:
    """The compiled extension of ``module`` in ``directory``, if one was built."""
    for suffix in EXTENSION_SUFFIXES:
        path = os.path.join(directory, module + suffix)
        if os.path.exists(path):
            return path
    return None


def sources(module: str, directory: str = HERE) -> list[str]:
    """The files a module's extension is built from: its ``.py`` and, if any, its ``.pxd``."""
    found = [os.path.join(directory, module + ".py")]
    declarations = os.path.join(directory, module + ".pxd")
    if os.path.exists(declarations):
        found.append(declarations)
    return found


def decide(directory: str = HERE, environ: dict[str, str] | None = None,
           checkout: bool | None = None) -> tuple[bool, str]:
    """(use the compiled set, why not): the one decision for every module of the set."""
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    if environ.get("GSHARD_PURE_PYTHON"):
        return False, "GSHARD_PURE_PYTHON is set"
    extensions = {module: extension_path(module, directory) for module in COMPILED}
    missing = [module for module, path in extensions.items() if path is None]
    if len(missing) == len(COMPILED):
        return False, "not compiled"
    if missing:
        return False, f"{', '.join(missing)} not compiled; rebuild: {REBUILD}"
    if checkout is None:
        checkout = os.path.exists(os.path.join(directory, os.pardir, os.pardir, ".git"))
    if checkout:
        for module, extension in extensions.items():
            built = os.path.getmtime(extension)  # type: ignore[arg-type]
            for source in sources(module, directory):
                if os.path.getmtime(source) > built:
                    shown = os.path.relpath(source, os.path.join(directory, os.pardir, os.pardir))
                    return False, f"{shown} is newer than its compiled module; rebuild: {REBUILD}"
    return True, ""


class _CompiledSet:
    """A meta-path finder that runs the whole set from source when it cannot be compiled."""

    decision: tuple[bool, str] | None = None

    @classmethod
    def use_compiled(cls) -> bool:
        if cls.decision is None:
            cls.decision = decide()
            compiled, why = cls.decision
            if not compiled and "rebuild" in why:
                warnings.warn(f"gshard runs its HTTP core as pure Python: {why}",
                              StaleBuildWarning, stacklevel=4)
        return cls.decision[0]

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None
                  ) -> ModuleSpec | None:
        package, _, module = name.rpartition(".")
        if package != PACKAGE or module not in COMPILED or cls.use_compiled():
            return None  # the regular finders (extensions first) take it
        return spec_from_file_location(name, os.path.join(HERE, module + ".py"))


def install() -> None:
    """Put the set's finder first, once (``gshard.http`` does it when first imported)."""
    if _CompiledSet not in sys.meta_path:
        sys.meta_path.insert(0, _CompiledSet)


def build() -> str:
    """Which build runs, for ``gshard --version`` and the benchmarks."""
    from importlib import import_module

    install()
    for module in COMPILED:
        import_module(f"{PACKAGE}.{module}")
    compiled, why = _CompiledSet.decision or (False, "not compiled")
    if compiled:
        return "compiled with Cython"
    return "pure Python" if why in ("not compiled", "GSHARD_PURE_PYTHON is set") \
        else f"pure Python: {why}"
