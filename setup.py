"""Build hook: compile gshard's per-request modules with Cython where a C compiler exists.

Metadata, dependencies and the console script live in pyproject.toml; this
file only adds the optional extension modules. The compiled modules are the
same ``.py`` files (one source of truth for every rule), and a build that
cannot compile them (no compiler, no Cython, ``GSHARD_PURE_PYTHON=1``)
installs the pure-Python package instead of failing. Which modules are
compiled is ``gshard/http/compiled.py``'s ``COMPILED``, the list the runtime
reads too: the set is used whole or not at all.
"""

import os
import runpy

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Read without importing gshard, which is not built yet (compiled.py imports
# only the standard library).
COMPILED = runpy.run_path(os.path.join("gshard", "http", "compiled.py"))["COMPILED"]


class OptionalBuildExt(build_ext):
    """Build what compiles; warn and fall back to pure Python for what does not."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            self.warn(f"gshard: compiled modules skipped ({exc}); pure Python is used")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self.warn(f"gshard: {ext.name} not compiled ({exc}); the whole set runs as "
                      "pure Python")


def extensions() -> list:
    if os.environ.get("GSHARD_PURE_PYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    modules = [Extension(f"gshard.http.{name}", [f"gshard/http/{name}.py"]) for name in COMPILED]
    # annotation_typing off: annotations stay documentation, so a compiled
    # module refuses a wrong type exactly as the Python one does.
    return cythonize(modules, build_dir="build/cython", quiet=True,
                     compiler_directives={"language_level": "3", "annotation_typing": False})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
