"""Socket activation through the real ``systemd-socket-activate`` (Debian's systemd).

``systemd-socket-activate`` binds the sockets, waits for the first connection,
then execs gshard with ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES`` set, as
systemd does for a ``.socket`` unit. It cannot set SO_REUSEPORT on a socket it
binds (systemd 252 has no option for ``ReusePort=``), but it passes on
descriptors it was itself handed through ``LISTEN_FDS``. So the ReusePort case
is tested with a socket this test creates with SO_REUSEPORT (bound to port 0,
so no port is guessed), put at descriptor 3 by a small exec wrapper and passed
through ``systemd-socket-activate`` to gshard: a real fork and two real execs.

Which listening socket each shard accepts on is read from the kernel: the
inodes of the port's listening sockets in ``/proc/net/tcp`` against the socket
descriptors each shard holds (``/proc/PID/fd``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.loadgen import (
    APP,
    SERVER_ENV,
    Load,
    deploy,
    fresh_request,
)
from tests.support.processes import START_TIMEOUT, Output, Server, kill_group
from tests.support.rawhttp import Conn, request_bytes

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"

pytestmark = pytest.mark.skipif(
    not os.access(SOCKET_ACTIVATE, os.X_OK),
    reason="systemd-socket-activate is not installed (Debian: apt-get install systemd)",
)

# Puts the descriptor given as argv[1] at 3 and execs the rest with LISTEN_FDS=1
# and its own pid in LISTEN_PID: what systemd does for the process it starts.
_PASS_AS_FD_3 = (
    "import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); fd == 3 or os.close(fd); "
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)

# Answers "clean PID", or the LISTEN_* variables the shard still sees instead of "clean".
_ENV_APP = '''\
import os

def app(environ, start_response):
    seen = [n for n in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if n in os.environ]
    body = f"{'+'.join(seen) or 'clean'} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture
def activate(tmp_path) -> Iterator[Callable[..., Server]]:
    """Factory: gshard ARGS under ``systemd-socket-activate``, not yet triggered.

    ``listen``: addresses systemd-socket-activate binds itself; ``passed``: a
    socket of this test it passes through as descriptor 3.
    """
    (tmp_path / "env_app.py").write_text(_ENV_APP)
    servers: list[Server] = []

    def start(*args: str, listen: tuple[str, ...] = (), passed: socket.socket | None = None,
              fdname: str = "web") -> Server:
        # It passes its child only TERM, PATH, USER and HOME, and what --setenv names.
        command = [SOCKET_ACTIVATE, f"--fdname={fdname}", *(f"--listen={a}" for a in listen),
                   *(f"--setenv={name}={value}" for name, value in SERVER_ENV.items()),
                   sys.executable, "-m", "gshard", *args]
        pass_fds: tuple[int, ...] = ()
        if passed is not None:
            command = [sys.executable, "-c", _PASS_AS_FD_3, str(passed.fileno()), *command]
            pass_fds = (passed.fileno(),)
        proc = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, pass_fds=pass_fds,
        )
        server = Server(proc, Output(), Output())
        servers.append(server)
        for output, stream in ((server.stdout, proc.stdout), (server.stderr, proc.stderr)):
            threading.Thread(target=output.pump, args=(stream,), daemon=True).start()
        return server

    yield start
    for server in servers:
        kill_group(server)


def _reuseport_socket() -> socket.socket:
    """A listening socket as a ``.socket`` unit with ``ReusePort=yes`` makes it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _reuseport_socket_of_nobody() -> socket.socket:
    """A SO_REUSEPORT listening socket created by another user (nobody).

    The kernel lets a socket join a SO_REUSEPORT group only if it belongs to
    the user of the group's sockets: what a .socket unit (made by root) and a
    service with ``User=`` run into. gshard here runs as root and the socket
    is nobody's, which the same rule refuses.
    """
    ours, theirs = socket.socketpair()
    with ours, theirs:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                sock = _reuseport_socket()
                socket.send_fds(theirs, [b"fd"], [sock.fileno()])
            finally:
                os._exit(0)
        _, fds, _, _ = socket.recv_fds(ours, 16, 1)
        os.waitpid(pid, 0)
    return socket.socket(fileno=fds[0])


