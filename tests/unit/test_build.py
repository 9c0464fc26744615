"""Which build runs: compiled modules, or the same files as pure Python.

CI runs the protocol and hostile-input tests twice, the second time with
``GSHARD_PURE_PYTHON=1``; these tests check that each run really uses the
build it claims, and that ``gshard --version`` says which.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import gshard

PURE = bool(os.environ.get("GSHARD_PURE_PYTHON"))


def test_the_modules_come_from_the_build_the_environment_asks_for():
    files = {name: importlib.import_module(f"gshard.{name}").__file__
             for name in gshard.COMPILABLE}
    if PURE:
        assert all(path.endswith(".py") for path in files.values()), files
        assert gshard.build() == "pure Python"
    else:
        compiled = [name for name, path in files.items() if path.endswith(".so")]
        assert gshard.build() == ("pure Python" if not compiled else
                                  "compiled with Cython" if len(compiled) == len(files) else
                                  f"partly compiled with Cython: {', '.join(compiled)}")


def test_version_names_the_build():
    out = subprocess.run([sys.executable, "-m", "gshard", "--version"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert out.startswith(f"gshard {gshard.__version__} ({gshard.build()}; Python ")


def test_pure_python_can_be_asked_for_in_a_compiled_install():
    env = {**os.environ, "GSHARD_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-m", "gshard", "--version"], capture_output=True,
                         text=True, timeout=30, check=True, env=env).stdout
    assert "(pure Python; Python " in out
