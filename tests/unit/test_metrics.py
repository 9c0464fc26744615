"""Shard counters, their heartbeat snapshot, and the manager's registry of them."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from gshard import snapshot
from gshard.manager.events import Reason
from gshard.manager.observe.registry import RATE_WINDOW, RECENT_DEPARTED, Registry
from gshard.shard.metrics import ShardMetrics, read_rss
from gshard.snapshot import DURATION_BOUNDS, LogCounter, Snapshot


def finished(status: str | None, duration: float, body_bytes: int = 0, sent: int = 0):
    """What ``ShardMetrics`` reads of a finished ``exchange.Exchange``."""
    return SimpleNamespace(writer=SimpleNamespace(status=status, sent=sent), duration=duration,
                           body_bytes=body_bytes)


def test_a_finished_exchange_counts_status_bytes_and_duration_bucket():
    counters = ShardMetrics()
    counters.exchange_done(finished("200 OK", 0.001, 10, 100))
    counters.exchange_done(finished("200 Fine", 0.3, 0, 50))
    counters.exchange_done(finished("404 Not Found", 99.0, 5, 7))
    snap = counters.snapshot(connections=3, idle=1, rss=4096)
    assert snap.statuses == {200: 2, 404: 1}
    assert snap.requests == 3
    assert snap.by_class() == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 0}
    assert (snap.bytes_in, snap.bytes_out) == (15, 157)
    assert snap.buckets[0] == 1  # 1 ms <= 5 ms
    assert snap.buckets[DURATION_BOUNDS.index(0.5)] == 1  # 0.25 < 0.3 <= 0.5
    assert snap.buckets[-1] == 1  # past the last bound: +Inf
    assert snap.duration_sum == pytest.approx(99.301)
    assert (snap.connections, snap.idle, snap.in_flight, snap.rss) == (3, 1, 2, 4096)
    # The next snapshot keeps the totals and adds what came since.
    counters.exchange_done(finished(None, 0.001))  # the client left before a response
    assert counters.snapshot(0, 0, 0).statuses == {200: 2, 404: 1, 0: 1}


def test_a_duration_on_a_bound_falls_in_that_bucket():
    counters = ShardMetrics()
    counters.exchange_done(finished("200 X", DURATION_BOUNDS[3], 0, 0))
    counters.exchange_done(finished("200 X", DURATION_BOUNDS[0], 0, 0))
    buckets = counters.snapshot(0, 0, 0).buckets
    assert (buckets[0], buckets[3]) == (1, 1)  # Prometheus buckets are "le"


def test_snapshot_is_a_copy():
    counters = ShardMetrics()
    counters.exchange_done(finished("200 X", 0.01, 0, 0))
    snap = counters.snapshot(0, 0, 0)
    counters.exchange_done(finished("500 X", 0.01, 0, 0))
    counters.snapshot(0, 0, 0)
    assert snap.statuses == {200: 1}


def test_encode_decode_round_trip_and_size():
    counters = ShardMetrics()
    for code in (200, 201, 301, 404, 500, 503):
        counters.exchange_done(finished(f"{code} X", 0.02, 100, 1000))
    counters.logs["error"] = 3
    snap = counters.snapshot(connections=900, idle=850, rss=123_456_789)
    text = snapshot.encode(snap)
    assert len(text) < 300  # fits a heartbeat datagram many times over
    assert snapshot.decode(text) == snap


@pytest.mark.parametrize("text", ["", "[]", "{}", "[1,2,3]", "not json",
                                  '[{}, [1], 0, 0, 0, 0, 0, 0, {}]'])
def test_decode_refuses_what_is_not_a_snapshot(text):
    with pytest.raises(ValueError):
        snapshot.decode(text)


def test_read_rss_reads_this_process():
    assert read_rss() > 1_000_000


def test_log_counter_counts_levels_and_exceptions_as_gunicorn_does():
    logger = logging.getLogger("gshard.test-log-counter")
    logger.propagate = False
    counts: dict[str, int] = {}
    handler = LogCounter(counts)
    logger.addHandler(handler)
    try:
        logger.info("not counted")
        logger.warning("w")
        logger.error("e")
        logger.error("e")
        try:
            raise RuntimeError("x")
        except RuntimeError:
            logger.exception("boom")
        logger.critical("c")
    finally:
        logger.removeHandler(handler)
    assert counts == {"warning": 1, "error": 2, "exception": 1, "critical": 1}


def test_plus_sums_counters_and_gauges():
    a = Snapshot(statuses={200: 1}, bytes_in=1, connections=2, logs={"error": 1})
    b = Snapshot(statuses={200: 2, 500: 1}, bytes_out=3, connections=1, logs={"error": 1})
    total = a.plus(b)
    assert total.statuses == {200: 3, 500: 1}
    assert (total.bytes_in, total.bytes_out, total.connections) == (1, 3, 3)
    assert total.logs == {"error": 2}


# --- the registry ---------------------------------------------------------------


def snap_with(requests: int, connections: int = 0) -> Snapshot:
    return Snapshot(statuses={200: requests}, connections=connections)


def test_rate_is_over_the_last_ten_seconds_of_reports():
    registry = Registry()
    for second in range(0, 31):
        # 100 req/s for 20 s, then 10 req/s.
        requests = 100 * min(second, 20) + 10 * max(second - 20, 0)
        registry.report(10, 0, 1, snap_with(requests), now=float(second))
    assert registry.shards[10].rate() == pytest.approx(10.0)
    window = registry.shards[10].window
    assert window[-1][0] - window[0][0] == pytest.approx(RATE_WINDOW)


def test_totals_keep_the_counts_of_shards_that_left_but_not_their_gauges():
    registry = Registry()
    registry.report(10, 0, 1, snap_with(5, connections=3), now=1.0)
    registry.report(11, 1, 1, snap_with(7, connections=4), now=1.0)
    registry.shard_gone(10, 0, 1, Reason.CRASHED, "was killed by signal 9", wall=1000.0)
    total = registry.totals()
    assert total.requests == 12
    assert total.connections == 4
    # A last report that arrives after the shard was reaped still counts.
    registry.report(10, 0, 1, snap_with(6, connections=3), now=2.0)
    assert registry.totals().requests == 13
    assert registry.totals().connections == 4


def test_totals_survive_many_departures():
    registry = Registry()
    for pid in range(RECENT_DEPARTED * 2):
        registry.report(pid, 0, 1, snap_with(1), now=1.0)
        registry.shard_gone(pid, 0, 1, Reason.RECYCLED, "", wall=0.0)
    assert len(registry.departed) == RECENT_DEPARTED
    assert registry.totals().requests == RECENT_DEPARTED * 2


def test_departures_are_counted_by_reason_and_a_blocked_one_says_where():
    registry = Registry()
    registry.report(10, 2, 3, snap_with(1), now=1.0)
    registry.blocked(10, "app.py:12 in slow")
    registry.shard_gone(10, 2, 3, Reason.BLOCKED, "blocked for more than 5s", wall=100.0)
    # One that never reported (it died booting) is in the history too.
    registry.shard_gone(11, 1, 3, Reason.BOOT_FAILED, "exited with status 4", wall=101.0)
    assert registry.departures == {Reason.BLOCKED: 1, Reason.BOOT_FAILED: 1}
    first = registry.history[0]
    assert (first.pid, first.slot, first.generation, first.reason) == (10, 2, 3, Reason.BLOCKED)
    assert first.detail == "blocked for more than 5s; blocked in app.py:12 in slow"
    assert registry.history[1].slot == 1
    assert registry.blocked_events == 1


def test_reload_outcomes():
    registry = Registry()
    registry.reload_finished(True, "Generation 2 is serving", wall=1.0)
    registry.reload_finished(False, "Reload failed", wall=2.0)
    assert registry.reloads == {True: 1, False: 1}
    assert registry.last_reload is not None and registry.last_reload.message == "Reload failed"


def test_manager_log_counts_are_in_the_totals():
    registry = Registry()
    registry.manager_logs["warning"] = 2
    assert registry.totals().logs == {"warning": 2}
