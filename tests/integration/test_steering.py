"""A slot whose shard cannot come back gets no new connections meanwhile.

Broken code is on disk when a shard dies, so every replacement fails to boot
and the slot waits out a growing backoff. The kernel would still hash about
half of the new connections to that slot's listener, where nobody accepts;
gshard steers them to the slots that serve instead.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.loadgen import deploy, fresh_request


@pytest.mark.timeout(60)
def test_new_connections_avoid_a_slot_whose_replacement_keeps_failing(deployed_gshard,
                                                                      tmp_path):
    server = deployed_gshard("--shards", "2")
    survivor, victim = server.shard_pids()
    deploy(tmp_path, "v2", broken="the database is gone")
    os.kill(victim, signal.SIGKILL)
    server.stderr.wait_for(rf"\(pid {victim}\) was killed by signal 9", timeout=5)
    server.stderr.wait_for(r"keeps failing; respawning in", timeout=10)

    results = [fresh_request(server.port, "/", timeout=5) for _ in range(200)]

    failures = [r for r in results if not r.ok]
    assert not failures, failures[:5]
    assert {r.pid for r in results} == {survivor}
    slowest = max(r.ended - r.started for r in results)
    assert slowest < 0.5, f"a connection waited {slowest:.2f}s on the slot that does not serve"

    # Fixed code: the slot's next respawn serves again, and gets its share.
    deploy(tmp_path, "v3")
    server.stderr.wait_for(r"Shard \d \(pid \d+\) is serving", timeout=40)
    time.sleep(0.2)
    later = [fresh_request(server.port, "/", timeout=5) for _ in range(100)]
    assert all(r.ok for r in later)
    assert len({r.pid for r in later}) == 2
