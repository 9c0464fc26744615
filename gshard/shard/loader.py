"""Import the WSGI application named on the command line, as gunicorn resolves it.

``module:attr``, ``module:factory(args)`` (literal arguments only) or just
``module`` (its ``application``), imported from the working directory.
Runs in each shard after monkey-patching; the manager never imports the app,
so every new shard sees the code on disk now.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable

from gshard.errors import AppLoadError


def _call_arguments(call: ast.Call) -> tuple[list, dict]:
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    except (ValueError, TypeError):  # TypeError: e.g. an unhashable key, {[1]: 2}
        raise AppLoadError("factory arguments must be Python literals") from None
    if any(k.arg is None for k in call.keywords):
        raise AppLoadError("factory arguments cannot use **")
    return args, kwargs


def _parse(spec: str) -> tuple[str, str, tuple[list, dict] | None]:
    """(module, attribute, factory arguments or None) of an APP spec."""
    module, _, expr = spec.partition(":")
    expr = expr or "application"
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"cannot parse {expr!r} as an attribute or a call") from None
    if isinstance(node, ast.Name):
        return module, node.id, None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return module, node.func.id, _call_arguments(node)
    raise AppLoadError(f"{expr!r} must be a name or a call of a name, e.g. app or create_app()")


def load_app(spec: str, directory: str) -> Callable:
    """The WSGI callable for ``spec``, with ``directory`` first on sys.path.

    Raises AppLoadError for a spec that names nothing callable; an exception
    raised while importing the module propagates with its own traceback.
    """
    module_name, attr, call = _parse(spec)
    if not module_name:
        raise AppLoadError(f"{spec!r} names no module (expected MODULE:ATTR)")
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.split(".")[0] and exc.name != module_name:
            raise
        raise AppLoadError(f"no module named {module_name!r} (looked in {directory})") from None
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise AppLoadError(f"failed to find attribute {attr!r} in {module_name!r}") from None
    if call is not None:
        args, kwargs = call
        app = app(*args, **kwargs)
    if not callable(app):
        raise AppLoadError(f"{spec!r} is not callable (it is {type(app).__name__})")
    return app
