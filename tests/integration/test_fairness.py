"""Connections spread over the shards: the kernel hashes each 4-tuple to one listener."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.rawhttp import fetch

CONNECTIONS = 800
SHARDS = 4


def _fetch_pids(port: int, count: int) -> list[int]:
    responses = [fetch(port) for _ in range(count)]  # each from a fresh client port
    assert all(response.status == 200 for response in responses)
    return [int(response.body) for response in responses]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_fresh_connections_reach_every_shard_fairly(gshard_proc):
    server = gshard_proc("pid_app:app", "--shards", str(SHARDS))
    shard_pids = set(server.shard_pids())
    assert len(shard_pids) == SHARDS
    workers = 8
    with ThreadPoolExecutor(workers) as pool:
        batches = pool.map(_fetch_pids, [server.port] * workers, [CONNECTIONS // workers] * workers)
        counts = Counter(pid for batch in batches for pid in batch)
    print("connections per shard:", dict(counts))
    assert sum(counts.values()) == CONNECTIONS
    assert set(counts) == shard_pids, counts
    share = CONNECTIONS // 10
    assert min(counts.values()) >= share, f"a shard got under 10% of {CONNECTIONS}: {counts}"
