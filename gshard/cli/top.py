"""``gshard top``: the status redrawn every second, with a req/s trend per shard.

Plain ANSI (clear, home, reverse video for the heading): a terminal needs
nothing else, and a screen of a dozen rows has no use for a layout library.
The screen is built by a pure function (``screen``) from status documents,
so what it shows is tested without a terminal; the loop only fetches, draws
and sleeps.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from gshard.cli import status

REFRESH = 1.0
TREND_POINTS = 20  # samples (seconds) in a shard's trend
_BARS = "▁▂▃▄▅▆▇█"
_CLEAR = "\x1b[H\x1b[2J"
_REVERSE, _RESET = "\x1b[7m", "\x1b[0m"
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


class Trends:
    """Recent req/s of each shard (by PID), for the sparkline column."""

    def __init__(self, points: int = TREND_POINTS) -> None:
        self.points = points
        self.by_pid: dict[int, deque[float]] = {}

    def add(self, doc: Mapping[str, Any]) -> None:
        live = set()
        for shard in doc["shards"]:
            live.add(shard["pid"])
            self.by_pid.setdefault(shard["pid"], deque(maxlen=self.points)).append(shard["rps"])
        for pid in list(self.by_pid):
            if pid not in live:
                del self.by_pid[pid]

    def sparkline(self, pid: int, peak: float) -> str:
        values = self.by_pid.get(pid, ())
        if peak <= 0:
            return _BARS[0] * len(values)
        top = len(_BARS) - 1
        return "".join(_BARS[min(round(v / peak * top), top)] for v in values)


def screen(doc: Mapping[str, Any], trends: Trends, width: int) -> list[str]:
    """The lines of one frame (without escape codes except the heading's)."""
    peak = max((max(v, default=0.0) for v in trends.by_pid.values()), default=0.0)
    columns = ("SLOT", "PID", "GEN", "STATE", "REQ/S", "TREND (20 s)", "QUEUE", "IN-FLIGHT",
               "CONNS", "REQUESTS", "RSS")
    rows = [columns]
    for shard in doc["shards"]:
        rows.append((
            str(shard["slot"]), str(shard["pid"]), str(shard["generation"]),
            status.shard_state(doc, shard), f"{shard['rps']:.1f}",
            trends.sparkline(shard["pid"], peak).ljust(trends.points),
            status.queue_text(shard), str(shard["in_flight"]), str(shard["connections"]),
            f"{shard['requests']:,}", status.human_bytes(shard["rss"]),
        ))
    table = status.table(rows)
    lines = [line[:width] for line in status.header_lines(doc)]
    lines += ["", _REVERSE + table[0].ljust(width)[:width] + _RESET]
    lines += [line[:width] for line in table[1:]]
    recent = doc["restarts"][-5:]
    if recent:
        lines += ["", "recent departures:"]
        lines += [f"  {d['at'][11:19]} slot {d['slot']} pid {d['pid']} gen {d['generation']} "
                  f"{d['reason']}: {d['detail']}"[:width] for d in recent]
    return lines


def main(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    """``gshard top``: redraw until interrupted (Ctrl-C)."""
    status.add_target_arguments(parser)
    parser.add_argument("--interval", type=float, default=REFRESH, metavar="SECONDS",
                        help="Seconds between refreshes (default 1).")
    args = parser.parse_args(argv)
    path = status.control_path(args)
    trends = Trends()
    out = sys.stdout
    out.write(_HIDE_CURSOR)
    try:
        while True:
            width = shutil.get_terminal_size().columns
            try:
                doc = status.fetch(path)
            except RuntimeError as exc:
                frame = [f"gshard top: {exc}", "(retrying every second; Ctrl-C to quit)"]
            else:
                trends.add(doc)
                frame = screen(doc, trends, width)
            out.write(_CLEAR + "\n".join(frame) + "\n")
            out.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        out.write(_SHOW_CURSOR)
        out.flush()
