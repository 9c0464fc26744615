"""The manager's book of what its shards reported, and of how shards left.

Bookkeeping only: which shards exist and in what state is the state
machine's to say (``manager.fsm``); this keeps, per shard PID, the last
snapshot its heartbeat carried and a short history of its request count, so
``gshard status``, ``/metrics`` and statsd can show counts, rates and
totals. A shard that leaves keeps adding to the totals (its counters until
its last report), so totals only grow, as Prometheus counters must.

No I/O and no clock: every call carries ``now``.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from gshard.manager.events import Reason
from gshard.snapshot import Snapshot

# req/s is measured over this many seconds of heartbeats.
RATE_WINDOW = 10.0
# Departures remembered for ``gshard status``.
HISTORY = 50
# Shards that left whose late reports are still accepted (a last heartbeat
# can arrive after the manager reaped the process).
RECENT_DEPARTED = 64


@dataclass
class ShardRecord:
    pid: int
    slot: int
    generation: int
    started: float  # monotonic time of its first report (it reports once serving)
    snapshot: Snapshot = field(default_factory=Snapshot)
    reported: float | None = None  # monotonic time of the last report
    blocked_where: str = ""  # the code the watchdog last saw blocking the loop
    blocked: int = 0  # times the watchdog reported the loop blocked
    # (time, requests) of recent reports, oldest first, for the rate.
    window: deque[tuple[float, int]] = field(default_factory=deque)

    def rate(self) -> float:
        """Requests per second over the last RATE_WINDOW seconds of reports."""
        if len(self.window) < 2:
            return 0.0
        (t0, r0), (t1, r1) = self.window[0], self.window[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass(frozen=True)
class Departure:
    """A shard that left, for the status's restart history."""

    at: float  # wall-clock time
    pid: int
    slot: int
    generation: int
    reason: Reason
    detail: str  # "was killed by signal 9", "blocked in app.py:12 (slow)", ...


@dataclass(frozen=True)
class ReloadOutcome:
    at: float  # wall-clock time
    ok: bool
    message: str


@dataclass
class Registry:
    shards: dict[int, ShardRecord] = field(default_factory=dict)
    departed: dict[int, ShardRecord] = field(default_factory=dict)  # recent, by pid
    history: deque[Departure] = field(default_factory=lambda: deque(maxlen=HISTORY))
    departures: Counter = field(default_factory=Counter)  # Reason -> count
    reloads: Counter = field(default_factory=Counter)  # True/False -> count
    last_reload: ReloadOutcome | None = None
    # Counters of shards that left longer ago than the recent ones.
    archived: Snapshot = field(default_factory=Snapshot)
    # The manager's own error-log records by level (metrics.LogCounter), in the totals.
    manager_logs: dict[str, int] = field(default_factory=dict)
    # Blocked-loop reports from every shard (a blocked shard cannot send a
    # heartbeat, and is often killed before its next one: counted here).
    blocked_events: int = 0

    # --- events ----------------------------------------------------------

    def report(self, pid: int, slot: int, generation: int, snapshot: Snapshot,
               now: float) -> None:
        """A shard's heartbeat snapshot; its record starts with its first report."""
        record = self.shards.get(pid)
        if record is None:
            record = self.departed.get(pid)
            if record is not None:
                snapshot = snapshot.counters_only()  # its gauges left with it
            else:
                record = self.shards[pid] = ShardRecord(pid, slot, generation, now)
        record.snapshot = snapshot
        record.reported = now
        window = record.window
        window.append((now, snapshot.requests))
        while len(window) > 2 and window[1][0] <= now - RATE_WINDOW:
            window.popleft()

    def blocked(self, pid: int, where: str) -> None:
        """The shard's watchdog saw its loop blocked in ``where``."""
        self.blocked_events += 1
        record = self.shards.get(pid)
        if record is not None:
            record.blocked_where = where
            record.blocked += 1

    def shard_gone(self, pid: int, slot: int, generation: int, reason: Reason, detail: str,
                   wall: float) -> None:
        """A shard left (``events.Departed``); its counters stay in the totals."""
        record = self.shards.pop(pid, None)
        if record is not None:
            record.snapshot = record.snapshot.counters_only()
            self.departed[pid] = record
            while len(self.departed) > RECENT_DEPARTED:
                oldest = next(iter(self.departed))
                self.archived = self.archived.plus(self.departed.pop(oldest).snapshot)
            if reason is Reason.BLOCKED and record.blocked_where:
                detail = f"{detail}; blocked in {record.blocked_where}"
        self.departures[reason] += 1
        self.history.append(Departure(wall, pid, slot, generation, reason, detail))

    def reload_finished(self, ok: bool, message: str, wall: float) -> None:
        self.reloads[ok] += 1
        self.last_reload = ReloadOutcome(wall, ok, message)

    # --- queries ---------------------------------------------------------

    def totals(self) -> Snapshot:
        """Every shard's counters summed, those that left included; gauges of live ones."""
        total = self.archived.plus(Snapshot(logs=self.manager_logs))
        for record in (*self.departed.values(), *self.shards.values()):
            total = total.plus(record.snapshot)
        return total

    def rate(self) -> float:
        """Requests per second of all live shards over the last RATE_WINDOW seconds."""
        return sum(record.rate() for record in self.shards.values())
