"""Benchmark gshard against gunicorn's gevent worker: ``python benchmarks/run.py``.

Both servers run the same apps (benchmarks/apps) with the same process count
and connection limits, each started fresh for every run, alternating gshard,
gunicorn, gshard, ... so that a slow moment of this shared machine hits both.
Load comes from wrk on 127.0.0.1 only, each run bounded by ``-d``. Results go
to benchmarks/results/RESULTS.md and chart.png, raw wrk output and server logs
to benchmarks/results/raw/.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import io
import os
import platform
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import report
import servers
import startup
import wrk

HERE = Path(__file__).resolve().parent
LUA = HERE / "lua"
MODULES = ("gshard", "gunicorn", "gevent", "flask", "matplotlib")


@dataclass(frozen=True)
class Scenario:
    """One load shape; the same for both servers."""

    name: str
    short: str  # chart label
    title: str
    app: str
    path: str = "/"
    connections: int = 64
    headers: tuple[str, ...] = ()
    script: str | None = None  # file in benchmarks/lua
    processes: int = 2
    worker_connections: int = 1000
    keepalive: int = 2
    idle: int = 0  # idle keep-alive connections held open during the run
    count_pids: bool = False  # the script tallies which process answered

    def spec(self, kind: str, gshard_path: str | None = None) -> servers.ServerSpec:
        return servers.ServerSpec(kind, self.app, self.processes, self.worker_connections,
                                  keepalive=self.keepalive, gshard_path=gshard_path)

    def describe(self) -> str:
        """The load and server flags, for the report."""
        load = f"wrk -t1 -c{self.connections} --latency"
        load += "".join(f" -H '{h}'" for h in self.headers)
        load += f" -s lua/{self.script}" if self.script else ""
        flags = (f"--worker-connections {self.worker_connections} --backlog 2048 "
                 f"--keep-alive {self.keepalive}")
        text = (f"Load: `{load} http://127.0.0.1:PORT{self.path}`; app `{self.app}`; "
                f"gshard `--shards {self.processes}` vs gunicorn `-k gevent -w "
                f"{self.processes}`, both `{flags}`.")
        if self.idle:
            text += (f" Before the run, benchmarks/idle_conns.py opens {self.idle:,} "
                     "connections, makes one request on each and keeps them open and idle "
                     "until the run ends.")
        return text


SCENARIOS = [
    Scenario("hello", "plain hello", "Plain WSGI hello, keep-alive, 64 connections",
             "plain:app"),
    Scenario("flask_hello", "Flask hello", "Flask hello, 64 connections", "flask_app:app"),
    Scenario("flask_json", "Flask JSON", "Flask JSON, 64 connections", "flask_app:app",
             "/json"),
    Scenario("new_conn", "new conn/request",
             "New connection per request (Connection: close), 64 connections", "plain:app",
             headers=("Connection: close",)),
    Scenario("big_64k", "64 KiB response", "64 KiB response, 64 connections", "plain:app",
             "/big"),
    Scenario("post_1m", "1 MiB POST", "1 MiB POST, 8 connections", "plain:app", "/upload",
             connections=8, script="post_1m.lua"),
    Scenario("sleep_c1000", "50 ms sleep c1000", "50 ms sleeping route, 1,000 connections",
             "plain:app", "/sleep", connections=1000),
    Scenario("p99_c256", "hello c256", "Plain hello latency, 256 connections", "plain:app",
             connections=256),
    Scenario("idle_10k", "hello + idle conns",
             "Plain hello, 64 connections, with 10,000 idle keep-alive connections held",
             "plain:app", worker_connections=12000, keepalive=300, idle=10_000),
    Scenario("fairness", "fairness (4 procs)",
             "Fairness: /pid over a new connection per request, 4 processes", "plain:app",
             "/pid", processes=4, script="count_pids.lua", count_pids=True),
]


def ensure_wrk(install: bool) -> str:
    """wrk's version line, installing wrk with apt-get first if it is missing."""
    if shutil.which("wrk") is None:
        if not install:
            sys.exit("wrk is not installed: run `sudo apt-get install -y wrk` (Debian/Ubuntu).")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        print("wrk not found; installing it with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in ([*sudo, "apt-get", "update", "-qq"],
                        [*sudo, "apt-get", "install", "-y", "-qq", "wrk"]):
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                sys.exit(f"could not install wrk ({' '.join(command)} exited "
                         f"{done.returncode}):\n{done.stderr.strip()}\n"
                         "Install it yourself (e.g. `sudo apt-get install -y wrk`) and rerun.")
        if shutil.which("wrk") is None:
            sys.exit("apt-get finished but wrk is still not on PATH.")
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (done.stdout + done.stderr).splitlines()[0].strip()


