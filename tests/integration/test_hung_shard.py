"""--timeout: a shard whose event loop is blocked is killed and replaced; others go on.

A thread in the shard reports the blocking stack at half the timeout, so the
log names the code to blame; at the timeout the manager aborts the shard
(SIGABRT, as gunicorn does; SIGKILL follows if it cannot act on it) and
starts another on the same listener.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.support.loadgen import Load


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_blocked_shard_is_killed_and_replaced_with_its_stack_logged(gshard_proc):
    server = gshard_proc("blocking_app:app", "--shards", "2", "--timeout", "4")
    before = set(server.shard_pids())
    blocker = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    blocker.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    hung = int(server.stderr.wait_for(r"^BLOCKING (\d+)$", timeout=5).group(1))
    blocked_at = time.monotonic()
    (other,) = before - {hung}

    # Meanwhile clients keep coming: the other shard answers, and what the kernel
    # queues on the blocked shard's listener waits for its replacement. Each
    # client waits whenever its connection is hashed to that queue; with 12 of
    # them, the chance that none reaches the other shard early is 1 in 4096,
    # not 1 in 16.
    with Load(server.port, fresh=12, keepalive=0, slow=0, max_seconds=25,
              request_timeout=15) as load:
        server.stderr.wait_for(rf"\(pid {hung}\) blocked for more than 4s; aborting it",
                               timeout=10)
        # SIGABRT interrupts the blocking sleep; the shard's handler exits (status 1).
        server.stderr.wait_for(rf"\(pid {hung}\) exited with status 1", timeout=5)
        newcomer = int(server.stderr.wait_for(r"Shard \d+ \(pid (\d+)\) is serving",
                                              timeout=10).group(1))
        replaced_after = time.monotonic() - blocked_at
        time.sleep(1.0)
    results = load.snapshot()
    summary = f"{load.summary(results)}; replaced {replaced_after:.1f}s after the block"
    print(summary)

    assert replaced_after < 10, summary
    assert set(server.shard_pids()) == {other, newcomer}
    load.assert_no_failure(summary)
    assert {r.pid for r in results} == {other, newcomer}, summary
    assert any(r.pid == newcomer for r in results), summary
    assert any(r.pid == other and r.ended < blocked_at + 3 for r in results), \
        "the other shard did not answer while one was blocked"
    # The blocked request itself dies with its shard: no response, just the close.
    blocker.settimeout(5)
    try:
        assert blocker.recv(1024) == b""
    except ConnectionResetError:
        pass
    finally:
        blocker.close()
    # The watchdog's report, with the blocking function in the stack, once.
    log = server.stderr.text
    report = log[log.index(f"[{hung}] [ERROR] Shard "):]
    assert "event loop blocked for" in report.splitlines()[0], report
    assert "in block_the_event_loop" in report.split("blocked for more than")[0], report
    assert log.count("event loop blocked for") == 1, log
