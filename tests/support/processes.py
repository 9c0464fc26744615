"""Starting and watching real ``gshard`` processes.

``launch`` starts ``python -m gshard`` in its own session; a ``Server`` reads
its address from the manager's "Listening at" log line (no free-port
guessing) and its readiness from the "Ready" line (no sleeping). Output is
read by threads into memory (``Output``), so a chatty server never blocks on a
full pipe and tests can wait for log lines. ``kill_group`` ends a server and
everything it started. The fixtures that use these (``gshard_proc`` and its
kin) are in ``tests/integration/conftest.py``; the rest of this module reads
what processes show through /proc and ``ss``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
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
from pathlib import Path
from typing import IO, TypeVar

import pytest

from gshard.manager import discovery
from tests.support.paths import FIXTURE_APPS

START_TIMEOUT = 20.0

T = TypeVar("T")


@dataclass
class Output:
    """Lines a stream produced, readable while the process runs."""

    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False

    def pump(self, stream: IO[bytes]) -> None:
        """Read ``stream`` to its end (run in a thread of its own)."""
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

    def mark(self) -> int:
        """Where the output is now: give it to ``since`` (or ``wait_for(start=)``) to
        look only at what came after, as tests sharing a server must."""
        with self.cond:
            return len(self.lines)

    def since(self, mark: int) -> str:
        """The lines from ``mark`` on, joined."""
        with self.cond:
            return "\n".join(self.lines[mark:])

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self.cond:
            return sum(1 for line in self.lines if regex.search(line))


@dataclass
class Server:
    """A started ``gshard`` manager; where it listens once ``wait_ready`` has read it."""

    proc: subprocess.Popen
    stdout: Output
    stderr: Output
    port: int = 0  # of the first TCP listener; 0 for a unix socket
    unix_path: str | None = None  # the socket file, when the first listener is one

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
        """Wait for the first "Listening at" line and the "Ready" line.

        The first gives the address: ``http(s)://HOST:PORT`` sets ``port``,
        ``unix:PATH`` sets ``unix_path``.
        """
        match = self.stderr.wait_for(r"Listening at: (?:https?://[^ ]*:(\d+)|unix:(\S+)) ",
                                     START_TIMEOUT)
        if match.group(1) is not None:
            self.port = int(match.group(1))
        else:
            self.unix_path = match.group(2)
        self.stderr.wait_for(r"Ready: \d+ shards? serving", START_TIMEOUT)
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


def _stat_after_name(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces
    and parentheses), from the state on; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def process_state(pid: int) -> str | None:
    """The state letter (R, S, T, Z...); None once the process is gone."""
    fields = _stat_after_name(pid)
    return fields[0] if fields else None


def process_start_time(pid: int) -> str | None:
    """When the process started (to tell it from a later one with its PID); None once gone."""
    fields = _stat_after_name(pid)
    return fields[19] if fields else None


def wait_state(pid: int, dead: bool = False, stopped: bool = False,
               timeout: float = 5.0) -> float:
    """Wait until ``pid`` is dead (a zombie or reaped) or stopped (T); the time it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        state = process_state(pid)
        if (dead and state in (None, "Z")) or (stopped and state in ("T", "t")):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still in state {state!r} after {timeout}s")
        time.sleep(0.002)


def status_document(*where: str) -> dict:
    """``gshard status --json`` of the manager ``where`` names (``--pid FILE``,
    ``--control-socket PATH``), parsed; the command must succeed."""
    done = subprocess.run([sys.executable, "-m", "gshard", "status", "--json", *where],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


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
    return launch_command([sys.executable, "-m", "gshard", app, *args], cwd=cwd, env=env)


def launch_command(
    cmd: list[str],
    cwd: str | os.PathLike = FIXTURE_APPS,
    env: dict[str, str] | None = None,
) -> Server:
    """Start any command that runs a gshard (``python -c "gshard.run(...)"`` too) in a
    session of its own, its output read into memory, without waiting for anything."""
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


# The console script a user runs. Unlike ``python -m gshard``, it does not put the
# start directory on sys.path: gshard must, before a config file imports from it.
GSHARD_SCRIPT = Path(sys.executable).with_name("gshard")


def launch_script(*args: str, cwd: str | os.PathLike = FIXTURE_APPS,
                  env: dict[str, str] | None = None) -> Server:
    """Start ``gshard ARGS...`` as a user types it, without waiting for anything."""
    return launch_command([str(GSHARD_SCRIPT), *args], cwd=cwd, env=env)


_PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """Make this test process the subreaper of what it starts, as a container's init is:
    a process a manager leaves behind becomes this one's child (and a zombie here,
    since nothing reaps it) instead of vanishing into the system's init."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def kill_group(server: Server) -> None:
    """SIGKILL the server's whole session (manager, template, shards), then reap the manager.

    Each server runs in its own session, so nothing it forked outlives a test,
    whatever state the test left it in.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=10)
    # SIGKILL ends a process some time after it is sent: wait until nothing of the
    # session is left (an upgrade's successor, a shard), so nothing still listens.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not session_members(server.proc.pid), 10, "the session to end")
    # A killed manager cannot remove its control socket: the commands' own
    # search removes every name nobody answers on any more.
    discovery.running()


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies, already dead, are not counted)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_after_name(int(entry))
        # After the name: state, ppid, pgrp, session...
        if fields is not None and fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry))
    return members