def ensure_modules() -> None:
    """Every server and tool importable, or say how to install them."""
    missing = [name for name in MODULES if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"missing Python packages: {', '.join(missing)}. Install them with:\n"
                 f"  {sys.executable} -m pip install -e '{HERE.parent}[bench]'")


def raise_nofile(idle: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by servers and helpers); returns the idle count it allows.

    A gunicorn worker may accept every idle connection itself, so one process
    needs about ``idle`` descriptors plus headroom.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = idle + 2048
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return idle
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    allowed = idle if hard == resource.RLIM_INFINITY else min(idle, hard - 2048)
    if allowed < idle:
        print(f"RLIMIT_NOFILE hard limit is {hard}: holding {allowed} idle connections "
              f"instead of {idle}", flush=True)
    return max(allowed, 0)


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(HERE.parent), *args], capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.decode().strip()}")
    return done.stdout.decode().strip()


def gshard_source(rev: str | None, raw_dir: Path) -> tuple[str | None, str]:
    """Which gshard to run: (directory for PYTHONPATH or None, description for the report).

    Others may be editing gshard/ while this runs; ``--gshard-rev`` measures a
    commit exported with git archive instead of the working tree.
    """
    if rev is None:
        try:
            commit = _git("rev-parse", "--short=12", "HEAD")
            dirty = _git("status", "--porcelain", "--", "gshard")
        except (RuntimeError, OSError):
            return None, "installed package (not a git checkout)"
        return None, f"working tree at {commit}" + (
            " with uncommitted changes in gshard/" if dirty else "")
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    dest = raw_dir / f"gshard-{commit[:12]}"
    if not (dest / "gshard").is_dir():
        archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", commit, "gshard"],
                                 capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
    return str(dest), f"commit {commit[:12]} (exported with git archive)"


