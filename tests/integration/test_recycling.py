"""--max-requests under load: shards are replaced in their slots and no request is lost.

A shard past its limit asks the manager for a successor and drains only once
that successor serves, so its slot always has a shard accepting.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.support.loadgen import (
    Load,
    deploy,
    fresh_request,
)

pytestmark = pytest.mark.usefixtures("no_request_migration")


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_recycled_shards_lose_no_request(deployed_gshard):
    server = deployed_gshard("--shards", "2", "--max-requests", "40",
                             "--max-requests-jitter", "10")
    first = set(server.shard_pids())
    with Load(server.port, fresh=12, keepalive=3, slow=1, max_seconds=30) as load:
        time.sleep(8.0)
    results = load.snapshot()
    log = server.stderr.text
    recycled = re.findall(r"Recycling shard (\d+) \(pid (\d+)\)", log)
    answering = {r.pid for r in results if r.ok}
    summary = (f"{load.summary(results)}; {len(recycled)} recycles, "
               f"{len(answering)} shard pids answered")
    print(summary)
    load.assert_no_failure(summary)
    assert len(recycled) >= 4, summary
    assert {slot for slot, _ in recycled} == {"0", "1"}, recycled
    assert {int(pid) for _, pid in recycled} >= first, "a first-generation shard never recycled"
    assert len(answering) >= 6, summary
    # Each recycled shard drained out once its successor served; two remain.
    drained = re.findall(r"\(pid (\d+)\) exited with status 0 after draining", log)
    assert len(drained) >= 3, log
    assert not re.search(r"was killed|did not exit in time|Traceback", log), log
    assert len(server.shard_pids()) in (2, 3, 4)  # a successor may be booting right now


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_shard_past_its_limit_during_a_failed_reload_is_recycled_after_it(deployed_gshard,
                                                                           tmp_path):
    """The manager ignores a recycle request while a reload boots; the shard must ask again."""
    pidfile = tmp_path / "g.pid"
    server = deployed_gshard("--shards", "1", "--max-requests", "30", "--pid", str(pidfile))
    (first,) = server.shard_pids()
    deploy(tmp_path, "v2", broken="deploy 2 broke", import_seconds=3.0)
    reload = subprocess.Popen(
        [sys.executable, "-m", "gshard", "reload", "--pid", str(pidfile), "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        server.stderr.wait_for(r"Reloading: booting generation 2", timeout=5)
        # Past its limit while generation 2 boots: the shard asks for its successor
        # at its next beat (within 1 s), and the manager, busy reloading, ignores it.
        for _ in range(40):
            assert fresh_request(server.port, "/").pid == first
        _, stderr = reload.communicate(timeout=20)
    finally:
        reload.kill()
        reload.wait()
    assert reload.returncode == 1, stderr
    assert "deploy 2 broke" in stderr
    assert "Recycling shard" not in server.stderr.text
    deploy(tmp_path, "v1")  # rolled back
    mark = len(server.stderr.lines)
    server.stderr.wait_for(rf"Recycling shard 0 \(pid {first}\)", timeout=8, start=mark)
    server.stderr.wait_for(rf"Shard 0 \(pid {first}\) exited with status 0 after draining",
                           timeout=10, start=mark)
    (successor,) = server.shard_pids()
    assert fresh_request(server.port, "/").pid == successor != first
