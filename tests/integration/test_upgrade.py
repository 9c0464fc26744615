"""SIGUSR2 upgrades gshard itself: a new manager takes over the listeners.

The new manager boots its generation on the inherited sockets; only when it
serves does the old manager drain and exit, and the pidfile follows. If the
new manager cannot boot, the old one keeps serving.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time

import pytest

from tests.integration.conftest import Server

APP_V1 = '''
import os

VERSION = "{version}"


def app(environ, start_response):
    body = f"{{VERSION}} {{os.getpid()}} {{os.getppid()}}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def deploy(directory, version: str) -> None:
    (directory / "deployed.py").write_text(APP_V1.format(version=version))


def deploy_broken(directory) -> None:
    (directory / "deployed.py").write_text('raise RuntimeError("deploy is broken")\n')


class Load:
    """Fresh connections and keep-alive clients hammering the server until stopped.

    Every request must answer 200; anything else is recorded as a failure.
    """

    def __init__(self, port: int, fresh: int = 8, keepalive: int = 4, seconds: float = 30) -> None:
        self.port = port
        self.deadline = time.monotonic() + seconds
        self.stop_event = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.bodies: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i < keepalive,), daemon=True)
                        for i in range(fresh + keepalive)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _client(self, keepalive: bool) -> None:
        conn = None
        for _ in range(100_000):
            if self.stop_event.is_set() or time.monotonic() > self.deadline:
                break
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                headers = {} if keepalive else {"Connection": "close"}
                conn.request("GET", "/", headers=headers)
                response = conn.getresponse()
                body = response.read().decode()
                if response.status != 200:
                    raise AssertionError(f"status {response.status}")
                with self.lock:
                    self.ok += 1
                    self.bodies.append((time.monotonic(), body))
                if not keepalive or response.will_close:
                    conn.close()
                    conn = None
            except Exception as exc:  # every failure counts, whatever its kind
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def versions_since(self, moment: float) -> set[str]:
        with self.lock:
            return {body.split()[0] for at, body in self.bodies if at > moment}


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        # The state follows the command name, which may hold spaces and parentheses.
        return handle.read().rpartition(")")[2].split()[0] != "Z"


def _start(gshard_proc, tmp_path, *args: str) -> Server:
    deploy(tmp_path, "v1")
    pidfile = tmp_path / "g.pid"
    return gshard_proc("deployed:app", "--shards", "2", "--pid", str(pidfile), *args,
                       cwd=tmp_path)


@pytest.mark.timeout(60)
def test_upgrade_under_load_hands_over_without_a_failed_request(gshard_proc, tmp_path):
    server = _start(gshard_proc, tmp_path)
    pidfile = tmp_path / "g.pid"
    old_manager = int(pidfile.read_text())
    with Load(server.port) as load:
        _wait(lambda: load.ok > 200, 10, "load to run")
        deploy(tmp_path, "v2")
        server.signal(signal.SIGUSR2)
        server.stderr.wait_for(r"Upgrade complete", 20)
        _wait(lambda: not _alive(old_manager), 20, "the old manager to exit")
        handed_over = time.monotonic()
        new_manager = int(pidfile.read_text())
        _wait(lambda: len(load.bodies) > 0 and load.versions_since(handed_over + 1.0),
              10, "requests after the handover")
        time.sleep(1.5)
    assert not load.failures, f"{len(load.failures)} of {load.ok} failed: {load.failures[:5]}"
    assert new_manager != old_manager
    assert load.versions_since(handed_over + 1.0) == {"v2"}
    # The new shards are children of the new manager.
    _, body = load.bodies[-1]
    assert int(body.split()[2]) == new_manager
    assert server.stderr.count(r"Shutting down gracefully") == 1
    os.kill(new_manager, signal.SIGTERM)
    _wait(lambda: not _alive(new_manager), 15, "the new manager to stop")
    assert not pidfile.exists()


@pytest.mark.timeout(60)
def test_a_successor_that_cannot_boot_leaves_the_old_manager_serving(gshard_proc, tmp_path):
    server = _start(gshard_proc, tmp_path)
    pidfile = tmp_path / "g.pid"
    with Load(server.port) as load:
        _wait(lambda: load.ok > 100, 10, "load to run")
        deploy_broken(tmp_path)
        server.signal(signal.SIGUSR2)
        server.stderr.wait_for(r"Upgrade failed: the new manager \(pid \d+\) exited with "
                               r"status 4; this manager keeps serving", 20)
        failed_at = time.monotonic()
        _wait(lambda: load.versions_since(failed_at), 10, "requests after the failure")
    assert not load.failures, f"{len(load.failures)} of {load.ok} failed: {load.failures[:5]}"
    assert int(pidfile.read_text()) == server.pid
    assert load.versions_since(0) == {"v1"}
    assert server.stderr.count(r"^RuntimeError: deploy is broken$") == 1  # the traceback, once
    # A fixed deploy upgrades on the next try.
    deploy(tmp_path, "v3")
    server.signal(signal.SIGUSR2)
    server.stderr.wait_for(r"Upgrade complete", 20)
    _wait(lambda: int(pidfile.read_text()) != server.pid, 10, "the pidfile to follow")


@pytest.mark.timeout(60)
def test_systemd_is_told_the_new_main_pid(gshard_proc, tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify_path)
    receiver.settimeout(10)
    try:
        deploy(tmp_path, "v1")
        server = gshard_proc("deployed:app", "--shards", "1", "--pid", str(tmp_path / "g.pid"),
                             cwd=tmp_path, env={"NOTIFY_SOCKET": notify_path})
        assert b"READY=1" in receiver.recv(4096)
        server.signal(signal.SIGUSR2)
        messages = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(b"MAINPID=" in m for m in messages):
            messages.append(receiver.recv(4096))
        new_pid = int((tmp_path / "g.pid").read_text())
        assert f"MAINPID={new_pid}".encode() in b"\n".join(messages)
        # The old manager, handing over, never tells systemd the service stops.
        server.wait(15)
        receiver.settimeout(0.5)
        with pytest.raises(TimeoutError):
            while True:
                assert b"STOPPING=1" not in receiver.recv(4096)
    finally:
        # The successor manager is in the server's process group, which the
        # fixture kills at teardown: no PID read from a file is ever signalled.
        receiver.close()
