"""Resolving the APP argument, with throwaway modules written to tmp_path."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid

import pytest

from gshard.errors import AppLoadError
from gshard.shard.loader import load_app


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write modules under tmp_path with unique names; forget them afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))

    def write(source: str, package: str | None = None) -> str:
        name = f"gshard_test_{uuid.uuid4().hex[:12]}"
        folder = tmp_path
        if package:
            folder = tmp_path / package
            folder.mkdir(exist_ok=True)
            (folder / "__init__.py").touch()
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return f"{package}.{name}" if package else name

    write.directory = str(tmp_path)
    yield write
    for key in list(sys.modules):
        if key.startswith(("gshard_test_", "gshard_pkg_")):
            del sys.modules[key]


APP_SOURCE = """
    def app(environ, start_response):
        return []

    def application(environ, start_response):
        return []

    def create_app(name="default", *, debug=False):
        def inner(environ, start_response):
            return []
        inner.settings = (name, debug)
        return inner

    not_callable = 42

    def returns_none():
        return None
"""


def test_module_attr(modules):
    name = modules(APP_SOURCE)
    app = load_app(f"{name}:app", modules.directory)
    assert app is sys.modules[name].app


def test_default_attribute_is_application(modules):
    name = modules(APP_SOURCE)
    assert load_app(name, modules.directory) is sys.modules[name].application


def test_directory_goes_first_on_sys_path(modules):
    name = modules(APP_SOURCE)
    load_app(f"{name}:app", modules.directory)
    assert sys.path[0] == modules.directory


@pytest.mark.parametrize(
    ("call", "settings"),
    [
        ("create_app()", ("default", False)),
        ("create_app('prod')", ("prod", False)),
        ("create_app(name='x', debug=True)", ("x", True)),
        ("create_app(('a', 1), debug=None)", (("a", 1), None)),
    ],
)
def test_factory_with_literal_arguments(modules, call, settings):
    name = modules(APP_SOURCE)
    app = load_app(f"{name}:{call}", modules.directory)
    assert app.settings == settings


def test_dotted_module(modules):
    name = modules(APP_SOURCE, package=f"gshard_pkg_{uuid.uuid4().hex[:8]}")
    app = load_app(f"{name}:app", modules.directory)
    assert app is sys.modules[name].app


def test_missing_module(modules):
    with pytest.raises(AppLoadError, match="no module named"):
        load_app(f"gshard_missing_{uuid.uuid4().hex}:app", modules.directory)


def test_missing_submodule(modules):
    name = modules(APP_SOURCE, package=f"gshard_pkg_{uuid.uuid4().hex[:8]}")
    package = name.partition(".")[0]
    with pytest.raises(AppLoadError, match="no module named"):
        load_app(f"{package}.nope:app", modules.directory)
    with pytest.raises(AppLoadError, match="no module named"):
        load_app(f"gshard_missing_{uuid.uuid4().hex}.sub:app", modules.directory)


@pytest.mark.parametrize("attr", ["missing", "missing()"])
def test_missing_attribute(modules, attr):
    name = modules(APP_SOURCE)
    with pytest.raises(AppLoadError, match="failed to find attribute"):
        load_app(f"{name}:{attr}", modules.directory)


def test_missing_default_application(modules):
    name = modules("app = None\n")
    with pytest.raises(AppLoadError, match="'application'"):
        load_app(name, modules.directory)


@pytest.mark.parametrize("attr", ["not_callable", "returns_none()"])
def test_not_callable(modules, attr):
    name = modules(APP_SOURCE)
    with pytest.raises(AppLoadError, match="not callable"):
        load_app(f"{name}:{attr}", modules.directory)


@pytest.mark.parametrize(
    "expr",
    [
        "app.attr",  # only a name or a call of a name
        "create_app(os.getcwd())",  # arguments must be literals
        "create_app(**{'debug': True})",
        "create_app({[1]: 2})",  # literal syntax, but no value (unhashable key)
        "1 +",
        "lambda: app",
    ],
)
def test_refused_specs(modules, expr):
    name = modules(APP_SOURCE)
    with pytest.raises(AppLoadError):
        load_app(f"{name}:{expr}", modules.directory)


def test_spec_without_module(modules):
    with pytest.raises(AppLoadError, match="names no module"):
        load_app(":app", modules.directory)


def test_import_error_propagates_unchanged(modules):
    name = modules("raise RuntimeError('broken at import')\n")
    with pytest.raises(RuntimeError, match="broken at import"):
        load_app(f"{name}:app", modules.directory)


def test_missing_dependency_propagates(modules):
    # The app exists; a module *it* imports does not: that is the app's error.
    dependency = f"gshard_missing_dep_{uuid.uuid4().hex}"
    name = modules(f"import {dependency}\n")
    with pytest.raises(ModuleNotFoundError) as info:
        load_app(f"{name}:app", modules.directory)
    assert info.value.name == dependency


def test_syntax_error_propagates(modules):
    name = modules("def app(:\n")
    with pytest.raises(SyntaxError):
        load_app(f"{name}:app", modules.directory)


def test_factory_exception_propagates(modules):
    name = modules("def create():\n    raise KeyError('from the factory')\n")
    with pytest.raises(KeyError, match="from the factory"):
        load_app(f"{name}:create()", modules.directory)