def _activate_on_a_free_port(activate, *args: str) -> tuple[Server, int]:
    """Start systemd-socket-activate listening on 127.0.0.1:PORT, a port just free.

    It needs an explicit port, so one is taken from the kernel (bind to port 0,
    close) right before; another process could take it in between, in which
    case systemd-socket-activate exits and another port is tried.
    """
    for _ in range(5):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = activate(*args, listen=(f"127.0.0.1:{port}",))
        line = server.stderr.wait_for(r"Listening on .* as 3\.|Failed to", START_TIMEOUT)
        if line.group(0).startswith("Listening"):
            return server, port
        kill_group(server)
    raise AssertionError("systemd-socket-activate found no free port in 5 tries")


def _first_request(port: int):
    """Connect now (systemd-socket-activate then execs gshard) and wait for the answer."""
    return ThreadPoolExecutor(1).submit(fresh_request, port, "/")


def _wait_serving(server: Server, shards: int) -> None:
    server.stderr.wait_for(rf"Ready: {shards} shards? serving", START_TIMEOUT)


def _listening_inodes(port: int) -> set[int]:
    """The inodes of the sockets listening on ``port`` (any address), from the kernel."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(int(fields[9]))
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _queues_by_shard(server: Server, port: int) -> dict[int, set[int]]:
    """For each shard: the listening sockets of ``port`` it accepts on."""
    listening = _listening_inodes(port)
    return {pid: _socket_inodes(pid) & listening for pid in server.shard_pids()}


def _pids_answering(port: int, expected: set[int], tries: int = 400) -> set[int]:
    """Fresh connections until every pid in ``expected`` answered (or ``tries`` ran out)."""
    seen: set[int] = set()
    for _ in range(tries):
        result = fresh_request(port, "/")
        assert result.ok, result.error
        seen.add(result.pid)
        if seen >= expected:
            break
    return seen


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_reuseport_socket_gets_one_sibling_per_shard(activate):
    passed = _reuseport_socket()
    port = passed.getsockname()[1]
    server = activate("env_app:app", "--shards", "3", passed=passed)
    passed.close()  # systemd-socket-activate and gshard hold it now
    server.stderr.wait_for(r"Received 1 descriptors", START_TIMEOUT)
    first = _first_request(port)
    _wait_serving(server, 3)
    result = first.result(timeout=15)
    assert result.ok, result.error  # queued before gshard started, and served
    assert result.version == "clean"  # the shard does not see LISTEN_*
    server.stderr.wait_for(
        rf"Socket activation: 'web' at http://127.0.0.1:{port} has SO_REUSEPORT: each of "
        r"the 3 shards gets its own socket in its group \(2 added\)", 1)
    server.stderr.wait_for(rf"Listening at: http://127.0.0.1:{port} \(3 shards\)", 1)

    queues = _queues_by_shard(server, port)
    assert len(_listening_inodes(port)) == 3
    assert all(len(inodes) == 1 for inodes in queues.values()), queues
    assert len(set.union(*queues.values())) == 3, queues  # each shard its own queue
    assert _pids_answering(port, set(queues)) == set(queues)

    # Scaling joins one more socket to the passed socket's group (steering included).
    server.signal(signal.SIGTTIN)
    server.stderr.wait_for(r"Shard 3 \(pid \d+\) is serving", START_TIMEOUT)
    _wait_for(lambda: len(server.shard_pids()) == 4, "the fourth shard")
    assert len(_listening_inodes(port)) == 4
    queues = _queues_by_shard(server, port)
    assert len(set.union(*queues.values())) == 4, queues
    assert _pids_answering(port, set(queues)) == set(queues)
    assert server.stop() == 0


# Run in a network namespace of its own (only its loopback), where listening
# on the wildcard address reaches nothing outside: a dual-stack [::] socket
# as systemd's ListenStream=PORT makes it, given siblings by gshard, and 100
# connections over each family. Prints how many each socket accepted.
_DUAL_STACK_SIBLINGS = """
import json, socket, subprocess
from gshard.sockets.listener import add_siblings, systemd_listener
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
passed = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
passed.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
passed.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
passed.bind(("::", 0))
passed.listen(256)
listener_set = systemd_listener([passed], "web")
add_siblings(listener_set, 2, 256)
port = listener_set.port
accepted = {}
for host in ("127.0.0.1", "::1"):
    clients = [socket.create_connection((host, port), timeout=5) for _ in range(100)]
    for index, sock in enumerate(listener_set.sockets):
        sock.setblocking(False)
        while True:
            try:
                sock.accept()[0].close()
            except BlockingIOError:
                break
            accepted[f"{host} {index}"] = accepted.get(f"{host} {index}", 0) + 1
    for client in clients:
        client.close()
