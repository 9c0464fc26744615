"""SIGTTIN/SIGTTOU under load: shards come and go without losing a connection.

Adding a shard opens a listener for it; removing one steers new connections off
its listener, lets the leaving shard take what was queued, and closes the
listener only once that shard has exited.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.loadgen import Load
from tests.support.processes import listening_sockets, wait_until

pytestmark = pytest.mark.usefixtures("no_request_migration")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_adding_and_removing_shards_under_load_loses_nothing(deployed_gshard):
    server = deployed_gshard("--shards", "2")
    port = server.port
    first = set(server.shard_pids())
    assert len(listening_sockets(port)) == 2
    with Load(port, fresh=24, keepalive=2, slow=12, max_seconds=40) as load:
        time.sleep(1.0)
        mark = len(server.stderr.lines)
        server.signal(signal.SIGTTIN)
        server.stderr.wait_for(r"Adding shard 2$", timeout=5, start=mark)
        server.signal(signal.SIGTTIN)  # while shard 2 still boots
        server.stderr.wait_for(r"Adding shard 3$", timeout=5, start=mark)
        added = {}
        for slot in (2, 3):
            match = server.stderr.wait_for(rf"Shard {slot} \(pid (\d+)\) is serving", timeout=15,
                                           start=mark)
            added[slot] = int(match.group(1))
        grown = time.monotonic()
        assert len(listening_sockets(port)) == 4
        assert set(server.shard_pids()) == first | set(added.values())
        time.sleep(2.0)

        mark = len(server.stderr.lines)
        server.signal(signal.SIGTTOU)
        server.stderr.wait_for(r"Removing shard 3$", timeout=5, start=mark)
        server.signal(signal.SIGTTOU)
        server.stderr.wait_for(r"Removing shard 2$", timeout=5, start=mark)
        removed = time.monotonic()
        # The leaving shards still take what was queued: their listeners stay open.
        assert len(listening_sockets(port)) == 4
        for slot in (2, 3):
            server.stderr.wait_for(rf"Shard {slot} \(pid {added[slot]}\) exited with status 0 "
                                   r"after draining", timeout=15, start=mark)
        wait_until(lambda: len(listening_sockets(port)) == 2, 5,
                   "the leaving shards' listeners to close")
        shrunk = time.monotonic()
        assert set(server.shard_pids()) == first
        time.sleep(1.5)
    results = load.snapshot()
    summary = (f"{load.summary(results)}; leaving shards exited and listeners closed "
               f"{shrunk - removed:.2f}s after the removal")
    print(summary)
    load.assert_no_failure(summary)
    # /slow requests the leaving shards had in flight were finished, not cut.
    finished = [r for r in results if r.kind == "slow" and r.pid in added.values()
                and r.started < removed < r.ended]
    assert finished, f"{summary}; no /slow request was in flight on a leaving shard"
    while_four = {r.pid for r in results if r.ok and grown < r.started < grown + 2.0}
    assert set(added.values()) <= while_four, f"new shards never answered: {while_four}"
    after = [r for r in results if r.ok and r.started > shrunk]
    assert len(after) >= 100, summary
    assert {r.pid for r in after} == first, "a removed shard answered after it left"


def _new_child(server, known: set[int], timeout: float = 5.0) -> int:
    """The PID of the shard forked since ``known`` was taken."""
    (pid,) = wait_until(lambda: set(server.shard_pids()) - known, timeout, "a new shard",
                        interval=0.002)
    return pid


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_no_connection_waits_for_a_shard_still_booting_when_two_are_added(
        deployed_gshard):
    server = deployed_gshard("--shards", "2")
    first = set(server.shard_pids())
    with Load(server.port, fresh=8, keepalive=0, slow=0, max_seconds=30) as load:
        time.sleep(1.0)
        server.signal(signal.SIGTTIN)
        server.stderr.wait_for(r"Adding shard 2$", timeout=5)
        shard2 = _new_child(server, first)
        os.kill(shard2, signal.SIGSTOP)  # still booting when shard 3 is added
        server.signal(signal.SIGTTIN)
        server.stderr.wait_for(r"Adding shard 3$", timeout=5)
        shard3 = _new_child(server, first | {shard2})
        os.kill(shard3, signal.SIGSTOP)  # a slow boot: 2 s more than shard 2's
        os.kill(shard2, signal.SIGCONT)
        server.stderr.wait_for(rf"Shard 2 \(pid {shard2}\) is serving", timeout=10)
        held = time.monotonic()
        time.sleep(2.0)
        os.kill(shard3, signal.SIGCONT)
        server.stderr.wait_for(rf"Shard 3 \(pid {shard3}\) is serving", timeout=10)
        time.sleep(0.5)
    results = load.snapshot()
    summary = load.summary(results)
    load.assert_no_failure(summary)
    during = [r for r in results if held <= r.started < held + 1.5]
    waited = [r for r in during if r.ended - r.started > 1.0]
    assert len(during) >= 20, summary
    assert not waited, (
        f"{len(waited)} of {len(during)} connections made while shard 3 booted waited "
        f"{min(r.ended - r.started for r in waited):.1f}s or more for it ({summary})"
    )
