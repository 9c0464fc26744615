"""MkDocs hooks: the pages' reference parts, generated from gshard's code at every build.

A page asks for a part with a marker on a line of its own, ``<!-- gshard:NAME -->``
(indented as the part must be);
the build fails on a marker it does not know, so a reference can be renamed
but never silently left out. What is generated:

* ``help``: ``gshard --help``, as the command prints it;
* ``settings``: every setting of ``config.Config``, grouped as ``config.GROUPS``
  groups them, with its flags, config-file names, environment, type,
  default, relation to gunicorn's and help;
* ``gunicorn-table``: what each of gunicorn's settings gets in gshard;
* ``metrics``: every metric family ``/metrics`` serves, from the collector itself;
* ``layout``: the folders and the import arrows between them, drawn as SVG from
  the import graph (grimp, import-linter's engine) and ``setup.cfg``'s floors;
* ``status``, ``top``, ``status-json``: a status document recorded from a real
  server (``docs/samples.py``), printed by the code ``gshard status`` and
  ``gshard top`` print with.
* ``results``, ``scaling-results``: the committed benchmark results
  (``benchmarks/results/``), their headings turned into bold lines, so that
  the tables sit inside a collapsed block without filling the page's table
  of contents.

The benchmark chart is added to the site from ``benchmarks/results``, where
the benchmark run writes it.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import html
import io
import os
import re
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^(?P<indent>[ ]*)<!-- gshard:(?P<name>[a-z-]+) -->$", re.M)


# --- what the markers become -------------------------------------------------------------


def cli_help() -> str:
    """``gshard --help`` at a fixed width, so the page does not depend on the build's terminal."""
    from gshard.cli.arguments import build_parser

    os.environ["COLUMNS"] = "100"
    out = io.StringIO()
    with redirect_stdout(out):
        build_parser().print_help()
    return f"```text\n{out.getvalue().rstrip()}\n```"


_KINDS = {"same": "same as gunicorn", "gshard": "gshard's own (gunicorn has none)"}


def settings_reference() -> str:
    from gshard.cli.arguments import ARGS_VARIABLES, ENVIRONMENT_DEFAULTS
    from gshard.config import grouped_settings

    variables = {name: variable for variable, name in ENVIRONMENT_DEFAULTS.items()}
    parts = []
    for title, specs in grouped_settings():
        parts.append(f"## {title}\n")
        for spec in specs:
            meta = spec.metadata
            names = [spec.name, *meta["aliases"]]
            rows = [
                ("flags", ", ".join(f"`{flag}`" for flag in meta["flags"])
                 or "none: config files and `gshard.run()` only"),
                ("config file", ", ".join(f"`{name}`" for name in names)),
                ("environment", _environment(spec, variables, ARGS_VARIABLES)),
                ("type", _type(spec)),
                ("default", _default(spec)),
                ("gunicorn", _relation(meta["compat"])),
            ]
            terms = "\n".join(f"- **{key}**: {value}" for key, value in rows)
            parts.append(f"### `{spec.name}`\n\n{_escape(meta['help'])}\n\n{terms}\n")
    return "\n".join(parts)


def _environment(spec: dataclasses.Field, variables: dict[str, str],
                 args_variables: tuple[str, ...]) -> str:
    found = []
    if spec.name in variables:
        found.append(f"`${variables[spec.name]}` (the default)")
    if spec.name == "bind":
        found.append("`$PORT` (the default becomes `0.0.0.0:$PORT`)")
    if spec.metadata["flags"]:
        flag = next(f for f in spec.metadata["flags"] if f.startswith("--"))
        found.append(" or ".join(f"`${name}`" for name in args_variables)
                     + f", as on the command line (`{flag}`)")
    return "; ".join(found) or "none"


def _type(spec: dataclasses.Field) -> str:
    text = str(spec.type)
    optional = "| None" in text
    meta = spec.metadata
    if meta["switch"] is not None or text.startswith("bool"):
        kind = "switch (true or false)"
    elif text.startswith("Callable"):
        kind = "function"
    elif text.startswith("dict"):
        kind = "dict"
    elif text.startswith("tuple"):
        kind = "list" + (" (repeat the flag)" if meta["append"] else "")
    elif text.startswith("BindAddress"):
        kind = "address (`HOST:PORT`)"
    elif text.startswith("float"):
        kind = "seconds" if meta["metavar"] == "SECONDS" else "number"
    elif text.startswith("int"):
        kind = "integer"
    else:
        kind = "text"
    return f"{kind}, or unset" if optional else kind


