"""Startup: seconds from launching a server to its first answered request.

The issue's target: the Flask example answers within 1 s of launch. Measured
the way a user meets it: spawn the command, read the port from its log, and
request ``/`` every 5 ms until a 200 comes back. gshard's first request may
have to wait for the one shard its listener belongs to; gunicorn's is taken
by whichever worker boots first.
"""

from __future__ import annotations

import os
import re
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import report
import servers

POLL = 0.005
TIMEOUT = 15.0
APP = "flask_app:app"
PROCESSES = 4
KINDS = ("gshard", "gunicorn")  # the servers whose startup is compared


@dataclass
class Startup:
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, kind: str) -> float:
        return statistics.median(self.seconds[kind])


def first_response(spec: servers.ServerSpec, log_path: Path) -> float:
    """Seconds from spawning ``spec`` to its first 200 on ``/``."""
    env = None
    if spec.kind == "gshard" and spec.gshard_path:
        env = {**os.environ, "PYTHONPATH": spec.gshard_path}
    started = time.monotonic()
    proc = servers.spawn(spec.command(), log_path, env=env, cwd=servers.APPS_DIR)
    try:
        port = None
        while time.monotonic() - started < TIMEOUT:
            if proc.poll() is not None:
                raise RuntimeError(f"{spec.program.name} exited with {proc.returncode} "
                                   "while starting")
            if port is None:
                found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)",
                                  log_path.read_text(errors="replace"))
                port = int(found.group(1)) if found else None
            if port is not None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                        if answer.status == 200:
                            return time.monotonic() - started
                except OSError:
                    pass
            time.sleep(POLL)
        raise RuntimeError(f"{spec.program.name} did not answer within {TIMEOUT:g}s")
    finally:
        servers.terminate(proc)


def measure(programs: list[servers.Program], gshard_path: str | None, raw_dir: Path,
            runs: int) -> Startup:
    """Alternate the servers (gshard and gunicorn) ``runs`` times each."""
    result = Startup({p.name: [] for p in programs})
    for n in range(1, runs + 1):
        for program in programs:
            spec = servers.ServerSpec(program, APP, processes=PROCESSES, gshard_path=gshard_path)
            seconds = first_response(spec, raw_dir / f"startup-{program.name}-{n}.log")
            result.seconds[program.name].append(seconds)
            print(f"startup {program.name} run {n}/{runs}: first response after "
                  f"{seconds:.3f} s", flush=True)
    return result


def target(result: Startup) -> report.Target:
    median = result.median("gshard")
    return report.Target("Flask app answers its first request within 1 s of launch",
                         f"{median:.2f} s median ({PROCESSES} shards)", median <= 1.0)


def section(result: Startup) -> list[str]:
    lines = ["## Startup", "",
             f"Seconds from launching the server (`{APP}`, {PROCESSES} processes) to its "
             "first 200 on `/`, polling every 5 ms.", "",
             "| server | median | runs |", "| --- | ---: | --- |"]
    for name, seconds in result.seconds.items():
        runs = ", ".join(f"{s:.3f}" for s in seconds)
        lines.append(f"| {name} | {result.median(name):.3f} s | {runs} |")
    return lines
