"""The process model: listeners per shard, signals, respawn, boot failure, binds, CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

from gshard.http import compiled
from gshard.version import __version__
from tests.support.paths import FIXTURE_APPS
from tests.support.processes import (
    Output,
    Server,
    child_pids,
    kill_group,
    launch_command,
    listening_sockets,
    need_descriptors,
    process_start_time,
    wait_until,
)
from tests.support.rawhttp import Closed, Conn, fetch, request_bytes

# --- helpers -------------------------------------------------------------------


def _listening_inodes() -> dict[int, int]:
    """inode -> port of every TCP socket in LISTEN state (IPv4 and IPv6)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    found[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _group_is_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a plain listener (SO_REUSEADDR, no SO_REUSEPORT) can take the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError:
            return False
    return True


def _pid_of_answer(port: int) -> int:
    response = fetch(port)
    assert response.status == 200
    return int(response.body)


# --- listeners -------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 3])
def test_one_listening_socket_per_shard(gshard_proc, shards):
    server = gshard_proc("hello:app", "--shards", str(shards))
    lines = listening_sockets(server.port)
    assert len(lines) == shards, lines
    assert all(f"127.0.0.1:{server.port} " in line for line in lines), lines


def test_four_shards_share_the_announced_port(gshard_proc):
    server = gshard_proc("pid_app:app", "--shards", "4", "--bind", "127.0.0.1:0")
    assert server.stderr.count(r"Listening at: ") == 1
    listening = _listening_inodes()
    pids = server.shard_pids()
    assert len(pids) == 4
    held = []
    for pid in pids:
        mine = [inode for inode in _socket_inodes(pid) if inode in listening]
        assert len(mine) == 1, f"shard {pid} holds listeners {mine}"
        assert listening[mine[0]] == server.port
        held += mine
    assert len(set(held)) == 4, "two shards share one listening socket"
    assert len(listening_sockets(server.port)) == 4
    answered = {_pid_of_answer(server.port) for _ in range(60)}
    assert answered <= set(pids)
    assert len(answered) >= 2  # 60 connections all to one of 4 shards: not by chance


# --- stopping --------------------------------------------------------------------


def test_sigterm_exits_0_leaves_no_process_and_frees_the_port(gshard_proc):
    server = gshard_proc("hello:app", "--shards", "2")
    assert requests.get(server.url, timeout=5).status_code == 200
    shards = {pid: process_start_time(pid) for pid in server.shard_pids()}
    assert len(shards) == 2
    assert not _port_is_free(server.port)  # the check below can tell
    assert server.stop(timeout=10) == 0
    assert _group_is_empty(server.pid), "processes of the server are still alive"
    for pid, started in shards.items():
        assert process_start_time(pid) != started, f"shard {pid} is still there"
    assert _port_is_free(server.port)
    server.stderr.wait_for(r"Shutting down gracefully", timeout=1)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_fast_stop_does_not_wait(gshard_proc, signum):
    server = gshard_proc("slow:app", "--shards", "2")
    conn = Conn.tcp(server.port, timeout=15)
    conn.send(request_bytes("GET", "/sleep?s=10&token=cut"))
    server.stderr.wait_for(r"START cut", timeout=5)
    started = time.monotonic()
    server.signal(signum)
    assert server.wait(timeout=10) == 0
    assert time.monotonic() - started < 3, "a fast stop waited for the slow request"
    with pytest.raises(Closed):  # the in-flight request was not waited for
        conn.read_response(timeout=5)
    conn.close()
    assert _group_is_empty(server.pid)
    assert _port_is_free(server.port)


@pytest.mark.timeout(30)
def test_killed_shard_is_replaced(gshard_proc):
    server = gshard_proc("pid_app:app", "--shards", "2")
    before = server.shard_pids()
    assert len(before) == 2
    victim = before[0]
    mark = len(server.stderr.lines)
    os.kill(victim, signal.SIGKILL)
    # Connections made meanwhile wait in the slot's listener (the manager
    # keeps it open) for the replacement: none is refused or reset.
    during = [_pid_of_answer(server.port) for _ in range(20)]
    assert victim not in during
    server.stderr.wait_for(rf"\(pid {victim}\) was killed by signal 9", timeout=10, start=mark)
    server.stderr.wait_for(r"Shard \d+ \(pid \d+\) is serving", timeout=10, start=mark)
    after = server.shard_pids()
    assert len(after) == 2
    assert victim not in after and before[1] in after
    (newcomer,) = set(after) - set(before)
    answered = [_pid_of_answer(server.port) for _ in range(40)]
    assert set(answered) <= set(after)
    assert newcomer in answered, "the replacement shard never answered"


@pytest.mark.timeout(30)
def test_app_failing_at_import_exits_4_once(gshard_proc):
    server = gshard_proc("broken_import:app", "--shards", "2", ready=False)
    started = time.monotonic()
    status = server.wait(timeout=15)
    elapsed = time.monotonic() - started
    assert status == 4
    assert elapsed < 5, f"took {elapsed:.1f}s to give up"
    wait_until(lambda: server.stderr.closed, 5, "all of stderr to be read")
    log = server.stderr.text
    assert server.stderr.count(r"Traceback \(most recent call last\)") == 1, log
    assert server.stderr.count(r"^RuntimeError: broken_import: the database URL is not set") \
        == 1, log
    assert server.stderr.count(r"Booting \d+ shards?") == 1, log
    assert "respawn" not in log.lower(), log
    assert "Ready:" not in log
    assert _group_is_empty(server.pid)


@pytest.mark.timeout(30)
def test_shards_leave_when_the_manager_is_killed(gshard_proc):
    server = gshard_proc("hello:app", "--shards", "2")
    shards = {pid: process_start_time(pid) for pid in server.shard_pids()}
    os.kill(server.pid, signal.SIGKILL)
    server.wait(timeout=5)
    wait_until(lambda: all(process_start_time(pid) != started
                           for pid, started in shards.items()), 8, "the orphaned shards to leave")
    assert _port_is_free(server.port)


def test_port_in_use_is_refused(gshard_proc):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        server = gshard_proc("hello:app", "--bind", f"127.0.0.1:{port}", ready=False)
        assert server.wait(timeout=10) == 1
    server.stderr.wait_for(rf"Cannot listen: .*127\.0\.0\.1:{port}", timeout=2)
    assert "Booting" not in server.stderr.text


@pytest.mark.timeout(30)
def test_worker_connections_bounds_concurrency_without_refusing(gshard_proc):
    """Past --worker-connections a shard stops accepting; the rest wait, none is refused."""
    server = gshard_proc("slow:app", "--shards", "1", "--worker-connections", "2")
    conns = [Conn.tcp(server.port, timeout=10) for _ in range(4)]
    started = time.monotonic()
    for i, conn in enumerate(conns):
        conn.send(request_bytes("GET", f"/sleep?s=0.6&token=w{i}",
                                headers=(("Connection", "close"),)))
    for i, conn in enumerate(conns):
        response = conn.read_response(timeout=10)
        assert response.status == 200 and response.body == f"slept w{i}".encode()
        conn.close()
    elapsed = time.monotonic() - started
    # Two at a time: two rounds of 0.6 s. Unbounded, all four would end in 0.6 s.
    assert 1.15 <= elapsed < 5, f"4 requests of 0.6 s took {elapsed:.2f}s"


def test_second_server_cannot_share_a_served_port(gshard_proc):
    """SO_REUSEPORT is for our own shards: another gshard on the port must fail, not
    silently take a share of its connections."""
    first = gshard_proc("pid_app:app", "--shards", "2")
    second = gshard_proc("pid_app:app", "--shards", "2", "--bind", f"127.0.0.1:{first.port}",
                         ready=False)
    assert second.wait(timeout=10) == 1
    second.stderr.wait_for(rf"Cannot listen: .*127\.0\.0\.1:{first.port}", timeout=2)
    assert len(listening_sockets(first.port)) == 2
    answered = {_pid_of_answer(first.port) for _ in range(20)}
    assert answered <= set(first.shard_pids())


# --- binds -------------------------------------------------------------------------


@pytest.fixture
def unix_path():
    directory = tempfile.mkdtemp(prefix="gshard-", dir="/tmp")  # short: sun_path is 108 bytes
    yield os.path.join(directory, "server.sock")
    shutil.rmtree(directory, ignore_errors=True)


def test_unix_socket_bind(gshard_proc, unix_path):
    server = gshard_proc("hello:app", "--shards", "2", "--bind", f"unix:{unix_path}",
                         ready=False)
    server.stderr.wait_for(rf"Listening at: unix:{unix_path} \(2 shards\)", timeout=20)
    server.stderr.wait_for(r"Ready: 2 shards serving", timeout=20)
    with Conn.unix(unix_path) as conn:
        for _ in range(2):
            conn.send(request_bytes("GET", "/"))
            response = conn.read_response()
            assert response.status == 200 and response.body == b"hello\n"
    for _ in range(5):
        with Conn.unix(unix_path) as conn:
            conn.send(request_bytes("GET", "/", "HTTP/1.0"))
            assert conn.read_response().body == b"hello\n"
    assert server.stop() == 0
    assert not os.path.exists(unix_path), "the socket file was left behind"


def test_unix_socket_stale_file_replaced_live_one_refused(gshard_proc, unix_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(unix_path)  # a socket file nobody listens on: a crashed server's
    stale.close()
    assert os.path.exists(unix_path)
    server = gshard_proc("hello:app", "--shards", "1", "--bind", f"unix:{unix_path}",
                         ready=False)
    server.stderr.wait_for(r"Ready: 1 shard serving", timeout=20)
    # A second server on the same path must not steal it from the first.
    second = gshard_proc("hello:app", "--shards", "1", "--bind", f"unix:{unix_path}",
                         ready=False)
    assert second.wait(timeout=10) == 1
    second.stderr.wait_for(r"Cannot listen: .*a server is listening there", timeout=2)
    with Conn.unix(unix_path) as conn:
        conn.send(request_bytes("GET", "/", "HTTP/1.0"))
        assert conn.read_response().body == b"hello\n"
    assert server.stop() == 0
    assert not os.path.exists(unix_path)


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_ipv6_loopback_bind(gshard_proc):
    server = gshard_proc("hello:app", "--shards", "2", "--bind", "[::1]:0")
    server.stderr.wait_for(rf"Listening at: http://\[::1\]:{server.port} ", timeout=1)
    response = requests.get(f"http://[::1]:{server.port}/", timeout=5)
    assert response.status_code == 200 and response.text == "hello\n"
    assert len(listening_sockets(server.port)) == 2
    assert server.stop() == 0
    assert _port_is_free(server.port, "::1")


# --- command line -----------------------------------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gshard", *args], cwd=FIXTURE_APPS,
                          capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("bad", [("--no-such-flag",), ("--shards", "0"), ("--keep-alive", "x")])
def test_bad_flag_exits_2_with_one_line_before_binding(bad):
    # Hold the port: had gshard tried to bind it, it would fail differently (status 1).
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = _run_cli("hello:app", "--bind", f"127.0.0.1:{port}", *bad)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gshard: error:"), lines
    assert bad[0].lstrip("-").split("-")[0] in lines[0]
    assert "Listening" not in result.stderr and result.stdout == ""


def test_version():
    result = _run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"gshard {__version__} ({compiled.build()}; Python ")
    assert __version__[0].isdigit()



@pytest.mark.timeout(30)
@pytest.mark.skipif(shutil.which("taskset") is None, reason="util-linux's taskset is missing")
def test_the_default_shard_count_is_the_cpus_the_process_may_use():
    """Pinned to one CPU (as a cpuset or a container's CPU limit pins it), gshard
    starts one shard, not one per CPU of the machine."""
    server = launch_command(["taskset", "-c", "0", sys.executable, "-m", "gshard", "hello:app",
                             "--bind", "127.0.0.1:0"])
    try:
        server.wait_ready()
        assert server.stderr.wait_for(r"Ready: 1 shard serving", 10)
        assert server.stderr.count(r"Starting one shard per CPU \(1\)") == 1
        assert len(child_pids(server.pid)) == 1
    finally:
        kill_group(server)


@pytest.mark.timeout(60)
def test_manager_works_with_descriptors_numbered_past_1023(tmp_path):
    """select() cannot watch descriptor 1024 or above; the manager's loop must
    still see signals, shard messages and control commands there."""
    need_descriptors(1400)  # gshard inherits the limit
    control = tmp_path / "control.sock"
    # Fill descriptors 3..1102 in the child before it becomes gshard, so every
    # descriptor gshard opens is numbered past 1023.
    fill_then_exec = (
        "import os, sys\n"
        "for _ in range(1100):\n"
        "    os.set_inheritable(os.open(os.devnull, os.O_RDONLY), True)\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'gshard', *sys.argv[1:]])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", fill_then_exec, "hello:app", "--shards", "2",
         "--bind", "127.0.0.1:0", "--control-socket", str(control)],
        cwd=FIXTURE_APPS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    server = Server(proc, Output(), Output())
    threading.Thread(target=server.stderr.pump, args=(proc.stderr,), daemon=True).start()
    try:
        port = server.wait_ready().port
        assert server.stderr.count(r"Ready: 2 shards serving") == 1
        sockets = [fd for fd in os.listdir(f"/proc/{proc.pid}/fd")
                   if os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith("socket:")]
        assert sockets and min(int(fd) for fd in sockets) >= 1024
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        reload = subprocess.run(
            [sys.executable, "-m", "gshard", "reload", "--control-socket", str(control),
             "--timeout", "30"], capture_output=True, text=True, timeout=40,
        )
        assert reload.returncode == 0, reload.stdout + reload.stderr + server.stderr.text
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        assert server.stop() == 0
    finally:
        kill_group(server)
