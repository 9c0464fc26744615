"""A shard that crashes under load is replaced on its listener; what was queued waits for it.

The manager holds every listener, so a dying shard loses only the connections
it had itself accepted; the ones still queued on its listener are served by
its replacement. (gunicorn's gevent worker, frozen then killed the same way,
lost 69 queued connections.)
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.loadgen import Load
from tests.support.processes import wait_state

CONCURRENCY = 24
ARRIVING = 16  # clients that start while a shard is frozen

pytestmark = pytest.mark.usefixtures("no_request_migration")


def _replacement(server, victim: int, mark: int) -> int:
    server.stderr.wait_for(rf"\(pid {victim}\) was killed by signal 9", timeout=10, start=mark)
    match = server.stderr.wait_for(r"Shard \d+ \(pid (\d+)\) is serving", timeout=10,
                                   start=mark)
    return int(match.group(1))


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_killed_shard_under_load_loses_at_most_what_it_had_accepted(deployed_gshard):
    server = deployed_gshard("--shards", "2")
    victim, survivor = server.shard_pids()
    with Load(server.port, fresh=CONCURRENCY, keepalive=0, slow=0, max_seconds=30) as load:
        time.sleep(1.5)
        mark = len(server.stderr.lines)
        os.kill(victim, signal.SIGKILL)
        dead = wait_state(victim, dead=True)
        newcomer = _replacement(server, victim, mark)
        replaced = time.monotonic()
        time.sleep(1.5)
    results = load.snapshot()
    failures = [r for r in results if not r.ok]
    in_flight = [r for r in results if r.started < dead < r.ended]
    summary = (f"{load.summary(results)}; {len(in_flight)} in flight at the kill; "
               f"replaced {replaced - dead:.2f}s after it")
    print(summary)
    # Only requests the victim had accepted can fail: begun before it died, and no
    # more than the clients' concurrency.
    assert len(failures) <= CONCURRENCY, summary
    late = [r for r in failures if r.started >= dead]
    assert not late, f"{summary}; connections made after the shard died failed: {late[:5]}"
    assert {r.error for r in failures} <= {"reset", "closed before a response"}, summary
    assert sorted(server.shard_pids()) == sorted([survivor, newcomer])
    after = {r.pid for r in results if r.ok and r.started > replaced}
    assert newcomer in after and victim not in after, after
    assert len([r for r in results if r.ok and r.started > dead]) >= 100, summary


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_frozen_then_killed_shard_resets_no_queued_connection(deployed_gshard):
    server = deployed_gshard("--shards", "2")
    victim, survivor = server.shard_pids()
    with Load(server.port, fresh=CONCURRENCY, keepalive=0, slow=0, max_seconds=30) as load:
        time.sleep(1.5)
        mark = len(server.stderr.lines)
        os.kill(victim, signal.SIGSTOP)
        frozen = wait_state(victim, stopped=True)
        # More clients arrive while it is frozen: theirs is a connection queued on the
        # frozen shard's listener (or answered by the other shard), never an accepted one.
        with Load(server.port, fresh=ARRIVING, keepalive=0, slow=0, max_seconds=30) as more:
            time.sleep(2.0)  # connections pile up in its listener's queue
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            newcomer = _replacement(server, victim, mark)
            replaced = time.monotonic()
            time.sleep(1.5)
    results = load.snapshot() + more.snapshot()
    failures = [r for r in results if not r.ok]
    in_flight = [r for r in results if r.started < frozen < r.ended]
    # Answered after the kill, having waited through most of the freeze: these sat in
    # the frozen shard's queue (what it had accepted died with it).
    queued = [r for r in results if r.ok and r.started < killed - 1.0 and r.ended > killed]
    arrived_queued = [r for r in queued if r.started > frozen]
    summary = (f"{load.summary(results)}; {len(in_flight)} in flight at the freeze, "
               f"{len(queued)} queued through the freeze ({len(arrived_queued)} made after it) "
               f"and answered after the kill; replaced {replaced - killed:.2f}s after the kill")
    print(summary)
    # A frozen shard accepts nothing: a connection made after it froze was only queued,
    # and must be answered by the replacement, never reset.
    late = [r for r in failures if r.started >= frozen]
    assert not late, f"{summary}; queued connections failed: {late[:5]}"
    assert len(failures) <= min(len(in_flight), CONCURRENCY), summary
    assert len(arrived_queued) >= ARRIVING // 2, \
        f"{summary}: too few connections waited for the replacement"
    assert {r.pid for r in queued} <= {newcomer, survivor}, summary
    assert sorted(server.shard_pids()) == sorted([survivor, newcomer])