def _default(spec: dataclasses.Field) -> str:
    from gshard.config import default_of

    if spec.name == "shards":  # computed on the machine that starts gshard
        return "one per CPU"
    value = default_of(spec)
    if value is None or value == () or value == {}:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, tuple):
        value = ", ".join(str(item) if not isinstance(item, tuple) else ": ".join(item)
                          for item in value)
    return f"`{value}`"


def _relation(compat: Any) -> str:
    if compat.kind in _KINDS and not compat.note:
        return _KINDS[compat.kind]
    return f"{compat.kind}: {_escape(compat.note)}" if compat.note else compat.kind


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def gunicorn_table() -> str:
    from gshard.config import settings
    from gshard.gunicorn_compat import migration_table

    return migration_table(settings())


def metrics_reference() -> str:
    """Every family the collector yields, read from the collector over an empty server."""
    from gshard.manager.fsm import ManagerFSM
    from gshard.manager.observe.prometheus import GshardCollector
    from gshard.manager.observe.registry import Registry
    from gshard.manager.observe.status import ManagerInfo, View

    info = ManagerInfo(pid=0, started=0.0, started_wall=0.0, app="app:app", urls=())
    view = View(info, ManagerFSM(slots=1).view(), Registry(), {}, 0.0, 0.0)
    rows = ["| metric | type | labels | what |", "| --- | --- | --- | --- |"]
    for family in GshardCollector(lambda: view).collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = ", ".join(f"`{label}`" for label in getattr(family, "_labelnames", ()))
        rows.append(f"| `{name}` | {family.type} | {labels} | {_escape(family.documentation)} |")
    return "\n".join(rows)


def layout_diagram() -> str:
    """The folders of setup.cfg's floors, and an arrow for each folder that imports another.

    The top-level modules are drawn as one box, the floor every folder stands
    on. An arrow from the manager to the shard folder would break the rule
    that it enters only through two modules: it is drawn dashed, named.
    """
    import grimp

    folders, top = _floors()
    graph = grimp.build_graph("gshard")
    edges: set[tuple[str, str]] = set()
    for importer in graph.modules:
        source = _folder(importer, folders, top)
        for imported in graph.find_modules_directly_imported_by(importer):
            target = _folder(imported, folders, top)
            if source and target and source != target:
                edges.add((source, target))
    return _svg(folders, edges)


