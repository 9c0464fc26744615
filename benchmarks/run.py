"""Benchmark gshard against its peers: ``python benchmarks/run.py``.

gshard, gunicorn's gevent worker, granian (WSGI) and bjoern run the same apps
(benchmarks/apps) with the same process count and, where a server has the
setting, the same connection limits. Each is started fresh for every run, in
turn (gshard, gunicorn, granian, bjoern, gshard, ...), so that a slow moment of
this shared machine hits all of them. Load comes from wrk on 127.0.0.1 only,
each run bounded by ``-d``. Results go to benchmarks/results/RESULTS.md and
chart.png, raw wrk output and server logs to benchmarks/results/raw/.
"""

from __future__ import annotations

import argparse
import contextlib
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
import tempfile
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

# The servers, in the order each round runs them. A variant is one more line, e.g.
# servers.Program("gshard+metrics", "gshard", ("--metrics-bind", "127.0.0.1:0")).
SERVERS = (
    servers.Program("gshard", "gshard"),
    servers.Program("gunicorn", "gunicorn"),
    servers.Program("granian", "granian"),
    servers.Program("bjoern", "bjoern"),
    # Variants, measured when named in --servers: the same install as pure Python.
    servers.Program("gshard-pure", "gshard", env=(("GSHARD_PURE_PYTHON", "1"),), variant=True),
)
# nginx's worker processes in the proxied scenarios: one, so that on 2 cores the
# proxy, the 2 shards and wrk share the machine as evenly as they can.
NGINX_WORKERS = 1
# Short names accepted by --scenarios.
ALIASES = {"plain": "hello", "flask": "flask_hello", "json": "flask_json"}


@dataclass(frozen=True)
class Scenario:
    """One load shape; the same for every server."""

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
    scales: bool = False  # measured at every process count given with --shards
    kinds: tuple[str, ...] = ()  # the kinds of server measured here (empty: all)
    proxied: bool = False  # wrk -> nginx -> the server's unix socket (upstream keep-alive)

    def spec(self, program: servers.Program, gshard_path: str | None = None,
             unix: str | None = None) -> servers.ServerSpec:
        return servers.ServerSpec(program, self.app, self.processes, self.worker_connections,
                                  keepalive=self.keepalive, gshard_path=gshard_path, unix=unix)

    def describe(self) -> str:
        """The load and server flags, for the report."""
        load = f"wrk -t1 -c{self.connections} --latency"
        load += "".join(f" -H '{h}'" for h in self.headers)
        load += f" -s lua/{self.script}" if self.script else ""
        flags = (f"--worker-connections {self.worker_connections} --backlog 2048 "
                 f"--keep-alive {self.keepalive}")
        n = self.processes
        if self.proxied:
            return (f"Load: `{load} http://127.0.0.1:PORT{self.path}` against nginx "
                    f"({NGINX_WORKERS} worker, benchmarks/servers.py's NGINX_CONF) on this "
                    "machine, which passes every request over keep-alive upstream connections "
                    f"(`keepalive 64`) to the server's unix socket; app `{self.app}`; gshard "
                    f"`--shards {n}` with `{flags}`.")
        text = (f"Load: `{load} http://127.0.0.1:PORT{self.path}`; app `{self.app}`; "
                f"gshard `--shards {n}` and gunicorn `-k gevent -w {n}`, both `{flags}`; "
                f"granian `--interface wsgi --workers {n} --backlog 2048`; bjoern as {n} "
                "processes on SO_REUSEPORT (benchmarks/bjoern_workers.py, listen backlog "
                "2048).")
        if self.idle:
            text += (f" Before the run, benchmarks/idle_conns.py opens {self.idle:,} "
                     "connections, makes one request on each and keeps them open and idle "
                     "until the run ends.")
        return text


