"""Build hook: compile gshard's per-request modules with Cython where a C compiler exists.

Metadata, dependencies and the console script live in pyproject.toml; this
file only adds the optional extension modules. The compiled modules are the
same ``.py`` files (one source of truth for every rule), and a build that
cannot compile them (no compiler, no Cython, ``GSHARD_PURE_PYTHON=1``)
installs the pure-Python package instead of failing.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The modules every request runs through (gshard.COMPILABLE); the rest runs
# once per process. (setup.py cannot import gshard before it is built.)
HOT_PATH = ("protocol", "response", "exchange", "wsgi", "connection", "context")


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
            self.warn(f"gshard: {ext.name} not compiled ({exc}); its .py is used")


def extensions() -> list:
    if os.environ.get("GSHARD_PURE_PYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    modules = [Extension(f"gshard.{name}", [f"gshard/{name}.py"]) for name in HOT_PATH]
    # annotation_typing off: annotations stay documentation, so a compiled
    # module refuses a wrong type exactly as the Python one does.
    return cythonize(modules, build_dir="build/cython", quiet=True,
                     compiler_directives={"language_level": "3", "annotation_typing": False})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
