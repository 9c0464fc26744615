"""The command line, config files and ``$GUNICORN_CMD_ARGS``, layered into one ``Config``.

The flags are built from the settings table (``config.py``), so every
setting has the same name, check and help on the command line, in a config
file and in the environment. Everything wrong with them is a ``ConfigError``
naming the setting, raised before any socket is bound or process forked.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import platform
import shlex
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from gshard.cli import ctl
from gshard.config import Config, config_names, grouped_settings, settings
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
        usage=f"%(prog)s [OPTIONS] APP\n       %(prog)s {{{','.join(SUBCOMMANDS)}}} [OPTIONS]",
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
    for title, specs in grouped_settings():
        group = parser.add_argument_group(title)
        for spec in specs:
            _add_setting(group, spec)
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


def _add_setting(group: argparse._ArgumentGroup, spec: dataclasses.Field) -> None:
    """The flags of one setting, if it has any (hooks and dicts are config files' only)."""
    flags = spec.metadata["flags"]
    if not flags:
        return
    bare, switch = spec.metadata["bare"], spec.metadata["switch"]
    if switch is not None:
        group.add_argument(*flags, dest=spec.name, action="store_const", const=switch,
                           help=spec.metadata["help"])
        return
    group.add_argument(
        *flags,
        dest=spec.name,
        metavar=spec.metadata["metavar"],
        action="append" if spec.metadata["append"] else "store",
        help=spec.metadata["help"],
        **({"nargs": "?", "const": bare} if bare is not None else {}),
    )


# Config files found without -c, in the directory gshard starts in; gunicorn's last.
DEFAULT_CONFIG_FILES = ("gshard.conf.py", "gunicorn.conf.py")
# Variables parsed like command lines, in rising precedence (all below the real one).
ARGS_VARIABLES = ("GUNICORN_CMD_ARGS", "GSHARD_CMD_ARGS")


@dataclass(frozen=True)
class ConfigFile:
    """What a config file gave: its settings, and its names that look like misspelt ones."""

    values: dict[str, Any]
    misspelt: tuple[tuple[str, str], ...] = ()


def load_config_file(path: str) -> ConfigFile:
    """Settings from a config file, or a module named ``python:MODULE``, as gunicorn reads them.

    As gunicorn does, the directory gshard starts in goes first on ``sys.path``
    before the file runs, so the file imports modules beside it, and a file is
    run as the module ``__config__`` (so a logging config can name a class the
    file defines, ``__config__.JsonFormatter``, and its dataclasses work). A
    file is compiled from its source each time, never from a cached ``.pyc``:
    a reload must see an edit made within the same second. Every gunicorn
    setting is known (gshard's own or one gshard judges); any other name is the
    file's own (imports, helpers) and is ignored without a word, unless it
    looks like a misspelt setting.
    """
    start_directory = os.getcwd()
    if start_directory not in sys.path:
        sys.path.insert(0, start_directory)
    try:
        if path.startswith("python:"):
            namespace = vars(_import_fresh(path[len("python:"):]))
        else:
            namespace = _run_file(path)
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {path!r}") from None
    except (Exception, SystemExit) as exc:  # a file that exits must not end a manager
        raise ConfigError(f"--config: {path!r} failed: {exc!r}") from None
    names = {**config_names(), **{entry.name: entry.name for entry in GUNICORN_ONLY}}
    values = {}
    own = []
    for key, value in namespace.items():
        if key.startswith("_") or not key.islower() or isinstance(value, types.ModuleType):
            continue
        if key in names:
            values[names[key]] = value
        else:
            own.append(key)
    given = {names[key] for key in namespace if key in names}
    # A helper beside the setting it resembles (log_level, then loglevel = log_level)
    # is the file's own.
    misspelt = tuple((key, meant) for key in own
                     if (meant := _meant_setting(key)) is not None
                     and names.get(meant, meant) not in given)
    return ConfigFile(values, misspelt)


def _run_file(path: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        source = handle.read()
    module = types.ModuleType("__config__")
    module.__file__ = os.path.abspath(path)
    code = compile(source, path, "exec", dont_inherit=True)
    sys.modules["__config__"] = module
    exec(code, module.__dict__)
    return vars(module)


def _import_fresh(name: str) -> types.ModuleType:
    """The module ``name``, imported again if it was (a reload reads it anew)."""
    module = sys.modules.get(name)
    return importlib.import_module(name) if module is None else importlib.reload(module)


# Settings by the names their flags suggest (--log-level: log_level, --preload:
# preload), which gunicorn's config files do not accept either; "env" and
# "name" are left out, being the names a file most often gives its own values.
def _flag_names() -> dict[str, str]:
    names = {}
    for spec in settings():
        meant = (spec.metadata["aliases"] or (spec.name,))[0]  # as gunicorn names it
        for flag in spec.metadata["flags"]:
            if flag.startswith("--"):
                names[flag[2:].replace("-", "_")] = meant
    return {name: meant for name, meant in names.items()
            if name != meant and name not in ("env", "name")}


def _meant_setting(name: str) -> str | None:
    """The setting a config file's own ``name`` probably misspells, or None for a name
    of its own (``cores``, ``timeout_str``, ``use_bind``).

    Close means the spelling of one of its flags, or one typing slip from a
    setting's name (a letter missing, extra, wrong or two swapped), two for
    names of 12 letters or more; underscores left out or added are no slip
    (``acceslogformat`` is ``access_log_format`` with one).
    """
    flagged = _flag_names().get(name)
    if flagged is not None:
        return flagged
    allowed = 2 if len(name) >= 12 else 1
    bare = name.replace("_", "")
    candidates = [*config_names(), *(entry.name for entry in GUNICORN_ONLY)]
    scored = sorted((_slips(bare, candidate.replace("_", "")), candidate)
                    for candidate in candidates
                    if abs(len(candidate.replace("_", "")) - len(bare)) <= allowed)
    if scored and scored[0][0] <= allowed:
        return scored[0][1]
    return None


def _slips(a: str, b: str) -> int:
    """Typing slips between ``a`` and ``b``: letters inserted, deleted, replaced or
    two neighbours swapped (optimal string alignment distance)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y))
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]


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
    read = load_config_file(config_path) if config_path else ConfigFile({})
    values = dict(read.values)
    for layer in layers:
        values.update(layer)
    values["config"] = config_path
    for name, (variable, raw, default) in _environment_defaults(
            {**environ, **_raw_env(values)}).items():
        if name not in values:
            _check_environment_default(variable, raw, name, default)
            values[name] = default
    return Config.from_values(values, read.misspelt)


def settings_config(app: str, settings: Mapping[str, Any]) -> Config:
    """The ``Config`` of ``gshard.run(app, **settings)``: those settings over a config file's,
    if ``config`` names one; ConfigError if any is wrong."""
    read = load_config_file(settings["config"]) if settings.get("config") else ConfigFile({})
    return Config.from_values({**read.values, **settings, "app": app}, read.misspelt)


# Variables gunicorn takes a setting's default from, as gunicorn names them.
ENVIRONMENT_DEFAULTS = {"FORWARDED_ALLOW_IPS": "forwarded_allow_ips",
                        "WEB_CONCURRENCY": "shards", "SENDFILE": "sendfile",
                        "SCRIPT_NAME": "script_name"}


def _environment_defaults(environ: Mapping[str, str]) -> dict[str, tuple[str, str, Any]]:
    """Defaults gunicorn takes from the environment (and, for SCRIPT_NAME, from raw_env):
    setting name -> (the variable it came from, the variable's text, the setting's value)."""
    defaults: dict[str, tuple[str, str, Any]] = {}
    if environ.get("PORT"):  # as gunicorn does on PaaS
        defaults["bind"] = ("PORT", environ["PORT"], [f"0.0.0.0:{environ['PORT']}"])
    for variable, name in ENVIRONMENT_DEFAULTS.items():
        if variable in environ:
            defaults[name] = (variable, environ[variable], environ[variable])
    return defaults


def _check_environment_default(variable: str, raw: str, name: str, value: Any) -> None:
    """Refuse a wrong value under the variable's name: a user who never wrote
    ``--shards`` would not look for ``WEB_CONCURRENCY=zz`` behind a message naming it."""
    spec = next(spec for spec in settings() if spec.name == name)
    try:
        spec.metadata["convert"](value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"${variable}: {exc} (got {raw!r})") from None


def _raw_env(values: Mapping[str, Any]) -> dict[str, str]:
    entries = values.get("raw_env", ())
    entries = [entries] if isinstance(entries, str) else entries
    return dict(str(entry).partition("=")[::2] for entry in entries)
