"""Start and stop every server under test the same way, and never leave one behind.

Each server (and each helper process) runs in its own session, so stopping it
means SIGTERM to its leader, a short wait, then SIGKILL to the whole process
group: workers that outlive their manager are killed too. Every process
started here is registered until stopped, so ``stop_all()`` in a ``finally``
cleans up after Ctrl-C or an exception.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
APPS_DIR = HERE / "apps"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_live: set[subprocess.Popen] = set()

# How each program says it is up: (regular expression, how many matches are needed:
# None = one per process). bjoern_workers.py prints gunicorn's lines.
_BOOTED = {
    "gshard": (r"Ready: {n} shards? serving", 1),
    "gunicorn": (r"Booting worker with pid", None),
    "granian": (r"Started worker-\d+", None),
    "bjoern": (r"Booting worker with pid", None),
}
# PyPI package each peer comes from, installed by run.py when missing.
PEER_PACKAGES = {"granian": "granian", "bjoern": "bjoern"}


@dataclass(frozen=True)
class Program:
    """One server under test: ``kind`` says how to start it, ``flags`` are added to its
    command line, ``name`` labels it in the report (so a variant of gshard with extra
    flags is one more Program)."""

    name: str
    kind: str  # "gshard", "gunicorn", "granian" or "bjoern"
    flags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables
    variant: bool = False  # measured only when named in --servers

    def __post_init__(self) -> None:
        if self.kind not in _BOOTED:
            raise ValueError(f"unknown server kind {self.kind!r}")


@dataclass(frozen=True)
class ServerSpec:
    """What every server is given: same app, process count and, where the server has
    such a setting, the same connection limits."""

    program: Program
    app: str  # MODULE:ATTR inside benchmarks/apps
    processes: int = 2
    worker_connections: int = 1000
    backlog: int = 2048
    keepalive: int = 2
    gshard_path: str | None = None  # directory holding a gshard package to run instead
    cpus: str | None = None  # taskset's CPU list: run every process of the server there
    unix: str | None = None  # listen on this unix socket instead of 127.0.0.1 (behind nginx)

    @property
    def kind(self) -> str:
        return self.program.kind

    @property
    def picks_port(self) -> bool:
        """granian logs the port it was given, so port 0 would not tell us the real one."""
        return self.kind == "granian"

    def command(self, port: int = 0) -> list[str]:
        """The command line; access logs are off by default on every server."""
        common = [
            "--chdir", str(APPS_DIR),
            "--bind", f"unix:{self.unix}" if self.unix else f"127.0.0.1:{port}",
            "--worker-connections", str(self.worker_connections),
            "--backlog", str(self.backlog),
            "--keep-alive", str(self.keepalive),
            "--graceful-timeout", "5",
        ]
        n, flags = str(self.processes), list(self.program.flags)
        pin = ["taskset", "-c", self.cpus] if self.cpus else []
        if self.kind == "gshard":
            return [*pin, sys.executable, "-m", "gshard", self.app, "--shards", n, *common,
                    *flags]
        if self.kind == "gunicorn":
            return [*pin, sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", n,
                    "--no-control-socket", *common, *flags, self.app]
        if self.kind == "granian":
            return [*pin, sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", n,
                    "--host", "127.0.0.1", "--port", str(port), "--backlog",
                    str(self.backlog), "--working-dir", str(APPS_DIR), *flags, self.app]
        return [*pin, sys.executable, str(HERE / "bjoern_workers.py"), self.app, "--processes",
                n, "--backlog", str(self.backlog), *flags]


def free_port() -> int:
    """A port the kernel just had free on 127.0.0.1, for a server that cannot bind port 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(command: list[str], log_path: Path, **kwargs) -> subprocess.Popen:
    """Start a registered process in its own session, stderr (and stdout by default) to a log."""
    log = log_path.open("wb")
    kwargs.setdefault("stdout", log)
    try:
        proc = subprocess.Popen(command, stderr=log, start_new_session=True, **kwargs)
    finally:
        log.close()
    _live.add(proc)
    return proc


