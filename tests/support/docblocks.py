"""The code blocks of the documentation pages, read as the docs test runs them.

A page's fenced blocks say what they are by their language and attributes
(MkDocs renders the same attributes: a title above the block, a class):

* ```` ```sh ```` and ```` ```python ````: a command or program the reader can
  run as it is; the docs test runs it and it must succeed;
* ```` ```sh title="terminal 1" ````: starts a server (it does not exit); the
  blocks titled ``terminal 2`` after it, up to the next ``terminal 1``, run
  against that server while it serves;
* ```` ```text title="output" ````: what the runnable block before it prints;
  every line shown must be in what it really printed;
* ```` ```{.sh .illustrative} ```` (or ``.python``): shown, not run (it needs a
  cluster, root, the network or a file the reader has and the test does not);
* any other language (``text``, ``ini``, ``yaml``, ``json``...): data, not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

RUNNABLE = ("sh", "python")
DATA = ("text", "ini", "yaml", "json", "nginx", "dockerfile", "toml", "console")
_FENCE = re.compile(r"^```(?P<info>[^`]*)$")


@dataclass
class Block:
    page: str
    line: int  # where the block starts, 1-based, for messages
    language: str
    classes: tuple[str, ...]
    title: str
    text: str
    output: str | None = None  # the ``output`` block that follows it, if any

    @property
    def runnable(self) -> bool:
        return self.language in RUNNABLE and "illustrative" not in self.classes

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class Session:
    """A server block and the blocks that talk to it, or one block that runs alone."""

    server: Block | None
    clients: list[Block] = field(default_factory=list)


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, in order, each ``output`` block attached to the one before."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start = index
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        language, classes, title = parse_info(match.group("info").strip())
        block = Block(path.name, start + 1, language, classes, title,
                      "\n".join(lines[start + 1:end]) + "\n")
        if title == "output" and blocks:
            blocks[-1].output = block.text
        blocks.append(block)
        index = end + 1
    return blocks


def parse_info(info: str) -> tuple[str, tuple[str, ...], str]:
    """(language, classes, title) of a fence's info string: ``sh title="x"`` or ``{.sh .y}``."""
    title_match = re.search(r'title="([^"]*)"', info)
    title = title_match.group(1) if title_match else ""
    info = re.sub(r'title="[^"]*"', "", info).strip()
    if info.startswith("{"):
        classes = tuple(re.findall(r"\.([\w-]+)", info))
        return (classes[0] if classes else ""), classes[1:], title
    return info.split()[0] if info else "", (), title


def indented_code(path: Path) -> list[int]:
    """Lines where an indented code block starts (they cannot be marked, so they are refused)."""
    found, fenced, previous_blank = [], False, True
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and previous_blank and line.startswith("    ") and line.strip() \
                and not line.lstrip().startswith(("-", "*", "|")) and not _in_list(path, number):
            found.append(number)
        previous_blank = not line.strip()
    return found


def _in_list(path: Path, number: int) -> bool:
    """Whether the indented line ``number`` continues a list item or an admonition
    (``!!! note``, ``??? example``), whose content is indented too, not code."""
    lines = path.read_text().splitlines()[:number - 1]
    for line in reversed(lines):
        if not line.strip():
            continue
        return (line.startswith(("- ", "* ", "  ", "!!! ", "??? "))
                or bool(re.match(r"\d+\. ", line)))
    return False


def sessions(blocks: list[Block]) -> list[Session]:
    """The runnable blocks grouped by the server they talk to."""
    found: list[Session] = []
    for block in blocks:
        if not block.runnable:
            continue
        if block.title == "terminal 1":
            found.append(Session(block))
        elif block.title == "terminal 2":
            if not found or found[-1].server is None:
                raise AssertionError(f"{block.where}: a terminal 2 block with no server before it")
            found[-1].clients.append(block)
        else:
            found.append(Session(None, [block]))
    return found