def machine_info(wrk_version: str, gshard_from: str) -> dict[str, str]:
    uname = platform.uname()
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU cores (os.cpu_count)": str(os.cpu_count()),
        "kernel": f"{uname.system} {uname.release} {uname.machine}",
        "Python": platform.python_version(),
    }
    for name in ("gshard", "gunicorn", "gevent", "flask"):
        info[name] = importlib.metadata.version(name)
    info["gshard source"] = gshard_from
    info["wrk"] = wrk_version
    info["load average at start (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"idle connection helper gave no answer within {timeout}s")
    return proc.stdout.readline().decode().strip()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_quiet(budget: list[float], window: float = 0.5, limit: float = 0.25) -> None:
    """Wait while other processes keep more than ``limit`` of a core busy, within ``budget``.

    Other sessions' test suites share this machine; starting a run in a quiet
    moment makes it less likely that they steal the cores mid-run. ``budget``
    is a one-element list of seconds left for the whole benchmark.
    """
    while True:
        started, busy = time.monotonic(), servers.machine_busy_seconds()
        time.sleep(window)
        elapsed = time.monotonic() - started
        if (servers.machine_busy_seconds() - busy) / elapsed < limit or budget[0] <= window:
            return
        budget[0] -= elapsed


def measure(sc: Scenario, kind: str, args: argparse.Namespace, tag: str) -> report.Run:
    """Start a fresh server, optionally warm it up and hold idle connections, run wrk once."""
    raw = args.raw_dir
    load = {"connections": sc.connections, "headers": sc.headers, "timeout": args.timeout,
            "script": LUA / sc.script if sc.script else None}
    with servers.Server(sc.spec(kind, args.gshard_path), raw / f"{tag}.log") as server:
        url = server.url + sc.path
        if args.warmup > 0:
            wrk.run(url, duration=args.warmup, **load)
        holder = None
        run = report.Run(wrk=None, workers=server.workers)
        try:
            if sc.idle:
                time.sleep(0.5)  # let the warm-up's connections close
                run.rss_idle = server.worker_rss()
                holder = servers.spawn(
                    [sys.executable, str(HERE / "idle_conns.py"), "--port", str(server.port),
                     "--count", str(sc.idle), "--max-seconds", str(int(args.duration) + 240)],
                    raw / f"{tag}-idle.log", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                _, ok, failed = _read_line(holder, 180).split()
                run.held, run.held_failed = int(ok), int(failed)
                time.sleep(0.5)
                run.rss_held = server.worker_rss()
            before = (server.worker_cpu(), server.manager_cpu(), _children_cpu(),
                      servers.machine_busy_seconds())
            run.wrk = wrk.run(url, duration=args.duration, raw_path=raw / f"{tag}.txt", **load)
            run.cpu = {pid: cpu - before[0].get(pid, 0.0)
                       for pid, cpu in server.worker_cpu().items()}
            run.server_cpu = sum(run.cpu.values()) + server.manager_cpu() - before[1]
            ours = run.server_cpu + _children_cpu() - before[2]  # wrk is a reaped child
            run.other_cpu = servers.machine_busy_seconds() - before[3] - ours
            if holder is not None:
                holder.stdin.write(b"check\n")
                holder.stdin.flush()
                run.alive_after = int(_read_line(holder, 60).split()[1])
        finally:
            if holder is not None:
                holder.stdin.close()
                servers.terminate(holder)
        run.problems = server.problems()
        if run.held_failed:
            run.problems.append(f"{run.held_failed} of {sc.idle} idle connections failed to open")
        if run.held and run.alive_after < run.held:
            run.problems.append(f"{run.held - run.alive_after} of {run.held} idle keep-alive "
                                "connections were closed by the server during the run")
    return run


def _progress(sc: Scenario, kind: str, n: int, runs: int, run: report.Run) -> str:
    w = run.wrk
    text = (f"[{sc.name} {n}/{runs}] {kind:8} {w.requests_per_sec:9,.0f} req/s  "
            f"p50 {w.p50_ms:7.2f} ms  p99 {w.p99_ms:8.2f} ms  errors {w.errors}  "
            f"cpu {'/'.join(f'{c:.1f}' for c in run.cpu.values())} s, "
            f"others {run.other_cpu:.1f} s")
    if sc.idle:
        text += f"  held {run.held}/{sc.idle}, {run.kib_per_conn:.1f} KiB/conn"
    if sc.count_pids:
        text += f"  busiest/idlest {run.fairness:.2f}"
    return text + "".join(f"\n    ! {p}" for p in run.problems)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark gshard (--shards 2) against gunicorn -k gevent -w 2 with wrk.")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds of each measured wrk run (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs per scenario and server; the median is reported "
                             "(default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of discarded load on each fresh server (default: "
                             "%(default)s, 0 to skip)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="wrk's per-request timeout in seconds (default: %(default)s)")
    parser.add_argument("--idle-connections", type=int, default=10_000,
                        help="idle keep-alive connections held in idle_10k (default: "
                             "%(default)s)")
    parser.add_argument("--only", nargs="+", choices=[*(sc.name for sc in SCENARIOS), "startup"],
                        metavar="SCENARIO", help="run only these scenarios: "
                        + ", ".join(sc.name for sc in SCENARIOS))
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 run of 1 s per scenario, no warm-up, 1,000 idle "
                             "connections, results in results/raw/quick/")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where RESULTS.md and chart.png go (default: benchmarks/results)")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="seconds in total the benchmark may spend waiting, before runs, "
                             "for other processes to leave the CPUs alone (default: "
                             "%(default)s)")
    parser.add_argument("--gshard-rev", metavar="REV",
                        help="benchmark gshard as committed at this git revision (exported "
                             "to results/raw/) instead of the working tree")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install wrk when it is missing")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.runs, args.warmup = 1.0, 1, 0.0
        args.idle_connections = min(args.idle_connections, 1000)
        args.results_dir = args.results_dir or HERE / "results" / "raw" / "quick"
    args.results_dir = args.results_dir or HERE / "results"
    args.raw_dir = (HERE / "results" / "raw" / "quick") if args.quick else (
        args.results_dir / "raw")
    if args.runs < 1 or args.duration <= 0:
        parser.error("--runs must be >= 1 and --duration > 0")
    return args


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every finally, which stops the servers


