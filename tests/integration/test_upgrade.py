"""SIGUSR2 upgrades gshard itself: a new manager takes over the listeners.

The new manager boots its generation on the inherited sockets; only when it
serves does the old manager drain and exit, and the pidfile follows. If the
new manager cannot boot, the old one keeps serving.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.support.loadgen import Load, deploy
from tests.support.processes import child_pids, wait_state, wait_until


def _load(port: int) -> Load:
    return Load(port, fresh=8, keepalive=4, slow=0, max_seconds=30)


@pytest.mark.timeout(60)
def test_upgrade_under_load_hands_over_without_a_failed_request(deployed_gshard, tmp_path):
    pidfile = tmp_path / "g.pid"
    server = deployed_gshard("--shards", "2", "--pid", str(pidfile))
    old_manager = int(pidfile.read_text())
    with _load(server.port) as load:
        wait_until(lambda: len(load.served()) > 200, 10, "load to run")
        deploy(tmp_path, "v2")
        server.signal(signal.SIGUSR2)
        server.stderr.wait_for(r"Upgrade complete", 20)
        wait_state(old_manager, dead=True, timeout=20)
        handed_over = time.monotonic()
        new_manager = int(pidfile.read_text())
        wait_until(lambda: load.served(handed_over + 1.0), 10, "requests after the handover")
        time.sleep(1.5)
    load.assert_no_failure()
    assert new_manager != old_manager
    after = load.served(handed_over + 1.0)
    assert {r.version for r in after} == {"v2"}, load.summary()
    # Every shard that answered after the handover is a child of the new manager.
    assert {r.pid for r in after} <= set(child_pids(new_manager)), load.summary(after)
    assert server.stderr.count(r"Shutting down gracefully") == 1
    os.kill(new_manager, signal.SIGTERM)
    wait_state(new_manager, dead=True, timeout=15)
    assert not pidfile.exists()


@pytest.mark.timeout(60)
def test_a_successor_that_cannot_boot_leaves_the_old_manager_serving(deployed_gshard, tmp_path):
    pidfile = tmp_path / "g.pid"
    server = deployed_gshard("--shards", "2", "--pid", str(pidfile))
    with _load(server.port) as load:
        wait_until(lambda: len(load.served()) > 100, 10, "load to run")
        deploy(tmp_path, "v-broken", broken="deploy is broken")
        server.signal(signal.SIGUSR2)
        server.stderr.wait_for(r"Upgrade failed: the new manager \(pid \d+\) exited with "
                               r"status 4; this manager keeps serving", 20)
        failed_at = time.monotonic()
        wait_until(lambda: load.served(failed_at), 10, "requests after the failure")
    load.assert_no_failure()
    assert int(pidfile.read_text()) == server.pid
    assert {r.version for r in load.served()} == {"v1"}, load.summary()
    assert server.stderr.count(r"^RuntimeError: deploy is broken$") == 1  # the traceback, once
    # A fixed deploy upgrades on the next try.
    deploy(tmp_path, "v3")
    server.signal(signal.SIGUSR2)
    server.stderr.wait_for(r"Upgrade complete", 20)
    wait_until(lambda: int(pidfile.read_text()) != server.pid, 10, "the pidfile to follow")


@pytest.mark.timeout(60)
def test_systemd_is_told_the_new_main_pid(deployed_gshard, tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify_path)
    receiver.settimeout(10)
    try:
        server = deployed_gshard("--shards", "1", "--pid", str(tmp_path / "g.pid"),
                                 env={"NOTIFY_SOCKET": notify_path})
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
