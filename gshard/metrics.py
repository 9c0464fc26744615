"""A shard's own counters, and the snapshot of them it sends with each heartbeat.

Counting happens on the request path, so it is a handful of integer
increments (``ShardMetrics.exchange_done``); everything else is read only when
a heartbeat is due (about once a second): gauges (open, idle connections),
the resident memory, and the encoding. Counters are cumulative from the
shard's start, so a heartbeat the manager misses loses nothing: the next one
carries the totals.

No I/O here except reading ``/proc/self/statm``; no gevent, so the manager
imports this module to decode what shards send.
"""

from __future__ import annotations

import json
import logging
import os
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gshard.exchange import Exchange

# Upper bounds (seconds) of the request-duration histogram's buckets, as in
# Prometheus' default buckets; one more bucket (+Inf) counts the rest.
DURATION_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ShardMetrics:
    """What one shard has done since it started; updated in place, read at heartbeats."""

    __slots__ = (
        "buckets",
        "bytes_in",
        "bytes_out",
        "duration_sum",
        "logs",
        "recent_statuses",
        "statuses",
    )

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}  # status code (0: no response) -> requests
        # Since the last snapshot, by status line as sent ("200 OK"; None: no
        # response): counting by the string the exchange already holds spares
        # parsing the code per request. Folded into ``statuses`` at snapshots.
        self.recent_statuses: defaultdict[str | None, int] = defaultdict(int)
        self.buckets = [0] * (len(DURATION_BOUNDS) + 1)  # not cumulative; last is +Inf
        self.duration_sum = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.logs: dict[str, int] = {}  # "warning", "error", ... -> records (LogCounter)

    def exchange_done(self, exchange: Exchange, _bucket: Callable = bisect_left,
                      _bounds: tuple = DURATION_BOUNDS, _first: float = DURATION_BOUNDS[0]
                      ) -> None:
        """Count one finished request (``ServeContext.finished``).

        On the hot path, so a handful of increments (~0.15 us measured alone);
        the defaults are bound at definition, sparing global lookups, and the
        first bucket (the usual one for a fast application) spares the bisect.
        """
        writer = exchange.writer
        self.recent_statuses[writer.status] += 1
        duration = exchange.duration
        if duration <= _first:
            self.buckets[0] += 1
        else:
            self.buckets[_bucket(_bounds, duration)] += 1
        self.duration_sum += duration
        self.bytes_in += exchange.body_bytes
        self.bytes_out += writer.sent

    def snapshot(self, connections: int, idle: int, rss: int) -> Snapshot:
        """The counters now, with the gauges read by the caller at heartbeat time."""
        statuses = self.statuses
        for line, count in self.recent_statuses.items():
            code = int(line[:3]) if line else 0
            statuses[code] = statuses.get(code, 0) + count
        self.recent_statuses.clear()
        return Snapshot(
            statuses=dict(statuses),
            buckets=tuple(self.buckets),
            duration_sum=self.duration_sum,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            connections=connections,
            idle=idle,
            rss=rss,
            logs=dict(self.logs),
        )


@dataclass(frozen=True)
class Snapshot:
    """A shard's counters at one heartbeat. Counters only grow during a shard's life."""

    statuses: dict[int, int] = field(default_factory=dict)
    buckets: tuple[int, ...] = (0,) * (len(DURATION_BOUNDS) + 1)
    duration_sum: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    connections: int = 0  # open client connections (gauge)
    idle: int = 0  # of those, parked between keep-alive requests (gauge)
    rss: int = 0  # bytes (gauge)
    logs: dict[str, int] = field(default_factory=dict)  # error-log records by level

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def in_flight(self) -> int:
        """Connections reading or answering a request: open and not idle."""
        return max(self.connections - self.idle, 0)

    def by_class(self) -> dict[str, int]:
        """Responses by status class: ``{"2xx": n, ...}``, every class present."""
        classes = {f"{digit}xx": 0 for digit in range(1, 6)}
        for code, count in self.statuses.items():
            key = f"{code // 100}xx"
            if key in classes:
                classes[key] += count
        return classes

    def plus(self, other: Snapshot) -> Snapshot:
        """The sum of two snapshots (totals over shards, gauges included)."""
        return Snapshot(
            statuses=_add(self.statuses, other.statuses),
            buckets=tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            duration_sum=self.duration_sum + other.duration_sum,
            bytes_in=self.bytes_in + other.bytes_in,
            bytes_out=self.bytes_out + other.bytes_out,
            connections=self.connections + other.connections,
            idle=self.idle + other.idle,
            rss=self.rss + other.rss,
            logs=_add(self.logs, other.logs),
        )

    def counters_only(self) -> Snapshot:
        """The same counters with the gauges at zero: what a shard that left still adds."""
        return Snapshot(self.statuses, self.buckets, self.duration_sum, self.bytes_in,
                        self.bytes_out, logs=self.logs)


def _add(a: dict, b: dict) -> dict:
    total = dict(a)
    for key, count in b.items():
        total[key] = total.get(key, 0) + count
    return total


def encode(snapshot: Snapshot) -> str:
    """Compact text for a heartbeat datagram (a few hundred bytes)."""
    return json.dumps(
        [{str(k): v for k, v in snapshot.statuses.items()}, snapshot.buckets,
         snapshot.duration_sum, snapshot.bytes_in, snapshot.bytes_out,
         snapshot.connections, snapshot.idle, snapshot.rss, snapshot.logs],
        separators=(",", ":"),
    )


def decode(text: str) -> Snapshot:
    """The snapshot in a heartbeat's text; ValueError if it is not one."""
    try:
        statuses, buckets, duration_sum, *numbers, logs = json.loads(text)
        if len(buckets) != len(DURATION_BOUNDS) + 1 or len(numbers) != 5:
            raise ValueError("wrong number of fields")
        bytes_in, bytes_out, connections, idle, rss = (int(n) for n in numbers)
        return Snapshot(
            statuses={int(k): int(v) for k, v in statuses.items()},
            buckets=tuple(int(b) for b in buckets),
            duration_sum=float(duration_sum),
            bytes_in=bytes_in, bytes_out=bytes_out, connections=connections, idle=idle,
            rss=rss, logs={str(k): int(v) for k, v in logs.items()},
        )
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"not a metrics snapshot: {exc}") from None


def read_rss() -> int:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


class LogCounter(logging.Handler):
    """Counts error-log records at warning and above, as gunicorn's statsd logger does.

    A record carrying a traceback counts as ``exception`` (gunicorn's
    ``log.exception``), the others by level name.
    """

    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__(logging.WARNING)
        self.counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        key = "exception" if record.exc_info else record.levelname.lower()
        self.counts[key] = self.counts.get(key, 0) + 1
