"""Why each shard left, as the state machine tells it (``Departed``)."""

from __future__ import annotations

from gshard.manager import events
from gshard.manager.events import Reason
from gshard.manager.fsm import Timings
from tests.support.fsm_driver import FsmDriver

TIMINGS = Timings(boot_timeout=10.0, heartbeat_timeout=5.0, graceful_timeout=20.0)


def serving(slots: int = 2) -> FsmDriver:
    """A state machine whose generation 1 serves: pids 100 and up, in slot order."""
    machine = FsmDriver(slots, TIMINGS)
    machine.started()
    return machine


def test_a_shard_that_dies_unasked_crashed():
    machine = serving()
    departed = machine.departure(100, -9)
    assert departed == events.Departed(100, 0, 1, Reason.CRASHED, "was killed by signal 9")


def test_a_shard_killed_for_a_blocked_loop_left_blocked():
    machine = serving()
    machine.now = 6.0
    for pid in machine.pids_of(1)[1:]:
        machine.feed(events.Beat, pid)
    machine.feed(events.Tick)
    departed = machine.departure(100, -9)
    assert departed.reason is Reason.BLOCKED
    assert departed.detail == "event loop blocked for more than 5s; was killed by signal 9"


def test_a_reload_drains_the_old_generation_as_reloaded():
    machine = serving()
    machine.feed(events.Reload)
    machine.ready_booting()
    assert {machine.departure(pid).reason for pid in machine.pids_of(1)} == {Reason.RELOADED}


def test_a_generation_that_fails_to_boot_left_boot_failed():
    machine = serving()
    first, second = machine.boot_generation()
    assert machine.departure(first, 4).reason is Reason.BOOT_FAILED
    assert machine.departure(second, 0).reason is Reason.BOOT_FAILED  # told to quit with it


def test_recycled_and_scaled_down_shards():
    machine = serving()
    machine.feed(events.RecycleRequested, 100)
    machine.ready_booting()
    assert machine.departure(100).reason is Reason.RECYCLED
    machine.feed(events.Scale, -1)
    assert machine.departure(101).reason is Reason.SCALED_DOWN


def test_shards_of_a_stopping_server_left_stopped():
    machine = serving()
    machine.feed(events.Stop, True)
    assert {machine.departure(pid).reason for pid in machine.pids_of(1)} == {Reason.STOPPED}
