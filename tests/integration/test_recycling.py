"""--max-requests under load: shards are replaced in their slots and no request is lost.

A shard past its limit asks the manager for a successor and drains only once
that successor serves, so its slot always has a shard accepting.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.loadgen import APP, SERVER_ENV, Load, deploy, no_request_migration


@pytest.fixture(autouse=True)
def _no_request_migration():
    with no_request_migration():
        yield


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_recycled_shards_lose_no_request(gshard_proc, tmp_path):
    deploy(tmp_path, "v1")
    server = gshard_proc(APP, "--shards", "2", "--max-requests", "40",
                         "--max-requests-jitter", "10", cwd=tmp_path, env=SERVER_ENV)
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
    failures = [r for r in results if not r.ok]
    assert not failures, f"{summary}; first failures: {failures[:5]}"
    assert len(recycled) >= 4, summary
    assert {slot for slot, _ in recycled} == {"0", "1"}, recycled
    assert {int(pid) for _, pid in recycled} >= first, "a first-generation shard never recycled"
    assert len(answering) >= 6, summary
    # Each recycled shard drained out once its successor served; two remain.
    drained = re.findall(r"\(pid (\d+)\) exited with status 0 after draining", log)
    assert len(drained) >= 3, log
    assert not re.search(r"was killed|did not exit in time|Traceback", log), log
    assert len(server.shard_pids()) in (2, 3, 4)  # a successor may be booting right now