def terminate(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the leader, wait, then SIGKILL its whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # session leader: pgid == pid
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    _live.discard(proc)


def stop_all() -> None:
    """Stop every process this module started and has not stopped yet."""
    for proc in list(_live):
        terminate(proc, timeout=3)


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid``: the shards or workers of a manager/master."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "(comm)": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (VmRSS), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process: shows how the load split across workers."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # fields[11], [12]: utime, stime
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all processes on the machine have used (all cores), from /proc/stat."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Server:
    """One running server on an ephemeral 127.0.0.1 port; use as a context manager."""

    def __init__(self, spec: ServerSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.workers: list[int] = []

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start, learn the port from the log, and wait until every process serves."""
        env = {**os.environ, **dict(self.spec.program.env)}
        if self.spec.kind == "gshard" and self.spec.gshard_path:
            env["PYTHONPATH"] = self.spec.gshard_path
        # cwd: with ``python -m`` the current directory comes first on sys.path, and the
        # repository root would shadow a gshard given through PYTHONPATH.
        self.port = free_port() if self.spec.picks_port else 0
        self.proc = spawn(self.spec.command(self.port), self.log_path, env=env, cwd=APPS_DIR)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.program.name} exited with {self.proc.returncode} "
                                   f"while starting:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.spec.program.name} not ready after {START_TIMEOUT}s:\n"
                                   f"{self.log_text()[-3000:]}")
            if self._ready():
                return
            time.sleep(0.1)

    def _ready(self) -> bool:
        text = self.log_text()
        unix = self.spec.unix
        if unix is None:
            port = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
            if not port:
                return False
            self.port = int(port.group(1))
        elif f"Listening at: unix:{unix}" not in text:
            return False
        pattern, needed = _BOOTED[self.spec.kind]
        found = re.findall(pattern.format(n=self.spec.processes), text)
        booted = len(found) >= (needed or self.spec.processes)
        if not booted or len(children(self.proc.pid)) < self.spec.processes:
            return False
        try:
            if unix is None:
                with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                    response.read()
            elif not _answers_on_unix(unix):
                return False
        except OSError:
            return False
        self.workers = children(self.proc.pid)
        return True

    def worker_rss(self) -> dict[int, int]:
        """VmRSS in KiB of each current shard/worker (the manager/master is not counted)."""
        return {pid: rss_kib(pid) for pid in children(self.proc.pid)} if self.proc else {}

    def worker_cpu(self) -> dict[int, float]:
        """CPU seconds used so far by each shard/worker."""
        return {pid: cpu_seconds(pid) for pid in children(self.proc.pid)} if self.proc else {}

    def manager_cpu(self) -> float:
        """CPU seconds used so far by the manager/master."""
        return cpu_seconds(self.proc.pid) if self.proc else 0.0

    def problems(self) -> list[str]:
        """Signs of misbehaviour: replaced workers and error lines in the server's log."""
        found = []
        if self.proc and self.proc.poll() is not None:
            last = " | ".join(self.log_text().strip().splitlines()[-2:])
            found.append(f"{self.spec.program.name} exited with status {self.proc.returncode} "
                         f"during the run; its log ends: {last}")
        elif self.proc and children(self.proc.pid) != self.workers:
            found.append(f"workers changed from {self.workers} to {children(self.proc.pid)}")
        for line in self.log_text().splitlines():
            if re.search(r"\[(ERROR|CRITICAL)\]|Traceback|WORKER TIMEOUT", line):
                found.append(line.strip())
        return found

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)


def _answers_on_unix(path: str) -> bool:
    """Whether a server on the unix socket ``path`` answers ``GET /`` with a status line."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(path)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.1 ")


NGINX_CONF = """\
user {user};
worker_processes {workers};
daemon off;
pid {scratch}/nginx.pid;
error_log {scratch}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {scratch}/body;
    proxy_temp_path {scratch}/proxy;
    fastcgi_temp_path {scratch}/fastcgi;
    uwsgi_temp_path {scratch}/uwsgi;
    scgi_temp_path {scratch}/scgi;
    upstream app {{
        server unix:{socket};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering on;
        }}
    }}
}}
"""


class Nginx:
    """nginx on a free 127.0.0.1 port, passing every request to a server's unix socket
    over keep-alive upstream connections: a proxy on the same machine, as in production.
    Use as a context manager, after the server behind it is ready."""

    def __init__(self, socket_path: str, scratch: Path, workers: int = 1,
                 cpus: str | None = None) -> None:
        self.socket_path = socket_path
        self.scratch = scratch
        self.workers = workers
        self.cpus = cpus  # taskset's CPU list for nginx's processes
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Nginx:
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.scratch / "nginx.conf"
        # Its workers run as the benchmark's user (as root, nginx would make them
        # nobody, who may not connect to the server's socket).
        user = pwd.getpwuid(os.geteuid()).pw_name
        conf.write_text(NGINX_CONF.format(user=user, workers=self.workers, scratch=self.scratch,
                                          socket=self.socket_path, port=self.port))
        pin = ["taskset", "-c", self.cpus] if self.cpus else []
        self.proc = spawn([*pin, "nginx", "-c", str(conf), "-p", str(self.scratch)],
                          self.scratch / "nginx.log")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                log = (self.scratch / "nginx.log").read_text(errors="replace")
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {log[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                    response.read()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx not answering after {START_TIMEOUT}s") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            terminate(self.proc)

    def cpu(self) -> float:
        """CPU seconds nginx's master and workers have used so far."""
        if self.proc is None:
            return 0.0
        return cpu_seconds(self.proc.pid) + sum(cpu_seconds(pid)
                                                for pid in children(self.proc.pid))
