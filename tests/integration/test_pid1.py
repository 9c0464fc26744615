"""gshard as PID 1 of a container: its own PID namespace, made by util-linux's ``unshare``.

A container runtime starts the image's command as PID 1 of a new PID
namespace. PID 1 inherits every orphan of the namespace (the application's
helpers whose parents exit), must reap them or they stay zombies, and gets no
default action for SIGTERM: only a handler makes it stop. The test makes the
same namespace without a runtime (``unshare --pid --fork --mount-proc``, as
root, or inside a user namespace where unprivileged ones are allowed) and
plays the container's life: orphans left by the application, then the
runtime's SIGTERM to PID 1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.processes import (
    Server,
    child_pids,
    kill_group,
    launch_command,
    process_state,
    status_document,
    wait_until,
)
from tests.support.rawhttp import Conn

WAIT = 15.0


def unshare_prefix() -> list[str]:
    """The command that makes a PID namespace here, or a skip saying why it cannot."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    if os.geteuid() != 0:
        prefix[1:1] = ["--user", "--map-root-user"]  # an unprivileged user namespace
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.strip()}")
    return prefix


@pytest.fixture
def pid1(tmp_path) -> Iterator[tuple[Server, int]]:
    """gshard started as PID 1 of a new PID namespace: (the unshare process, gshard's pid
    as this namespace sees it)."""
    control = str(tmp_path / "control.sock")
    server = launch_command([*unshare_prefix(), sys.executable, "-m", "gshard", "orphan_app:app",
                             "--bind", "127.0.0.1:0", "--shards", "2", "--shutdown-delay", "2",
                             "--control-socket", control])
    try:
        server.wait_ready()
        (manager,) = wait_until(lambda: child_pids(server.pid), WAIT, "unshare's child")
        yield server, manager
    finally:
        kill_group(server)



def get(port: int, path: str = "/") -> tuple[int, bytes, str | None]:
    with Conn.tcp(port) as conn:
        conn.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        response = conn.read_response()
        return response.status, response.body, response.header("Connection")


@pytest.mark.timeout(90)
def test_as_pid1_orphans_are_reaped_never_taken_for_shards_and_sigterm_stops_it(pid1,
                                                                                 tmp_path):
    server, manager = pid1
    control = str(tmp_path / "control.sock")
    before = status_document("--control-socket", control)
    assert before["manager"]["pid"] == 1  # as the namespace sees it
    shards = {shard["pid"] for shard in before["shards"]}
    assert len(shards) == 2

    for _ in range(10):
        assert get(server.port, "/orphan") == (200, b"orphaned\n", None)
    # Each orphan is adopted by PID 1, lives 1.5 s and exits with status 3: the
    # manager reaps it (no zombie stays) and takes it for nothing else.
    assert len(child_pids(manager)) > 2, "no orphan was adopted by PID 1"
    wait_until(lambda: len(child_pids(manager)) == 2, WAIT, "only the shards to be left")
    assert [pid for pid in child_pids(manager) if process_state(pid) == "Z"] == []
    after = status_document("--control-socket", control)
    assert {shard["pid"] for shard in after["shards"]} == shards
    assert after["restarts"] == [] and after["restart_counts"] == {}
    log = server.stderr.text
    assert "Shard" not in log.split("Ready:", 1)[1], log  # no crash, no respawn

    # The runtime stops the container: SIGTERM to PID 1, which a process
    # there only gets by handling it. The lame duck serves, then it drains.
    os.kill(manager, signal.SIGTERM)
    server.stderr.wait_for(r"lame duck", WAIT)
    # Served all along; once the shards have heard, with Connection: close.
    wait_until(lambda: get(server.port) == (200, b"hello\n", "close"), WAIT,
               "a response with Connection: close")
    assert server.wait(WAIT) == 0  # unshare exits with PID 1's status
    assert "The lame-duck period is over; draining" in server.stderr.text