def main() -> int:
    args = parse_args()
    ensure_modules()
    wrk_version = ensure_wrk(install=not args.no_install)
    idle = raise_nofile(args.idle_connections)
    args.raw_dir.mkdir(parents=True, exist_ok=True)
    scenarios = [sc for sc in SCENARIOS if not args.only or sc.name in args.only]
    scenarios = [dataclasses.replace(sc, idle=idle, title=sc.title.replace("10,000", f"{idle:,}"))
                 if sc.idle else sc for sc in scenarios]
    args.gshard_path, gshard_from = gshard_source(args.gshard_rev, args.raw_dir)
    machine = machine_info(wrk_version, gshard_from)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    quiet_budget = [args.quiet_wait]
    results: report.Results = {}
    try:
        for sc in scenarios:
            runs: dict[str, list[report.Run]] = {kind: [] for kind in report.KINDS}
            for n in range(1, args.runs + 1):
                for kind in report.KINDS:
                    wait_quiet(quiet_budget)
                    run = measure(sc, kind, args, f"{sc.name}-{kind}-{n}")
                    runs[kind].append(run)
                    print(_progress(sc, kind, n, args.runs, run), flush=True)
            results[sc.name] = {kind: report.Summary(runs[kind]) for kind in report.KINDS}
        boot = None
        if not args.only or "startup" in args.only:
            boot = startup.measure(args.gshard_path, args.raw_dir, max(args.runs, 3))
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, nothing written", file=sys.stderr)
        return 130
    finally:
        servers.stop_all()
    elapsed = time.monotonic() - started
    others = sorted(run.other_cpu for pair in results.values() for summary in pair.values()
                    for run in summary.runs)
    machine["load average at end (1/5/15 min)"] = " / ".join(
        f"{x:.2f}" for x in os.getloadavg())
    method = [
        f"Every scenario: {args.runs} runs per server of {args.duration:g} s each, alternating "
        "gshard, gunicorn, gshard, ...; each run on a freshly started server"
        + (f" after {args.warmup:g} s of discarded warm-up load" if args.warmup else "")
        + "; medians reported (errors are summed over all runs).",
        f"wrk with one thread, `--latency`, `--timeout {args.timeout:g}s`, against "
        "127.0.0.1 only; errors = socket errors (connect, read, write, timeout) + "
        "non-2xx/3xx responses. p50/p99 are wrk's, which include its coordinated-omission "
        "correction (wrk's stats_correct adds synthetic samples for every response slower "
        "than twice the mean interval per connection), so a few long stalls raise p75-p99 "
        "far above what most requests saw.",
        "Requests per server CPU-second: requests of the run / CPU time of the server's "
        "processes (manager/master and workers) during it; unlike req/s it hardly moves when "
        "other processes take CPU away, so it is the steadier comparison on a busy machine.",
        "CPU s per process: user + system time of each shard/worker during the measured "
        "run, from /proc/PID/stat; it shows whether the load was spread over the processes. "
        "CPU s used by others: machine-wide busy time from /proc/stat during the run minus "
        "that of the server and wrk (other sessions' tests share this machine); a run with "
        "seconds there competed for the 2 cores.",
        "gshard `--shards N` vs gunicorn `-k gevent -w N` (N = 2, 4 for fairness), same app, "
        "same `--worker-connections`, `--backlog` and `--keep-alive`, access log off on "
        "both, `--graceful-timeout 5`, bound to 127.0.0.1:0.",
        f"RLIMIT_NOFILE raised to {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} for the "
        "benchmark, the servers and the idle-connection helper.",
        "Memory: VmRSS of each shard/worker from /proc; KiB per connection = (sum of RSS "
        "with the idle connections held - sum at idle) / connections held.",
        "Fairness: busiest/idlest = most / fewest requests served by one process, "
        "counted from each response's body (the serving process's PID).",
        f"Before each run the benchmark waited for other processes to use less than a "
        f"quarter of a core ({args.quiet_wait - quiet_budget[0]:.0f} s of waiting in all, "
        f"budget {args.quiet_wait:g} s). "
        f"The whole benchmark took {elapsed / 60:.1f} minutes."
        + (f" The machine is shared: other processes used a median "
           f"{statistics.median(others):.1f} s (at most {others[-1]:.1f} s) of the "
           f"{args.duration * (os.cpu_count() or 1):g} CPU-seconds of each run (this "
           "includes kernel time charged to no process)." if others else ""),
    ]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    extra_targets = (startup.target(boot),) if boot else ()
    text = report.markdown(scenarios, results, machine, method, extra_targets,
                           tuple(startup.section(boot)) if boot else ())
    (args.results_dir / "RESULTS.md").write_text(text)
    report.chart(scenarios, results, args.results_dir / "chart.png")
    print("\n" + text)
    for target in [*report.targets(results), *extra_targets]:
        print(f"{'PASS' if target.passed else 'FAIL'}  {target.name}: {target.measured}")
    print(f"\nwrote {args.results_dir / 'RESULTS.md'} and {args.results_dir / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
