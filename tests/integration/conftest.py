"""A fixture that runs real ``gshard`` processes on ephemeral loopback ports.

Each server is started with ``--bind 127.0.0.1:0`` in its own session; the
port is read from the manager's "Listening at" log line (no free-port
guessing) and readiness from its "Ready" line (no sleeping). Output is read by
threads into memory, so a chatty server never blocks on a full pipe, and
tests can wait for log lines. At teardown every process group still alive is
killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from tests.conftest import FIXTURE_APPS
from tests.integration.loadgen import APP, SERVER_ENV, deploy

START_TIMEOUT = 20.0

T = TypeVar("T")


@dataclass
class Output:
    """Lines a stream produced, readable while the process runs."""

    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False

    def pump(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match:
        """The first line from index ``start`` matching ``pattern``; fails the test on timeout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            index = start
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    break
                self.cond.wait(remaining)
        raise AssertionError(
            f"no line matching {pattern!r} within {timeout}s; output was:\n" + self.text
        )

    @property
    def text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self.cond:
            return sum(1 for line in self.lines if regex.search(line))


@dataclass
class Server:
    proc: subprocess.Popen
    stdout: Output
    stderr: Output
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def wait_ready(self) -> Server:
        """Wait for the "Listening at" line (which gives the port) and the "Ready" line."""
        match = self.stderr.wait_for(r"Listening at: https?://[^ ]*:(\d+)", START_TIMEOUT)
        self.port = int(match.group(1))
        self.stderr.wait_for(r"Ready: \d+ shards serving", START_TIMEOUT)
        return self

    def shard_pids(self) -> list[int]:
        """PIDs of the manager's live children (its shards)."""
        return child_pids(self.pid)


def child_pids(pid: int) -> list[int]:
    """PIDs of the live children of ``pid`` (a manager's are its shards)."""
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def process_title(pid: int) -> str:
    """The command line ``pid`` shows (gshard sets its processes' titles); "" once it is gone.

    A process exiting while its cmdline is read fails the read with ESRCH
    rather than the open with ENOENT: either way it has no title.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def listening_sockets(port: int) -> list[str]:
    """``ss``'s line for each socket listening on TCP ``port`` (each SO_REUSEPORT listener)."""
    if shutil.which("ss") is None:
        pytest.skip("`ss` (iproute2) is not installed; CI installs it")
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def need_descriptors(count: int) -> None:
    """Let this test process hold ``count`` descriptors (raising its soft limit
    up to the hard one), or skip the test saying why it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        target = count if hard == resource.RLIM_INFINITY else min(count, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        pytest.skip(f"the open files hard limit {soft} < {count}")


def wait_until(condition: Callable[[], T], timeout: float, what: str,
               interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something true, and return that.

    For states no log line announces (a process gone, a pidfile rewritten, a
    count of shards); fails the test naming ``what`` after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return result


def launch(
    app: str,
    *args: str,
    cwd: str | os.PathLike = FIXTURE_APPS,
    env: dict[str, str] | None = None,
) -> Server:
    """Start ``python -m gshard APP ARGS...`` without waiting for anything."""
    cmd = [sys.executable, "-m", "gshard", app, *args]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    server = Server(proc, Output(), Output())
    for output, stream in ((server.stdout, proc.stdout), (server.stderr, proc.stderr)):
        threading.Thread(target=output.pump, args=(stream,), daemon=True).start()
    return server


def kill_group(server: Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=10)


@pytest.fixture
def gshard_proc() -> Iterator[Callable[..., Server]]:
    """Factory: ``gshard_proc("app:app", "--shards", "2")`` -> a ready ``Server``.

    ``--bind 127.0.0.1:0`` is added unless the arguments bind themselves;
    ``ready=False`` returns as soon as the process is started.
    """
    servers: list[Server] = []

    def start(app: str, *args: str, ready: bool = True, **kwargs) -> Server:
        if not any(a in ("-b", "--bind") or a.startswith("--bind=") for a in args):
            args = ("--bind", "127.0.0.1:0", *args)
        server = launch(app, *args, **kwargs)
        servers.append(server)
        return server.wait_ready() if ready else server

    yield start
    for server in servers:
        kill_group(server)


@pytest.fixture
def deployed_gshard(gshard_proc, tmp_path) -> Callable[..., Server]:
    """Factory: deploys loadgen's application into ``tmp_path`` and starts gshard on it.

    ``deployed_gshard("--shards", "2")`` -> a ready ``Server`` answering
    "v1 PID"; the test deploys later versions into the same ``tmp_path``.
    ``env`` adds to ``SERVER_ENV``; other keywords go to ``gshard_proc``.
    """

    def start(*args: str, version: str = "v1", env: dict[str, str] | None = None,
              **kwargs) -> Server:
        deploy(tmp_path, version)
        return gshard_proc(APP, *args, cwd=tmp_path, env={**SERVER_ENV, **(env or {})},
                           **kwargs)

    return start


TCP_MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


@pytest.fixture
def no_request_migration() -> Iterator[None]:
    """Run with ``net.ipv4.tcp_migrate_req`` = 0, or skip saying why not.

    With 1, the kernel moves connections queued on a closing listener to
    another one of the group: it would hide a listener closed too early.
    Tests that close listeners under load use it:
    ``pytestmark = pytest.mark.usefixtures("no_request_migration")``.
    """
    try:
        with open(TCP_MIGRATE_REQ) as handle:
            value = handle.read().strip()
    except FileNotFoundError:
        yield  # a kernel before 5.14 never migrates
        return
    if value == "0":
        yield
        return
    if os.geteuid() != 0:
        pytest.skip(f"{TCP_MIGRATE_REQ} is {value} and only root may set it to 0")
    try:
        with open(TCP_MIGRATE_REQ, "w") as handle:
            handle.write("0")
    except OSError as exc:
        pytest.skip(f"{TCP_MIGRATE_REQ} is {value} and cannot be set to 0: {exc}")
    try:
        yield
    finally:
        with open(TCP_MIGRATE_REQ, "w") as handle:
            handle.write(value)
