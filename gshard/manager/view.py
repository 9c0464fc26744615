"""A read-only face of the manager's state machine: snapshots, never its live records.

The status document, ``/metrics``, statsd and the observer's books read the
machine through ``MachineView`` (built by ``ManagerFSM.view()``) and
``ShardView``: frozen copies, so nothing that shows the machine can change
it, and a view taken for one scrape stays consistent while the loop goes on.
``MachineQueries`` is the part of ``ManagerFSM`` the observers may call; they
import this module and ``events``, never ``fsm`` (import-linter checks it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from gshard.manager.events import Phase, Reason, ShardState, Upgrade


class GenerationState(enum.Enum):
    """What a generation with shards is doing, as the status shows it."""

    BOOTING = "booting"  # booting as a whole (first start or reload); not serving yet
    SERVING = "serving"
    DRAINING = "draining"  # replaced, failed to boot, or the server is stopping


@dataclass(frozen=True)
class ShardView:
    """One shard process, as the machine knows it at the moment of the view."""

    pid: int
    slot: int
    generation: int
    state: ShardState
    since: float  # monotonic time it was spawned, or became ready
    last_beat: float  # monotonic time of its last heartbeat
    kill_at: float | None  # when it is killed if it has not left by then
    leaving: Reason | None  # why it was asked (or forced) to leave


@dataclass(frozen=True)
class GenerationView:
    """A generation that has shards, what it is doing, and how many shards it has."""

    number: int  # 1 for the first start, one more for each reload
    state: GenerationState
    shards: int


@dataclass(frozen=True)
class MachineView:
    """The whole machine at one moment: what status, /metrics and statsd show."""

    phase: Phase
    slots: int  # shards the server runs (gunicorn's worker count)
    live: int  # the generation serving; 0 before the first is ready
    booting: int | None  # the generation booting as a whole (first start or reload)
    shards: tuple[ShardView, ...]  # in the order they were spawned
    generations: tuple[GenerationView, ...]  # those with shards, newest first
    steered: tuple[int, ...] | None  # slots new connections go to; None: the kernel's hash
    owns_files: bool  # the pidfile, control socket and unix socket files are this manager's
    upgrade: Upgrade  # where a self-upgrade (SIGUSR2) stands
    successor: int | None  # the successor manager's pid while it runs
    # A delayed stop's lame duck (--shutdown-delay): when its drain begins
    # (monotonic); None when not stopping that way, or once draining.
    lame_duck_until: float | None = None

    def of_generation(self, generation: int) -> tuple[ShardView, ...]:
        return tuple(shard for shard in self.shards if shard.generation == generation)


class MachineQueries(Protocol):
    """What an observer may ask the machine (``ManagerFSM`` answers)."""

    def view(self) -> MachineView:
        """The whole machine now."""

    def shard(self, pid: int) -> ShardView | None:
        """One shard now (a heartbeat's sender), without copying the rest."""