def _floors() -> tuple[list[list[str]], set[str]]:
    """(the floors of folders, top to bottom; the names of the top-level modules)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    floors = [[part.strip() for part in re.split(r"[|:]", line) if part.strip()]
              for line in config["importlinter:contract:floors"]["layers"].split("\n")]
    folders = [floor for floor in floors
               if floor and all((ROOT / "gshard" / name).is_dir() for name in floor)]
    top = {name for floor in floors for name in floor} - {n for f in folders for n in f}
    return folders, top - {"__main__"}


def _folder(module: str, folders: list[list[str]], top: set[str]) -> str | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "gshard":
        return None
    if parts[1] in top:
        return "top"
    return parts[1] if any(parts[1] in floor for floor in folders) else None


def _svg(folders: list[list[str]], edges: set[tuple[str, str]]) -> str:
    """One row per floor, each box further right than the floor above (so a line down to
    the top-level box crosses no other box), the top-level modules as one wide box."""
    row, box_w, box_h = 80, 120, 34
    positions: dict[str, float] = {}
    x = 90.0
    for floor in folders:
        for name in floor:
            positions[name] = x
            x += 150
    width = x - 150 + 90
    levels = {name: level for level, floor in enumerate(folders) for name in floor}
    bottom = 30 + len(folders) * row
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} '
             f'{bottom + 40}" role="img" aria-label="gshard\'s folders and their imports">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
             'fill="#666"/></marker></defs>']
    # Arrows to a lower folder leave the source's right side and turn down into the
    # target, each arriving at its own point of the target's top edge.
    arrivals: dict[str, list[str]] = {}
    for source, target in sorted(edges, key=lambda edge: positions[edge[0]]):
        if target != "top":
            arrivals.setdefault(target, []).append(source)
    leaving: dict[str, int] = {}
    for source, target in sorted(edges, key=lambda edge: (edge[0], -positions.get(edge[1], 0))):
        y = 30 + levels[source] * row
        if target == "top":
            points = [(positions[source], y + box_h / 2), (positions[source], bottom - box_h / 2)]
        else:
            index = leaving[source] = leaving.get(source, -1) + 1
            sources = arrivals[target]
            x2 = positions[target] + (sources.index(source) - (len(sources) - 1) / 2) * 16
            y1 = y - box_h / 2 + 8 + index * 8
            points = [(positions[source] + box_w / 2, y1), (x2, y1),
                      (x2, 30 + levels[target] * row - box_h / 2)]
        door = (source, target) == ("manager", "shard")
        style = ' stroke-dasharray="5 4"' if door else ""
        title = ("the manager runs shard.boot and shard.template in the processes it forks"
                 if door else f"{source} imports {target}")
        path = " ".join(f"{x:.0f},{y:.0f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#666"{style} '
                     f'marker-end="url(#arrow)"><title>{title}</title></polyline>')
    for name, x in positions.items():
        y = 30 + levels[name] * row
        parts.append(_box(x, y, box_w, box_h, f"{name}/"))
    parts.append(_box(width / 2, bottom, width - 40, box_h,
                      "top-level modules: what every process reads"))
    parts.append("</svg>")
    return "\n".join(parts)


def _box(x: float, y: float, w: float, h: float, label: str) -> str:
    return (f'<rect x="{x - w / 2:.0f}" y="{y - h / 2:.0f}" width="{w:.0f}" height="{h}" rx="5" '
            f'fill="#eef" stroke="#557"/><text x="{x:.0f}" y="{y + 4:.0f}" '
            f'text-anchor="middle" font-family="monospace" font-size="13">'
            f'{html.escape(label)}</text>')


def _status_sample() -> dict:
    import json

    return json.loads((ROOT / "docs" / "samples" / "status.json").read_text())


def status_sample() -> str:
    """``gshard status`` as it prints the sample document (docs/samples.py records it)."""
    from gshard.cli.status import render

    return f"```text\n$ gshard status --pid /run/gshard.pid\n{render(_status_sample())}```"


def top_sample() -> str:
    """A frame of ``gshard top`` over the same document."""
    from gshard.cli.top import Trends, screen

    doc = _status_sample()
    trends = Trends()
    trends.add(doc)
    frame = "\n".join(line.replace("\x1b[7m", "").replace("\x1b[0m", "")
                      for line in screen(doc, trends, width=110))
    return f"```text\n{frame}\n```"


def status_json() -> str:
    """The sample as ``gshard status --json`` prints it."""
    import json

    return f"```json\n{json.dumps(_status_sample(), indent=2)}\n```"


def _headings_as_bold(text: str) -> str:
    return re.sub(r"^#+ (.+)$", r"**\1**", text, flags=re.M)


def benchmark_results() -> str:
    return _headings_as_bold((ROOT / "benchmarks" / "results" / "RESULTS.md").read_text())


def scaling_results() -> str:
    return _headings_as_bold(
        (ROOT / "benchmarks" / "results" / "scaling" / "RESULTS.md").read_text())


PARTS: dict[str, Callable[[], str]] = {
    "help": cli_help,
    "settings": settings_reference,
    "gunicorn-table": gunicorn_table,
    "metrics": metrics_reference,
    "layout": layout_diagram,
    "status": status_sample,
    "top": top_sample,
    "status-json": status_json,
    "results": benchmark_results,
    "scaling-results": scaling_results,
}


# --- MkDocs' events ----------------------------------------------------------------------


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def generate(match: re.Match) -> str:
        name, indent = match.group("name"), match.group("indent")
        if name not in PARTS:
            raise ValueError(f"{page.file.src_uri}: no generated part named {name!r}")
        # Indented as the marker is, so a part can sit in a list or a collapsed block.
        return "\n".join(indent + line if line else line
                         for line in PARTS[name]().splitlines())

    return MARKER.sub(generate, markdown)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    chart = ROOT / "benchmarks" / "results" / "chart.png"
    files.append(File.generated(config, "assets/chart.png", abs_src_path=str(chart)))
    return files


def main() -> None:
    """``python docs/hooks.py NAME``: print one generated part (to read it without a build)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("part", choices=sorted(PARTS))
    print(PARTS[parser.parse_args().part]())


if __name__ == "__main__":
    main()
