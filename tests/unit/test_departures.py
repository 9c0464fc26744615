"""Why each shard left, as the state machine tells it (``Departed``)."""

from __future__ import annotations

import itertools

from gshard.manager import events, fsm
from gshard.manager.events import Reason

TIMINGS = fsm.Timings(boot_timeout=10.0, heartbeat_timeout=5.0, graceful_timeout=20.0)


class Machine:
    def __init__(self, slots: int = 2) -> None:
        self.fsm = fsm.ManagerFSM(slots=slots, timings=TIMINGS)
        self.now = 0.0
        self.pids = itertools.count(100)
        self.feed(events.Start)
        self.ready_booting()

    def feed(self, event_type, *args) -> list:
        pending, out = list(self.fsm.handle(event_type(*args, self.now))), []
        while pending:
            action = pending.pop(0)
            out.append(action)
            if isinstance(action, events.Spawn):
                pending += self.fsm.handle(
                    events.Spawned(next(self.pids), action.slot, action.generation, self.now))
        return out

    def ready_booting(self) -> None:
        for shard in list(self.fsm.shards.values()):
            if shard.state is events.ShardState.BOOTING:
                self.feed(events.Ready, shard.pid)

    def exit(self, pid: int, status: int = 0) -> events.Departed:
        (departed,) = [a for a in self.feed(events.Exited, pid, status)
                       if isinstance(a, events.Departed)]
        return departed

    def generation(self, number: int) -> list[int]:
        return sorted(s.pid for s in self.fsm.of_generation(number))


def test_a_shard_that_dies_unasked_crashed():
    machine = Machine()
    departed = machine.exit(100, -9)
    assert departed == events.Departed(100, 0, 1, Reason.CRASHED, "was killed by signal 9")


def test_a_shard_killed_for_a_blocked_loop_left_blocked():
    machine = Machine()
    machine.now = 6.0
    for pid in machine.generation(1)[1:]:
        machine.feed(events.Beat, pid)
    machine.feed(events.Tick)
    departed = machine.exit(100, -9)
    assert departed.reason is Reason.BLOCKED
    assert departed.detail == "event loop blocked for more than 5s; was killed by signal 9"


def test_a_reload_drains_the_old_generation_as_reloaded():
    machine = Machine()
    machine.feed(events.Reload)
    machine.ready_booting()
    assert {machine.exit(pid).reason for pid in machine.generation(1)} == {Reason.RELOADED}


def test_a_generation_that_fails_to_boot_left_boot_failed():
    machine = Machine()
    machine.feed(events.Reload)
    first, second = machine.generation(2)
    assert machine.exit(first, 4).reason is Reason.BOOT_FAILED
    assert machine.exit(second, 0).reason is Reason.BOOT_FAILED  # told to quit with it


def test_recycled_and_scaled_down_shards():
    machine = Machine()
    machine.feed(events.RecycleRequested, 100)
    machine.ready_booting()
    assert machine.exit(100).reason is Reason.RECYCLED
    machine.feed(events.Scale, -1)
    assert machine.exit(101).reason is Reason.SCALED_DOWN


def test_shards_of_a_stopping_server_left_stopped():
    machine = Machine()
    machine.feed(events.Stop, True)
    assert {machine.exit(pid).reason for pid in machine.generation(1)} == {Reason.STOPPED}
