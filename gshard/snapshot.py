"""What a shard reports with each heartbeat and the manager adds up: ``Snapshot``.

Both sides read this: a shard encodes its counters here, the manager decodes
them, keeps them per shard and sums them for status, ``/metrics`` and statsd.
Counters are cumulative from the shard's start, so a heartbeat the manager
misses loses nothing: the next one carries the totals. No I/O, no gevent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

# Upper bounds (seconds) of the request-duration histogram's buckets, as in
# Prometheus' default buckets; one more bucket (+Inf) counts the rest.
DURATION_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
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