SCENARIOS = [
    Scenario("hello", "plain hello", "Plain WSGI hello, keep-alive, 64 connections",
             "plain:app", scales=True),
    Scenario("flask_hello", "Flask hello", "Flask hello, 64 connections", "flask_app:app",
             scales=True),
    Scenario("flask_json", "Flask JSON", "Flask JSON, 64 connections", "flask_app:app",
             "/json", scales=True),
    Scenario("hello_c1", "plain hello c1", "Plain hello, one keep-alive connection",
             "plain:app", connections=1),
    Scenario("nginx_hello", "plain hello via nginx",
             "Plain hello behind nginx (unix socket, upstream keep-alive), 64 connections",
             "plain:app", kinds=("gshard",), proxied=True),
    Scenario("nginx_flask", "Flask via nginx",
             "Flask hello behind nginx (unix socket, upstream keep-alive), 64 connections",
             "flask_app:app", kinds=("gshard",), proxied=True),
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


def apt_install(package: str) -> str:
    """Install a Debian package with apt-get; returns "" or why it failed."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"installing {package} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([*sudo, "apt-get", "update", "-qq"],
                    [*sudo, "apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            return (f"{' '.join(command)} exited {done.returncode}: "
                    f"{done.stderr.strip()[-500:]}")
    return ""


def ensure_wrk(install: bool) -> str:
    """wrk's version line, installing wrk with apt-get first if it is missing."""
    if shutil.which("wrk") is None:
        if not install:
            sys.exit("wrk is not installed: run `sudo apt-get install -y wrk` (Debian/Ubuntu).")
        failed = apt_install("wrk")
        if failed:
            sys.exit(f"could not install wrk ({failed}).\n"
                     "Install it yourself (e.g. `sudo apt-get install -y wrk`) and rerun.")
        if shutil.which("wrk") is None:
            sys.exit("apt-get finished but wrk is still not on PATH.")
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (done.stdout + done.stderr).splitlines()[0].strip()


def ensure_nginx(install: bool) -> str:
    """"" if nginx runs here, installing Debian's nginx-light first if it is missing;
    otherwise why the proxied scenarios are skipped."""
    if shutil.which("nginx") is None:
        if not install:
            return "nginx is not installed (--no-install); `sudo apt-get install -y nginx-light`"
        failed = apt_install("nginx-light")
        if failed:
            return f"nginx-light could not be installed: {failed}"
        if shutil.which("nginx") is None:
            return "apt-get finished but nginx is still not on PATH"
    return ""


def ensure_modules() -> None:
    """Every server and tool importable, or say how to install them."""
    missing = [name for name in MODULES if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"missing Python packages: {', '.join(missing)}. Install them with:\n"
                 f"  {sys.executable} -m pip install -e '{HERE.parent}[bench]'")


def ensure_peers(programs: list[servers.Program], install: bool) -> dict[str, str]:
    """Install missing peers into this interpreter's environment; returns name -> why skipped.

    The peers go where gunicorn and Flask already are (the environment running
    this script), with pip. bjoern compiles against libev, so its headers
    (Debian's libev-dev) are installed first when missing.
    """
    skipped = {}
    for program in programs:
        package = servers.PEER_PACKAGES.get(program.kind)
        if package is None or importlib.util.find_spec(program.kind) is not None:
            continue
        if not install:
            skipped[program.name] = (f"{package} is not installed (--no-install); "
                                     f"`{sys.executable} -m pip install {package}`")
            continue
        if program.kind == "bjoern" and not Path("/usr/include/ev.h").exists():
            failed = apt_install("libev-dev")
            if failed:
                skipped[program.name] = f"libev-dev (needed to build bjoern): {failed}"
                continue
        print(f"{package} not found; installing it with pip ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", package],
                              capture_output=True, text=True)
        importlib.invalidate_caches()
        if done.returncode != 0 or importlib.util.find_spec(program.kind) is None:
            errors = [line for line in done.stderr.splitlines()
                      if line.strip() and not line.startswith("WARNING")]
            skipped[program.name] = (f"`pip install {package}` failed (exit "
                                     f"{done.returncode}): {' | '.join(errors[-3:])}")
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}", flush=True)
    return skipped


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
    commit instead of the working tree, built as ``--baseline`` builds one.
    """
    if rev is None:
        try:
            commit = _git("rev-parse", "--short=12", "HEAD")
            dirty = _git("status", "--porcelain", "--", "gshard")
        except (RuntimeError, OSError):
            return None, "installed package (not a git checkout)"
        return None, f"working tree at {commit}" + (
            " with uncommitted changes in gshard/" if dirty else "")
    return build_commit(rev, raw_dir)


def build_commit(rev: str, raw_dir: Path) -> tuple[str, str]:
    """gshard as committed at ``rev``, built as this checkout is: (its directory for
    PYTHONPATH, a description for the report).

    The whole tree is exported with git archive and installed with pip into a
    directory of its own, so its compiled set is built the way ``pip install``
    builds it (with Cython, where a compiler exists); a later run reuses it.
    """
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    dest = raw_dir / f"gshard-{commit[:12]}"
    if not (dest / "gshard").is_dir():
        source = raw_dir / f"gshard-{commit[:12]}-source"
        archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", commit],
                                 capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(source, filter="data")
        print(f"building gshard as committed at {commit[:12]} with pip ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(dest), str(source)], check=True)
        shutil.rmtree(source, ignore_errors=True)
    version = subprocess.run([sys.executable, "-m", "gshard", "--version"], capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(dest)},
                             cwd=HERE / "apps")
    return str(dest), f"commit {commit[:12]}, {version.stdout.strip() or 'not runnable'}"


def machine_info(wrk_version: str, gshard_from: str, gshard_path: str | None) -> dict[str, str]:
    uname = platform.uname()
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU cores (os.cpu_count)": str(os.cpu_count()),
        "kernel": f"{uname.system} {uname.release} {uname.machine}",
        "Python": platform.python_version(),
    }
    for name in ("gshard", "gunicorn", "gevent", "flask", "granian", "bjoern"):
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = "not installed"
    info["gshard source"] = gshard_from
    env = {**os.environ, **({"PYTHONPATH": gshard_path} if gshard_path else {})}
    version = subprocess.run([sys.executable, "-m", "gshard", "--version"], capture_output=True,
                             text=True, env=env, cwd=HERE / "apps")
    info["gshard build"] = version.stdout.strip() or version.stderr.strip()[-200:]
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


def measure(sc: Scenario, program: servers.Program, args: argparse.Namespace,
            tag: str) -> report.Run:
    """One measured run; a server that fails to start or answer is a failed run, not a crash.

    A peer may not run some scenario at all (or at all on this machine); the
    report shows the reason instead of dropping the server.
    """
    try:
        return _measure(sc, program, args, tag)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [
            repr(error)]
        said = lines[0] + (f" ... {lines[-1]}" if len(lines) > 1 else "")
        return report.Run(wrk=None, failure=f"{said} (log: {args.raw_dir / tag}.log)")


def _measure(sc: Scenario, program: servers.Program, args: argparse.Namespace,
             tag: str) -> report.Run:
    """Start a fresh server, optionally warm it up and hold idle connections, run wrk once."""
    raw = args.raw_dir
    load = {"connections": sc.connections, "headers": sc.headers, "timeout": args.timeout,
            "script": LUA / sc.script if sc.script else None}
    # Not under raw/: a unix socket's path must fit in 108 bytes.
    unix = (os.path.join(tempfile.gettempdir(), f"gshard-bench-{os.getpid()}-{tag}.sock")
            if sc.proxied else None)
    with contextlib.ExitStack() as stack:
        # A program with a gshard of its own (the baseline) keeps it under --gshard-rev.
        path = None if "PYTHONPATH" in dict(program.env) else args.gshard_path
        server = stack.enter_context(servers.Server(sc.spec(program, path, unix),
                                                    raw / f"{tag}.log"))
        front = (stack.enter_context(servers.Nginx(unix, raw / f"{tag}-nginx", NGINX_WORKERS))
                 if sc.proxied else server)
        url = front.url + sc.path
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
            proxy_cpu = front.cpu() if sc.proxied else 0.0
            before = (server.worker_cpu(), server.manager_cpu(), _children_cpu(),
                      servers.machine_busy_seconds())
            run.wrk = wrk.run(url, duration=args.duration, raw_path=raw / f"{tag}.txt", **load)
            run.cpu = {pid: cpu - before[0].get(pid, 0.0)
                       for pid, cpu in server.worker_cpu().items()}
            run.server_cpu = sum(run.cpu.values()) + server.manager_cpu() - before[1]
            ours = run.server_cpu + _children_cpu() - before[2]  # wrk is a reaped child
            if sc.proxied:
                ours += front.cpu() - proxy_cpu
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


def _progress(sc: Scenario, name: str, n: int, runs: int, run: report.Run) -> str:
    w = run.wrk
    where = f"[{sc.name} x{sc.processes} {n}/{runs}] {name:8}"
    if w is None:
        return f"{where} failed: {run.failure}"
    text = (f"{where} {w.requests_per_sec:9,.0f} req/s  p50 {w.p50_ms:7.2f} ms  "
            f"p99 {w.p99_ms:8.2f} ms  p99.9 {w.p999_ms:8.2f} ms  errors {w.errors}  "
            f"cpu {'/'.join(f'{c:.1f}' for c in run.cpu.values())} s, "
            f"others {run.other_cpu:.1f} s")
    if sc.idle:
        text += f"  held {run.held}/{sc.idle}, {run.kib_per_conn:.1f} KiB/conn"
    if sc.count_pids:
        text += f"  busiest/idlest {run.fairness:.2f}"
    return text + "".join(f"\n    ! {p}" for p in run.problems)


def _round(sc: Scenario, programs: list[servers.Program], args: argparse.Namespace,
           quiet_budget: list[float]) -> dict[str, report.Summary]:
    """``args.runs`` rounds of one scenario, each running every server once, in turn."""
    programs = [p for p in programs if not sc.kinds or p.kind in sc.kinds]
    runs: dict[str, list[report.Run]] = {p.name: [] for p in programs}
    for n in range(1, args.runs + 1):
        for program in programs:
            wait_quiet(quiet_budget)
            run = measure(sc, program, args, f"{sc.name}-x{sc.processes}-{program.name}-{n}")
            runs[program.name].append(run)
            print(_progress(sc, program.name, n, args.runs, run), flush=True)
    return {name: report.Summary(found) for name, found in runs.items()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark gshard against gunicorn -k gevent, granian and bjoern with wrk.")
    parser.add_argument("--duration", "--seconds", type=float, default=5.0,
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
    parser.add_argument("--scenarios", type=_comma_list, metavar="A,B",
                        help="run only these scenarios (comma-separated): "
                        + ", ".join([sc.name for sc in SCENARIOS] + ["startup"])
                        + "; aliases: " + ", ".join(f"{a}={n}" for a, n in ALIASES.items()))
    parser.add_argument("--servers", type=_comma_list, metavar="A,B",
                        help="run only these servers (comma-separated): "
                        + ", ".join(p.name for p in SERVERS))
    parser.add_argument("--shards", type=_counts, default=None, metavar="N,M",
                        help="process counts for the scaling scenarios ("
                        + ", ".join(sc.name for sc in SCENARIOS if sc.scales)
                        + "), e.g. 1,2,4: each is measured at every count, the other "
                        "scenarios at their own; the summary uses 2 when it is listed "
                        "(default: 2)")
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
                        help="benchmark gshard as committed at this git revision (built with "
                             "pip into results/raw/) instead of the working tree")
    parser.add_argument("--baseline", metavar="REV",
                        help=f"also run gshard as committed at REV (built with pip as this "
                             f"checkout is) in every gshard scenario, as {report.BEFORE!r}: "
                             "RESULTS.md then compares the two, scenario by scenario")
    parser.add_argument("--no-install", action="store_true",
                        help="do not install wrk (apt-get) or the peers (pip) when missing")
    args = parser.parse_args()
    args.shards = args.shards or [2]
    known = {sc.name for sc in SCENARIOS} | {"startup"}
    args.scenarios = args.scenarios and [ALIASES.get(n, n) for n in args.scenarios]
    for unknown in set(args.scenarios or ()) - known:
        parser.error(f"unknown scenario {unknown!r}")
    for unknown in set(args.servers or ()) - {p.name for p in SERVERS}:
        parser.error(f"unknown server {unknown!r}")
    if args.quick:
        args.duration, args.runs, args.warmup = 1.0, 1, 0.0
        args.idle_connections = min(args.idle_connections, 1000)
        args.results_dir = args.results_dir or HERE / "results" / "raw" / "quick"
    args.results_dir = args.results_dir or HERE / "results"
    args.raw_dir = (HERE / "results" / "raw" / "quick") if args.quick else (
        args.results_dir / "raw")
    if args.runs < 1 or args.duration <= 0:
        parser.error("--runs must be >= 1 and --duration > 0")
    if not (args.duration.is_integer() and args.warmup.is_integer()):
        parser.error("wrk takes whole seconds: --duration/--seconds and --warmup must be too")
    return args


def _comma_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _counts(text: str) -> list[int]:
    counts = sorted({int(n) for n in _comma_list(text)})
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("process counts are integers >= 1")
    return counts


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every finally, which stops the servers


def main() -> int:
    args = parse_args()
    ensure_modules()
    wrk_version = ensure_wrk(install=not args.no_install)
    idle = raise_nofile(args.idle_connections)
    args.raw_dir.mkdir(parents=True, exist_ok=True)
    scenarios = [sc for sc in SCENARIOS if not args.scenarios or sc.name in args.scenarios]
    no_nginx = ensure_nginx(install=not args.no_install) if any(
        sc.proxied for sc in scenarios) else ""
    if no_nginx:
        print(f"skipping the scenarios behind nginx: {no_nginx}", flush=True)
        scenarios = [sc for sc in scenarios if not sc.proxied]
    scenarios = [dataclasses.replace(sc, idle=idle, title=sc.title.replace("10,000", f"{idle:,}"))
                 if sc.idle else sc for sc in scenarios]
    if args.servers:
        programs = [p for p in SERVERS if p.name in args.servers]
    else:
        programs = [p for p in SERVERS if not p.variant]
    skipped = ensure_peers(programs, install=not args.no_install)
    programs = [p for p in programs if p.name not in skipped]
    if no_nginx:
        skipped["the scenarios behind nginx"] = no_nginx
    args.gshard_path, gshard_from = gshard_source(args.gshard_rev, args.raw_dir)
    machine = machine_info(wrk_version, gshard_from, args.gshard_path)
    if args.baseline:
        path, described = build_commit(args.baseline, args.raw_dir)
        machine[f"{report.BEFORE} (--baseline)"] = described
        # Right after gshard, so that the two alternate as closely as the round allows.
        at = next((i + 1 for i, p in enumerate(programs) if p.name == "gshard"), 0)
        programs.insert(at, servers.Program(report.BEFORE, "gshard",
                                            env=(("PYTHONPATH", path),)))
    if "rebuild" in machine["gshard build"]:
        # A compiled module older than its source (edited since `pip install
        # -e .`) sends the whole set to pure Python: not the build meant.
        print(f"{machine['gshard build']}: rebuild first (pip install -e .)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    quiet_budget = [args.quiet_wait]
    scaling: report.Scaling = {}
    main_count = 2 if 2 in args.shards else args.shards[0]
    try:
        for sc in scenarios:
            counts = args.shards if sc.scales else [sc.processes]
            for count in counts:
                variant = dataclasses.replace(sc, processes=count)
                scaling.setdefault(sc.name, {})[count] = _round(variant, programs, args,
                                                                quiet_budget)
        boot = None
        if not args.scenarios or "startup" in args.scenarios:
            boot = startup.measure([p for p in programs if p.kind in startup.KINDS],
                                   args.gshard_path, args.raw_dir, max(args.runs, 3))
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, nothing written", file=sys.stderr)
        return 130
    finally:
        servers.stop_all()
    results: report.Results = {
        name: by_count.get(main_count, next(iter(by_count.values())))
        for name, by_count in scaling.items()}
    scenarios = [dataclasses.replace(sc, processes=main_count) if sc.scales else sc
                 for sc in scenarios]
    elapsed = time.monotonic() - started
    others = sorted(run.other_cpu for by_count in scaling.values()
                    for pair in by_count.values() for summary in pair.values()
                    for run in summary.measured)
    machine["load average at end (1/5/15 min)"] = " / ".join(
        f"{x:.2f}" for x in os.getloadavg())
    method = [
        f"Every scenario: {args.runs} runs per server of {args.duration:g} s each, in turn "
        f"{', '.join(p.name for p in programs)}, then again; each run on a freshly started "
        "server"
        + (f" after {args.warmup:g} s of discarded warm-up load" if args.warmup else "")
        + "; medians reported (errors are summed over all runs).",
        f"wrk with one thread, `--latency`, `--timeout {args.timeout:g}s`, against "
        "127.0.0.1 only; errors = socket errors (connect, read, write, timeout) + "
        "non-2xx/3xx responses. p50/p99/p99.9 are from wrk's latency histogram (printed "
        "by lua/percentiles.lua's done() hook), which includes its coordinated-omission "
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
        "gshard `--shards N`, gunicorn `-k gevent -w N`, granian `--interface wsgi "
        "--workers N` and bjoern as N processes each with its own SO_REUSEPORT listener on "
        f"one port (N = {main_count}, 4 for fairness), same app. gshard and gunicorn: same "
        "`--worker-connections`, `--backlog` and `--keep-alive`, `--graceful-timeout 5`; "
        "granian and bjoern: the same backlog, their defaults otherwise (granian runs WSGI "
        "apps in a pool of blocking threads per worker, beside its Rust I/O threads, so "
        "when other processes compete for the CPUs its many threads get a larger share "
        "of them than N single-threaded processes do; bjoern runs one request at a time "
        "per process, so a sleeping route blocks it). Access logs off everywhere; all "
        "bound to 127.0.0.1.",
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
                           tuple(startup.section(boot)) if boot else (), skipped, scaling)
    (args.results_dir / "RESULTS.md").write_text(text)
    if results:  # a startup-only run has no wrk scenario to draw
        report.chart(scenarios, results, args.results_dir / "chart.png")
    print("\n" + text)
    for target in [*report.targets(results), *extra_targets]:
        print(f"{'PASS' if target.passed else 'FAIL'}  {target.name}: {target.measured}")
    print(f"\nwrote {args.results_dir / 'RESULTS.md'}"
          + (f" and {args.results_dir / 'chart.png'}" if results else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