print(json.dumps(accepted))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None
                    or shutil.which("ip") is None,
                    reason="needs root, unshare and ip for a private network namespace")
def test_siblings_of_a_dual_stack_socket_join_its_group():
    """A sibling must copy IPV6_V6ONLY: otherwise it forms a group of its own, takes
    no connection, and the shards would share one queue while the log says not."""
    result = subprocess.run(["unshare", "-n", sys.executable, "-c", _DUAL_STACK_SIBLINGS],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    accepted = json.loads(result.stdout)
    for key in ("127.0.0.1 0", "127.0.0.1 1", "::1 0", "::1 1"):
        assert accepted.get(key, 0) > 0, accepted  # both sockets, both families
    assert sum(accepted.values()) == 200, accepted


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a socket as nobody")
def test_siblings_of_another_users_socket_fall_back_to_sharing_it(activate):
    passed = _reuseport_socket_of_nobody()
    port = passed.getsockname()[1]
    server = activate("env_app:app", "--shards", "2", passed=passed)
    passed.close()
    server.stderr.wait_for(r"Received 1 descriptors", START_TIMEOUT)
    first = _first_request(port)
    _wait_serving(server, 2)
    assert first.result(timeout=15).ok
    server.stderr.wait_for(
        r"has SO_REUSEPORT, but gshard cannot add sockets to its group: cannot bind "
        rf"127.0.0.1:{port}: Address already in use \(a SO_REUSEPORT group takes only "
        r"sockets of the same user\); the 2 shards share its one accept queue", 1)
    listening = _listening_inodes(port)
    assert len(listening) == 1
    queues = _queues_by_shard(server, port)
    assert len(queues) == 2 and all(inodes == listening for inodes in queues.values()), queues
    assert server.stop() == 0


def test_a_socket_without_reuseport_is_shared_by_the_shards(activate, tmp_path):
    unused = tmp_path / "unused.sock"
    server, port = _activate_on_a_free_port(
        activate, "env_app:app", "--shards", "2", "--bind", f"unix:{unused}")
    first = _first_request(port)
    _wait_serving(server, 2)
    assert first.result(timeout=15).ok
    server.stderr.wait_for(
        rf"Socket activation: 'web' at http://127.0.0.1:{port} has no SO_REUSEPORT: the 2 "
        r"shards share its one accept queue, no steering \(set ReusePort=yes", 1)
    # The passed sockets replace --bind, and the log says so.
    server.stderr.wait_for(rf"--bind unix:{unused} is not used", 1)
    assert not unused.exists()

    listening = _listening_inodes(port)
    assert len(listening) == 1
    queues = _queues_by_shard(server, port)
    assert len(queues) == 2 and all(inodes == listening for inodes in queues.values()), queues
    for _ in range(20):
        assert fresh_request(port, "/").ok

    # Scaling adds a shard on the same socket; there is no group to steer.
    server.signal(signal.SIGTTIN)
    server.stderr.wait_for(r"Shard 2 \(pid \d+\) is serving", START_TIMEOUT)
    _wait_for(lambda: len(server.shard_pids()) == 3, "the third shard")
    queues = _queues_by_shard(server, port)
    assert all(inodes == listening for inodes in queues.values()), queues
    assert _listening_inodes(port) == listening
    for _ in range(20):
        assert fresh_request(port, "/").ok
    assert server.stop() == 0
    assert "Traceback" not in server.stderr.text


def test_a_unix_socket_is_served_and_left_to_systemd(activate, tmp_path):
    path = str(tmp_path / "web.sock")
    server = activate("env_app:app", "--shards", "2", listen=(path,), fdname="api")
    server.stderr.wait_for(r"Listening on .* as 3\.", START_TIMEOUT)
    with Conn.unix(path) as conn:
        conn.send(request_bytes("GET", "/"))
        _wait_serving(server, 2)
        response = conn.read_response()
    assert response.status == 200 and response.body.startswith(b"clean ")
    server.stderr.wait_for(
        rf"Socket activation: 'api' at unix:{path}: the 2 shards share its one accept queue", 1)
    assert server.stop() == 0
    # The .socket unit owns the file: gshard leaves it for systemd to remove.
    assert os.path.exists(path)


@pytest.mark.timeout(90)
# With migration on, the kernel would hide a listener closed by the reload.
@pytest.mark.usefixtures("no_request_migration")
@pytest.mark.parametrize("reuseport", [True, False], ids=["reuseport", "shared"])
def test_a_reload_under_load_loses_nothing(activate, tmp_path, reuseport):
    deploy(tmp_path, "v1")
    if reuseport:
        passed = _reuseport_socket()
        port = passed.getsockname()[1]
        server = activate(APP, "--shards", "2", passed=passed)
        passed.close()
        server.stderr.wait_for(r"Received 1 descriptors", START_TIMEOUT)
    else:
        server, port = _activate_on_a_free_port(activate, APP, "--shards", "2")
    first = _first_request(port)
    _wait_serving(server, 2)
    assert first.result(timeout=15).ok
    listening = _listening_inodes(port)
    with Load(port, fresh=12, keepalive=4, slow=2) as load:
        _wait_for(lambda: sum(r.ok for r in load.snapshot()) > 100, "load to run")
        for version in ("v2", "v3"):
            deploy(tmp_path, version)
            marker = len(server.stderr.lines)
            server.signal(signal.SIGHUP)
            server.stderr.wait_for(r"Generation \d+ is serving", 30, start=marker)
        # The draining generation may still answer requests on its keep-alive
        # connections and /slow ones for a while; after that only v3 answers.
        settled = time.monotonic() + 3.0
        _wait_for(lambda: sum(r.started > settled for r in load.snapshot()) > 50,
                  f"requests after the reloads ({load.summary()})", 15)
    assert not load.failures(), load.summary()
    assert _listening_inodes(port) == listening  # no listener was closed or replaced
    assert {r.version for r in load.snapshot() if r.ok and r.started > settled} == {"v3"}
    assert server.stop() == 0


@pytest.mark.timeout(60)
def test_an_upgrade_inherits_the_activated_sockets(activate, tmp_path):
    passed = _reuseport_socket()
    port = passed.getsockname()[1]
    pidfile = tmp_path / "g.pid"
    server = activate("env_app:app", "--shards", "2", "--pid", str(pidfile), passed=passed)
    passed.close()
    server.stderr.wait_for(r"Received 1 descriptors", START_TIMEOUT)
    first = _first_request(port)
    _wait_serving(server, 2)
    assert first.result(timeout=15).ok
    listening = _listening_inodes(port)
    assert len(listening) == 2

    server.signal(signal.SIGUSR2)
    server.stderr.wait_for(r"Upgrade complete", 30)
    assert server.wait(20) == 0  # the old manager drained and left
    successor = int(pidfile.read_text())
    with open(f"/proc/{successor}/environ", "rb") as handle:
        assert b"LISTEN_" not in handle.read()
    # The same sockets, the passed one and its sibling, one per new shard.
    assert _listening_inodes(port) == listening
    with open(f"/proc/{successor}/task/{successor}/children") as handle:
        shards = [int(pid) for pid in handle.read().split()]
    queues = {pid: _socket_inodes(pid) & listening for pid in shards}
    assert len(queues) == 2 and set.union(*queues.values()) == listening, queues
    seen = _pids_answering(port, set(shards))
    assert seen == set(shards)
    assert fresh_request(port, "/").version == "clean"
    os.kill(successor, signal.SIGTERM)
    _wait_for(lambda: not os.path.exists(pidfile), "the new manager to stop", 15)


def test_a_passed_socket_that_is_not_a_stream_listener_is_refused(activate):
    datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagram.bind(("127.0.0.1", 0))
    server = activate("env_app:app", passed=datagram)
    server.stderr.wait_for(r"Received 1 descriptors", START_TIMEOUT)
    datagram.sendto(b"wake up", datagram.getsockname())  # what triggers the exec
    datagram.close()
    assert server.wait(START_TIMEOUT) == 1
    server.stderr.wait_for(r"Cannot listen: socket 'web' passed by systemd is not a listening "
                           r"TCP or unix stream socket", 1)


def test_variables_meant_for_another_process_are_ignored(gshard_proc):
    server = gshard_proc("pid_app:app", "--shards", "1",
                         env={"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    server.stderr.wait_for(r"Socket activation ignored: LISTEN_FDS is meant for process 1, "
                           rf"not this one \({server.pid}\)", 1)
    with Conn.tcp(server.port) as conn:  # served on --bind, as without systemd
        conn.send(request_bytes("GET", "/"))
        assert conn.read_response().status == 200
