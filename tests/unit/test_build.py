"""Which build runs: the compiled set, or the same files as pure Python; never a mix.

CI runs the suite against the compiled build, then the protocol and
hostile-input tests again with ``GSHARD_PURE_PYTHON=1``; these tests check
that each run really uses the build it claims, that a stale or partial build
falls back as a whole, and that the two builds declare the same attributes.
(``tests/integration/test_compiled_set.py`` runs real processes on a copy.)
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import time
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from gshard.http import compiled
from tests.support.paths import REPO

PURE = bool(os.environ.get("GSHARD_PURE_PYTHON"))
HTTP = REPO / "gshard" / "http"


def test_the_modules_come_from_the_build_the_environment_asks_for():
    files = {name: importlib.import_module(f"gshard.http.{name}").__file__
             for name in compiled.COMPILED}
    from_source = [name for name, path in files.items() if path.endswith(".py")]
    assert from_source in ([], list(compiled.COMPILED)), f"a mixed build: {files}"
    if PURE:
        assert from_source and compiled.build() == "pure Python"
    elif not from_source:
        assert compiled.build() == "compiled with Cython"
    else:
        assert compiled.build().startswith("pure Python")


# --- the decision, on a directory of stand-in files ---------------------------------------


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A directory holding the set's sources and an 'extension' for each, built after them."""
    past = time.time() - 100
    for module in compiled.COMPILED:
        for source in (f"{module}.py", f"{module}.pxd"):
            (tmp_path / source).write_text("# source\n")
            os.utime(tmp_path / source, (past, past))
        (tmp_path / (module + EXTENSION_SUFFIXES[0])).write_bytes(b"")
    return tmp_path


def test_a_current_set_is_used_compiled(built):
    assert compiled.decide(built, {}, checkout=True) == (True, "")


@pytest.mark.parametrize("edited", ["exchange.py", "protocol.pxd"])
def test_one_source_newer_than_its_extension_sends_the_whole_set_to_pure_python(built, edited):
    (built / edited).write_text("# edited after the build\n")
    future = time.time() + 10
    os.utime(built / edited, (future, future))
    use, why = compiled.decide(built, {}, checkout=True)
    assert use is False
    assert edited in why and "rebuild: pip install -e ." in why


def test_installed_from_a_wheel_file_times_are_not_compared(built):
    future = time.time() + 10
    os.utime(built / "protocol.py", (future, future))
    assert compiled.decide(built, {}, checkout=False) == (True, "")


def test_a_module_that_did_not_build_sends_the_whole_set_to_pure_python(built):
    (built / ("wsgi" + EXTENSION_SUFFIXES[0])).unlink()
    use, why = compiled.decide(built, {}, checkout=True)
    assert use is False and why.startswith("wsgi not compiled")


def test_no_extension_at_all_is_a_pure_install_and_says_nothing_more(tmp_path):
    assert compiled.decide(tmp_path, {}, checkout=True) == (False, "not compiled")


def test_the_environment_asks_for_pure_python(built):
    assert compiled.decide(built, {"GSHARD_PURE_PYTHON": "1"}, checkout=True)[0] is False


# --- the two builds declare the same attributes -------------------------------------------


def _pxd_classes(text: str) -> dict[str, set[str]]:
    classes: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"cdef class (\w+)", line)
        if header:
            current = classes.setdefault(header.group(1), set())
            continue
        attribute = re.match(r"\s+cdef public \w+ (\w+)\s*(#.*)?$", line)
        if attribute and current is not None:
            current.add(attribute.group(1))
    return classes


def _slots(source: str) -> dict[str, set[str] | None]:
    """Each class of a module, with its ``__slots__`` (None where it has none)."""
    found: dict[str, set[str] | None] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            found[node.name] = None
            for statement in node.body:
                if (isinstance(statement, ast.Assign)
                        and any(getattr(t, "id", None) == "__slots__" for t in statement.targets)):
                    found[node.name] = set(ast.literal_eval(statement.value))
    return found


@pytest.mark.parametrize("module", [m for m in compiled.COMPILED
                                    if (HTTP / f"{m}.pxd").exists()])
def test_each_compiled_class_declares_its_slots_and_its_pxd_attributes_alike(module):
    declared = _pxd_classes((HTTP / f"{module}.pxd").read_text())
    slots = _slots((HTTP / f"{module}.py").read_text())
    assert declared, f"{module}.pxd declares no class"
    for name, attributes in declared.items():
        assert name in slots, f"{module}.pxd declares {name}, which {module}.py lacks"
        assert slots[name] is not None, f"{module}.{name} has no __slots__"
        assert slots[name] == attributes, (
            f"{module}.{name}: only in __slots__ {sorted(slots[name] - attributes)}, "
            f"only in the .pxd {sorted(attributes - slots[name])}")


def test_the_slot_check_sees_a_difference():
    pxd = "cdef class A:\n    cdef public object x\n    cdef public bint y  # flag\n"
    assert _pxd_classes(pxd) == {"A": {"x", "y"}}
    assert _slots("class A:\n    __slots__ = ('x',)\n") == {"A": {"x"}}
