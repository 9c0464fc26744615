"""The command line, config files and ``$GUNICORN_CMD_ARGS``, layered into one ``Config``.

The flags are built from the settings table (``config.py``), so every
setting has the same name, check and help on the command line, in a config
file and in the environment. Everything wrong with them is a ``ConfigError``
naming the setting, raised before any socket is bound or process forked.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import runpy
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from gshard import log
from gshard.cli import ctl
from gshard.config import Config, config_names, settings
from gshard.errors import ConfigError
from gshard.gunicorn_compat import GUNICORN_ONLY
from gshard.http.compiled import build
from gshard.version import __version__

# Commands that talk to a running gshard instead of starting one.
SUBCOMMANDS = ("status", "top", "health", *ctl.COMMANDS)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Report a bad command line as ``ConfigError``, so ``main`` prints one line and returns 2.

        (argparse's own ``error`` prints the usage too and exits the process.)
        """
        raise ConfigError(f"{message} (see gshard --help)")


class _Version(argparse.Action):
    """``--version``, saying whether the compiled modules run (imported only when asked)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        print(f"gshard {__version__} ({build()}; Python {platform.python_version()})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gshard",
        description="A sharded gevent WSGI server: one SO_REUSEPORT listener per shard.",
        argument_default=argparse.SUPPRESS,
        epilog=f"To watch or steer a running gshard: gshard {{{','.join(SUBCOMMANDS)}}} "
               "(the one this user runs; --pid, --bind or --control-socket to name one; "
               "gshard COMMAND --help for each).",
    )
    parser.add_argument("app", nargs="?", metavar="APP",
                        help="The WSGI application: MODULE:ATTR or MODULE:FACTORY(ARGS).")
    parser.add_argument("-v", "--version", action=_Version, nargs=0,
                        help="Show gshard's version and build (compiled or pure Python).")
    for spec in settings():
        flags = spec.metadata["flags"]
        if not flags:
            continue
        bare, switch = spec.metadata["bare"], spec.metadata["switch"]
        if switch is not None:
            parser.add_argument(*flags, dest=spec.name, action="store_const", const=switch,
                                help=spec.metadata["help"])
            continue
        parser.add_argument(
            *flags,
            dest=spec.name,
            metavar=spec.metadata["metavar"],
            action="append" if spec.metadata["append"] else "store",
            help=spec.metadata["help"],
            **({"nargs": "?", "const": bare} if bare is not None else {}),
        )
    gunicorn = parser.add_argument_group(
        "gunicorn settings gshard ignores (with a warning) or refuses (saying why)")
    for entry in GUNICORN_ONLY:
        if not entry.flags:
            continue
        shape: dict[str, Any] = (
            {"action": "store_const", "const": True} if entry.takes == "switch"
            else {"action": "append" if entry.takes == "append" else "store",
                  "metavar": "VALUE"})
        gunicorn.add_argument(*entry.flags, dest=entry.name,
                              help=f"{entry.compat.kind}: {entry.compat.note}", **shape)
    return parser


# Config files found without -c, in the directory gshard starts in; gunicorn's last.
DEFAULT_CONFIG_FILES = ("gshard.conf.py", "gunicorn.conf.py")
# Variables parsed like command lines, in rising precedence (all below the real one).
ARGS_VARIABLES = ("GUNICORN_CMD_ARGS", "GSHARD_CMD_ARGS")


def load_config_file(path: str) -> dict[str, Any]:
    """Settings from a config file, or a module named ``python:MODULE``, as gunicorn reads them.

    Every gunicorn setting is known (gshard's own or one gshard judges); other
    names are the file's own helpers and are reported once, then ignored.
    """
    try:
        if path.startswith("python:"):
            sys.path.insert(0, os.getcwd())  # as gunicorn's chdir puts it there
            namespace = vars(importlib.import_module(path[len("python:"):]))
        else:
            namespace = runpy.run_path(path)
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {path!r}") from None
    except Exception as exc:
        raise ConfigError(f"--config: {path!r} failed: {exc!r}") from None
    names = {**config_names(), **{entry.name: entry.name for entry in GUNICORN_ONLY}}
    values = {}
    for key, value in namespace.items():
        if key.startswith("_") or not key.islower() or type(value).__name__ == "module":
            continue
        if key in names:
            values[names[key]] = value
        elif not callable(value):
            log.error_log.warning("Ignoring setting %r from %s: gshard has no such setting",
                                  key, path)
    return values


def parse_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """The validated ``Config`` for a command line; raises ``ConfigError``.

    Precedence as gunicorn's: defaults (some read from the environment, as
    gunicorn does) < the config file < $GUNICORN_CMD_ARGS < $GSHARD_CMD_ARGS
    < the command line.
    """
    environ = os.environ if environ is None else environ
    parser = build_parser()
    layers = []
    for name in ARGS_VARIABLES:
        if environ.get(name):
            try:
                layers.append(vars(parser.parse_args(shlex.split(environ[name]))))
            except (ConfigError, ValueError) as exc:  # ValueError: shlex, unbalanced quotes
                raise ConfigError(f"${name}: {exc}") from None
    layers.append(vars(parser.parse_args(argv)))
    config_path = next((layer["config"] for layer in reversed(layers) if "config" in layer),
                       None) or next(
        (name for name in DEFAULT_CONFIG_FILES if os.path.isfile(name)), None)
    values: dict[str, Any] = load_config_file(config_path) if config_path else {}
    for layer in layers:
        values.update(layer)
    values["config"] = config_path
    for name, default in _environment_defaults({**environ, **_raw_env(values)}).items():
        values.setdefault(name, default)
    return Config.from_values(values)


def _environment_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """Defaults gunicorn takes from the environment (and, for SCRIPT_NAME, from raw_env)."""
    defaults: dict[str, Any] = {}
    if environ.get("PORT"):
        defaults["bind"] = [f"0.0.0.0:{environ['PORT']}"]  # as gunicorn does on PaaS
    for variable, name in (("FORWARDED_ALLOW_IPS", "forwarded_allow_ips"),
                           ("WEB_CONCURRENCY", "shards"), ("SENDFILE", "sendfile"),
                           ("SCRIPT_NAME", "script_name")):
        if variable in environ:
            defaults[name] = environ[variable]
    return defaults


def _raw_env(values: Mapping[str, Any]) -> dict[str, str]:
    entries = values.get("raw_env", ())
    entries = [entries] if isinstance(entries, str) else entries
    return dict(str(entry).partition("=")[::2] for entry in entries)
