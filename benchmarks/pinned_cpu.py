"""A server's own CPU per request, with the server and the load generator on separate cores.

``python benchmarks/pinned_cpu.py`` starts each server as one process (gshard
``--shards 1``, gunicorn ``-k gevent -w 1``, granian ``--workers 1``, bjoern as
one process) pinned to CPU 0 with taskset, runs ``wrk -t1 -c64`` pinned to CPU
1, and divides the CPU time the server's processes used during the run (user
and system apart, from ``/proc/PID/stat``, the manager or master included) by
the requests wrk completed. The servers take turns, each started fresh per
run, and the medians of the runs are reported.

Unlike req/s on a shared 2-core machine, CPU per request hardly moves when
other processes take CPU away: it says what a request costs the server, kernel
work on its behalf included (system time: its sends, receives and the
wake-ups of its peer). ``--tree LABEL=PATH`` adds gshard as found in another
checkout (built in place: ``python setup.py build_ext --inplace``), to compare
revisions side by side:

    python benchmarks/pinned_cpu.py
    python benchmarks/pinned_cpu.py --servers gshard --tree before=/tmp/gshard-base --runs 5
    python benchmarks/pinned_cpu.py --servers gshard --tree before=/tmp/gshard-base --nginx

``--nginx`` puts nginx (one worker, pinned with wrk to CPU 1) in front of each
server, which then listens on a unix socket: the server's CPU per request
behind a proxy on the same machine, and nginx's own.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import servers
import wrk
from run import ensure_peers

SERVER_CPU, LOAD_CPU = "0", "1"
APPS = {"plain": "plain:app", "flask": "flask_app:app"}
KINDS = ("gshard", "bjoern", "gunicorn", "granian")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Reading:
    """One run: requests wrk completed, and the server's CPU seconds during them."""

    requests: int
    seconds: float
    user: float
    system: float
    proxy: float = math.nan  # nginx's CPU seconds (--nginx)

    def per_request(self, seconds: float) -> float:
        return seconds / self.requests * 1e6 if self.requests else float("nan")


def tree_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and every process below it."""
    user = system = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # fields[11], [12]: utime, stime
        user += int(fields[11]) / _TICK
        system += int(fields[12]) / _TICK
        pending.extend(servers.children(current))
    return user, system


def measure(program: servers.Program, app: str, args: argparse.Namespace,
            log_dir: Path) -> Reading:
    """Start ``program`` pinned, warm it up, and read its CPU around one pinned wrk run.

    With ``--nginx`` the server listens on a unix socket behind nginx (one worker,
    pinned with wrk), and the reading has nginx's CPU too.
    """
    name = f"{program.name}-{app.split(':')[0]}".replace(" ", "-")
    unix = os.path.join(tempfile.gettempdir(), f"pinned-{os.getpid()}-{name}.sock")
    spec = servers.ServerSpec(program, app, processes=1, cpus=SERVER_CPU,
                              unix=unix if args.nginx else None)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(servers.Server(spec, log_dir / f"{name}.log"))
        front = server
        if args.nginx:
            front = stack.enter_context(servers.Nginx(unix, log_dir / f"{name}-nginx",
                                                      cpus=LOAD_CPU))
        load = {"connections": args.connections, "cpus": LOAD_CPU, "timeout": 10.0}
        wrk.run(front.url + "/", duration=1, **load)
        user, system = tree_cpu(server.proc.pid)
        proxy = front.cpu() if args.nginx else 0.0
        started = time.monotonic()
        result = wrk.run(front.url + "/", duration=args.seconds, **load)
        elapsed = time.monotonic() - started
        after_user, after_system = tree_cpu(server.proc.pid)
        proxy = front.cpu() - proxy if args.nginx else math.nan
        if result.errors:
            raise RuntimeError(f"{program.name}: {result.errors} errors")
    return Reading(result.requests, elapsed, after_user - user, after_system - system, proxy)


def _programs(args: argparse.Namespace) -> list[servers.Program]:
    programs = [servers.Program(kind, kind) for kind in args.servers]
    for label, path in args.tree:
        programs.append(servers.Program(f"gshard {label}", "gshard",
                                        env=(("PYTHONPATH", str(Path(path).resolve())),)))
    return programs


def _tree(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not (Path(path) / "gshard").is_dir():
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH to a gshard checkout: {text}")
    return label, path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="gshard,bjoern,gunicorn",
                        type=lambda text: [s for s in text.split(",") if s],
                        help=f"comma-separated, of {', '.join(KINDS)} (default: %(default)s)")
    parser.add_argument("--apps", default="plain,flask",
                        type=lambda text: [a for a in text.split(",") if a],
                        help="comma-separated, of plain, flask (default: %(default)s)")
    parser.add_argument("--tree", type=_tree, action="append", default=[], metavar="LABEL=PATH",
                        help="also measure the gshard in this checkout; repeatable")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--nginx", action="store_true",
                        help="each server on a unix socket behind nginx (one worker, pinned "
                             "with wrk); nginx's CPU per request is reported too")
    args = parser.parse_args()
    if os.cpu_count() is None or os.cpu_count() < 2:
        sys.exit("needs 2 CPUs: the server on one, wrk on the other")
    for name in [*args.servers, *args.apps]:
        if name not in (*KINDS, *APPS):
            parser.error(f"unknown server or app {name!r}")
    programs = _programs(args)
    # The peers are installed as run.py installs them; one that cannot be is left out.
    skipped = ensure_peers(programs, install=True)
    programs = [program for program in programs if program.name not in skipped]
    readings: dict[tuple[str, str], list[Reading]] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="pinned-cpu-"))
    try:
        for app in args.apps:
            for n in range(1, args.runs + 1):
                for program in programs:
                    reading = measure(program, APPS[app], args, log_dir)
                    readings.setdefault((app, program.name), []).append(reading)
                    print(f"[{app} {n}/{args.runs}] {program.name:16} "
                          f"{reading.requests / reading.seconds:9,.0f} req/s  user "
                          f"{reading.per_request(reading.user):6.1f}  system "
                          f"{reading.per_request(reading.system):6.1f}  nginx "
                          f"{reading.per_request(reading.proxy):6.1f} us/request",
                          flush=True)
    finally:
        servers.stop_all()
    print(f"\nServer CPU per request, µs (median of {args.runs} runs of {args.seconds} s; "
          f"server pinned to CPU {SERVER_CPU}, `wrk -t1 -c{args.connections}` to CPU "
          f"{LOAD_CPU}; logs in {log_dir})\n")
    extra = " nginx |" if args.nginx else ""
    print(f"| app | server | req/s | user | system | total |{extra}")
    print("| --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if args.nginx else ""))
    median = statistics.median
    for (app, name), found in readings.items():
        rate = median([r.requests / r.seconds for r in found])
        user = median([r.per_request(r.user) for r in found])
        system = median([r.per_request(r.system) for r in found])
        total = median([r.per_request(r.user + r.system) for r in found])
        proxy = f" {median([r.per_request(r.proxy) for r in found]):.1f} |" if extra else ""
        print(f"| {app} | {name} | {rate:,.0f} | {user:.1f} | {system:.1f} | {total:.1f} |"
              f"{proxy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
