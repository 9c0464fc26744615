"""The manager's rules, driven by events alone: no processes, no clock."""

from __future__ import annotations

import pytest

from gshard.errors import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR
from gshard.manager import events
from gshard.manager.events import StopMode
from gshard.manager.fsm import ABORT_GRACE, STABLE_SECONDS, Timings, traceback_summary
from gshard.manager.view import GenerationState
from tests.support.fsm_driver import FsmDriver

TIMINGS = Timings(boot_timeout=10.0, heartbeat_timeout=5.0, graceful_timeout=20.0)


def driver(slots: int, inherited: bool = False) -> FsmDriver:
    """A state machine with the tests' timings."""
    return FsmDriver(slots, TIMINGS, inherited)


def signals(actions) -> dict[int, StopMode]:
    return {a.pid: a.mode for a in actions if isinstance(a, events.Signal)}


def spawns(actions) -> list[tuple[int, int]]:
    return [(a.slot, a.generation) for a in actions if isinstance(a, events.Spawn)]


def exits(actions) -> list[int]:
    return [a.code for a in actions if isinstance(a, events.Exit)]


def reload_results(actions) -> list[bool]:
    return [a.ok for a in actions if isinstance(a, events.ReloadFinished)]


def logs(actions, level: events.Level) -> list[str]:
    return [a.message for a in actions if isinstance(a, events.Log) and a.level is level]


def statuses(actions) -> list[events.ServiceState]:
    return [a.state for a in actions if isinstance(a, events.Status)]


def kinds(actions) -> list[type]:
    return [type(a) for a in actions]


def test_start_spawns_one_shard_per_slot_and_is_ready_only_when_all_are():
    d = driver(slots=3)
    actions = d.feed(events.Start)
    assert spawns(actions) == [(0, 1), (1, 1), (2, 1)]
    first, second, third = d.pids_of(1)
    d.ready(first, second)
    assert d.view().phase is events.Phase.STARTING
    d.ready(third)
    assert d.view().phase is events.Phase.RUNNING
    assert d.view().live == 1


def test_import_error_at_first_start_halts_with_its_status_and_logs_once():
    d = driver(slots=3)
    d.feed(events.Start)
    a, b, c = d.pids_of(1)
    d.feed(events.BootFailed, a, "Traceback...\nImportError: no module named flask")
    d.feed(events.BootFailed, b, "Traceback...\nImportError: no module named flask")
    tracebacks = [x for x in d.actions if isinstance(x, events.Log) and "Traceback" in x.message]
    assert len(tracebacks) == 1
    actions = d.feed(events.Exited, a, EXIT_APP_LOAD_ERROR)
    assert signals(actions) == {b: StopMode.QUIT, c: StopMode.QUIT}
    assert not spawns(actions)
    assert exits(d.feed(events.Exited, b, EXIT_APP_LOAD_ERROR)) == []
    assert exits(d.feed(events.Exited, c, 0)) == [EXIT_APP_LOAD_ERROR]


def test_boot_timeout_at_first_start_kills_and_halts():
    d = driver(slots=1)
    d.feed(events.Start)
    (pid,) = d.pids_of(1)
    d.now = TIMINGS.boot_timeout - 1
    assert signals(d.feed(events.Tick)) == {}
    d.now = TIMINGS.boot_timeout + 0.1
    assert signals(d.feed(events.Tick)) == {pid: StopMode.KILL}
    assert signals(d.feed(events.Tick)) == {}  # killed once, not on every tick
    assert exits(d.feed(events.Exited, pid, -9)) == [EXIT_BOOT_ERROR]


def test_crashed_shard_is_respawned_at_once_then_with_growing_backoff():
    d = driver(slots=2)
    first, _ = d.started()
    assert spawns(d.feed(events.Exited, first, -9)) == [(0, 1)]
    (replacement,) = [p for p in d.pids_of(1) if p > first + 1]
    # The replacement dies while booting: the slot is failing, so wait.
    actions = d.feed(events.Exited, replacement, 1)
    assert spawns(actions) == []
    due = d.fsm.next_deadline()
    assert due is not None and due > d.now
    d.now = due - 0.01
    assert spawns(d.feed(events.Tick)) == []
    d.now = due
    assert spawns(d.feed(events.Tick)) == [(0, 1)]


def test_a_shard_that_ran_well_is_respawned_without_delay():
    d = driver(slots=1)
    (pid,) = d.started()
    assert spawns(d.feed(events.Exited, pid, -9)) == [(0, 1)]
    (second,) = d.pids_of(1)
    d.ready(second)
    d.now += STABLE_SECONDS + 1
    assert spawns(d.feed(events.Exited, second, -9)) == [(0, 1)]


def test_reload_boots_the_new_generation_before_draining_the_old():
    d = driver(slots=2)
    old = d.started()
    actions = d.feed(events.Reload)
    assert spawns(actions) == [(0, 2), (1, 2)]
    assert signals(actions) == {}
    new = d.pids_of(2)
    assert signals(d.ready(new[0])) == {}  # half a generation never replaces the old one
    actions = d.ready(new[1])
    assert signals(actions) == {pid: StopMode.DRAIN for pid in old}
    assert reload_results(actions) == [True]
    assert d.view().live == 2


def test_failed_reload_keeps_the_old_generation_and_a_later_reload_can_succeed():
    d = driver(slots=2)
    old = d.started()
    d.feed(events.Reload)
    new = d.pids_of(2)
    d.feed(events.BootFailed, new[0], "Traceback...\nSyntaxError: invalid syntax")
    actions = d.feed(events.Exited, new[0], EXIT_APP_LOAD_ERROR)
    assert signals(actions) == {new[1]: StopMode.QUIT}
    assert reload_results(actions) == [False]
    assert any("SyntaxError" in a.message for a in actions if isinstance(a, events.ReloadFinished))
    assert d.view().live == 1 and d.view().phase is events.Phase.RUNNING
    assert exits(d.feed(events.Exited, new[1], 0)) == []
    assert all(d.fsm.shard(pid).state is events.ShardState.READY for pid in old)
    # Fixed code: the next reload goes through.
    d.feed(events.Reload)
    newer = d.pids_of(3)
    assert len(newer) == 2
    assert signals(d.ready(*newer)) == {pid: StopMode.DRAIN for pid in old}


SYNTAX_ERROR = """Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/gshard/shard/loader.py", line 57, in load
    module = importlib.import_module(module_name)
  File "<frozen importlib._bootstrap>", line 1204, in _gcd_import
  File "/srv/app/app.py", line 12
    x = (
        ^
SyntaxError: '(' was never closed
"""


def test_a_failed_reload_says_where_the_error_was_raised():
    d = driver(slots=1)
    d.started()
    d.feed(events.Reload)
    (new,) = d.pids_of(2)
    d.feed(events.BootFailed, new, SYNTAX_ERROR)
    actions = d.feed(events.Exited, new, EXIT_APP_LOAD_ERROR)
    (finished,) = [a for a in actions if isinstance(a, events.ReloadFinished)]
    assert finished.message.endswith("the application failed to load: SyntaxError: '(' was "
                                     "never closed (/srv/app/app.py, line 12)")


@pytest.mark.parametrize(("text", "summary"), [
    ("Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\n"
     "RuntimeError: no database", "RuntimeError: no database"),
    ("RuntimeError: said without a traceback", "RuntimeError: said without a traceback"),
    ("", "no traceback"),
])
def test_a_traceback_without_a_file_is_summed_up_by_its_last_line(text, summary):
    assert traceback_summary(text) == summary


def test_a_shard_reported_after_its_generation_failed_is_told_to_quit():
    # --preload: a template forks asynchronously, so a shard of a generation
    # can be reported after another shard of it already failed the boot.
    d = driver(slots=2)
    old = d.started()
    assert d.fsm.handle(events.Reload(d.now)) == [events.ReadConfig()]
    spawns_asked = d.fsm.handle(events.ConfigRead(2, TIMINGS, d.now))
    assert spawns(spawns_asked) == [(0, 2), (1, 2)]  # not answered yet
    first = d.fsm.handle(events.Spawned(200, 0, 2, d.now))
    assert first == []
    d.feed(events.Exited, 200, EXIT_APP_LOAD_ERROR)
    assert d.view().booting is None
    late = d.fsm.handle(events.Spawned(201, 1, 2, d.now))
    assert signals(late) == {201: StopMode.QUIT}
    assert d.fsm.shard(201).kill_at is not None  # killed if it does not go
    assert all(d.fsm.shard(pid).state is events.ShardState.READY for pid in old)


def test_a_shard_reported_while_stopping_is_told_to_quit():
    d = driver(slots=1)
    d.started()
    d.feed(events.Stop, True)
    assert signals(d.fsm.handle(events.Spawned(300, 0, 1, d.now))) == {300: StopMode.QUIT}


def test_reload_boot_timeout_keeps_the_old_generation():
    d = driver(slots=1)
    (old,) = d.started()
    d.feed(events.Beat, old)
    d.feed(events.Reload)
    (new,) = d.pids_of(2)
    d.now = TIMINGS.boot_timeout + 1
    d.feed(events.Beat, old)
    assert signals(d.feed(events.Tick)) == {new: StopMode.KILL}
    actions = d.feed(events.Exited, new, -9)
    assert reload_results(actions) == [False]
    assert d.fsm.shard(old).state is events.ShardState.READY


def test_a_reload_asked_for_while_one_boots_follows_it_and_answers_its_own_waiter():
    d = driver(slots=1)
    d.started()
    d.feed_events(events.Reload(d.now, ticket=1))
    (booting,) = d.pids_of(2)
    actions = d.feed_events(events.Reload(d.now, ticket=2), events.Reload(d.now, ticket=3))
    assert signals(actions) == {} and spawns(actions) == []  # generation 2 boots on
    assert logs(actions, events.Level.INFO) == [
        "Reload asked for while generation 2 boots; it follows once that generation serves "
        "or fails"]
    actions = d.ready(booting)
    # Generation 2 answers the request it covered; the two made meanwhile make one more.
    (finished,) = [a for a in actions if isinstance(a, events.ReloadFinished)]
    assert (finished.ok, finished.tickets) == (True, (1,))
    assert kinds(actions).index(events.ReloadFinished) < kinds(actions).index(events.ReadConfig)
    assert spawns(actions) == [(0, 3)]
    (finished,) = [a for a in d.ready(*d.pids_of(3)) if isinstance(a, events.ReloadFinished)]
    assert (finished.ok, finished.tickets) == (True, (2, 3))
    assert d.view().booting is None and d.view().live == 3


def test_a_reload_asked_for_while_the_configuration_is_read_is_covered_by_it():
    d = driver(slots=1)
    d.started()
    # Both in one turn of the loop: the second comes before the configuration is read.
    actions = d.feed_events(events.Reload(d.now, ticket=1), events.Reload(d.now, ticket=2))
    assert kinds(actions).count(events.ReadConfig) == 1
    (finished,) = [a for a in d.ready(*d.pids_of(2)) if isinstance(a, events.ReloadFinished)]
    assert finished.tickets == (1, 2)
    assert d.view().booting is None  # nothing follows


def test_a_reload_that_fails_to_boot_is_followed_by_the_one_asked_for_meanwhile():
    d = driver(slots=1)
    d.started()
    d.feed_events(events.Reload(d.now, ticket=1))
    (broken,) = d.pids_of(2)
    d.feed_events(events.Reload(d.now, ticket=2))
    actions = d.feed(events.Exited, broken, EXIT_APP_LOAD_ERROR)
    (failed,) = [a for a in actions if isinstance(a, events.ReloadFinished)]
    assert (failed.ok, failed.tickets) == (False, (1,))
    assert spawns(actions) == [(0, 3)]
    assert reload_results(d.ready(*d.pids_of(3))) == [True]


def test_draining_shards_are_killed_after_the_graceful_timeout():
    d = driver(slots=1)
    (old,) = d.started()
    d.feed(events.Reload)
    (new,) = d.pids_of(2)
    d.ready(new)
    d.now += TIMINGS.graceful_timeout - 1
    d.feed(events.Beat, new)
    assert old not in signals(d.feed(events.Tick))
    d.now += 2
    d.feed(events.Beat, new)
    assert signals(d.feed(events.Tick)) == {old: StopMode.KILL}


def test_blocked_shard_is_killed_and_replaced():
    d = driver(slots=1)
    (pid,) = d.started()
    d.now = TIMINGS.heartbeat_timeout - 1
    d.feed(events.Beat, pid)
    d.now += TIMINGS.heartbeat_timeout - 0.5
    assert signals(d.feed(events.Tick)) == {}
    d.now += 1
    assert signals(d.feed(events.Tick)) == {pid: StopMode.ABORT}  # worker_abort, then exit
    d.now += ABORT_GRACE - 0.1
    assert signals(d.feed(events.Tick)) == {}
    d.now += 0.2
    assert signals(d.feed(events.Tick)) == {pid: StopMode.KILL}  # it could not run Python
    assert spawns(d.feed(events.Exited, pid, -9)) == [(0, 1)]


def test_an_aborted_shard_that_exits_is_replaced_without_a_kill():
    d = driver(slots=1)
    (pid,) = d.started()
    d.now = TIMINGS.heartbeat_timeout + 1
    assert signals(d.feed(events.Tick)) == {pid: StopMode.ABORT}
    assert spawns(d.feed(events.Exited, pid, 1)) == [(0, 1)]
    d.now += ABORT_GRACE + 1
    assert signals(d.feed(events.Tick)) == {}


def test_a_drain_does_not_postpone_the_kill_of_an_aborted_shard():
    d = driver(slots=1)
    (old,) = d.started()
    d.now = TIMINGS.heartbeat_timeout + 1
    assert signals(d.feed(events.Tick)) == {old: StopMode.ABORT}
    d.feed(events.Stop, True)  # asks it to drain, with the whole graceful timeout
    d.now += ABORT_GRACE + 0.1
    assert signals(d.feed(events.Tick)) == {old: StopMode.KILL}


def test_recycle_drains_only_once_the_successor_is_ready():
    d = driver(slots=2)
    first, second = d.started()
    actions = d.feed(events.RecycleRequested, first)
    assert spawns(actions) == [(0, 1)]
    assert signals(actions) == {}
    assert spawns(d.feed(events.RecycleRequested, first)) == []  # one successor at a time
    successor = max(d.pids_of(1))
    assert signals(d.ready(successor)) == {first: StopMode.DRAIN}
    assert d.fsm.shard(second) is not None and d.fsm.shard(second).state is events.ShardState.READY


def test_failed_recycle_successor_leaves_its_predecessor_serving():
    d = driver(slots=1)
    (pid,) = d.started()
    d.feed(events.RecycleRequested, pid)
    successor = max(d.pids_of(1))
    actions = d.feed(events.Exited, successor, EXIT_APP_LOAD_ERROR)
    assert spawns(actions) == [] and signals(actions) == {}
    assert d.fsm.shard(pid).state is events.ShardState.READY


@pytest.mark.parametrize(("graceful", "mode"), [(True, StopMode.DRAIN), (False, StopMode.QUIT)])
def test_stop_signals_every_shard_and_exits_zero_when_all_are_gone(graceful, mode):
    d = driver(slots=2)
    pids = d.started()
    actions = d.feed(events.Stop, graceful)
    assert signals(actions) == {pid: mode for pid in pids}
    assert exits(d.feed(events.Exited, pids[0], 0)) == []
    assert exits(d.feed(events.Exited, pids[1], 0)) == [0]


def test_no_respawn_while_stopping():
    d = driver(slots=2)
    pids = d.started()
    d.feed(events.Stop, True)
    assert spawns(d.feed(events.Exited, pids[0], -9)) == []


def test_fast_stop_after_graceful_escalates_to_quit():
    d = driver(slots=1)
    (pid,) = d.started()
    d.feed(events.Stop, True)
    assert signals(d.feed(events.Stop, False)) == {pid: StopMode.QUIT}


# --- a delayed stop: the lame duck (--shutdown-delay) ---------------------------

LAME_DUCK_TIMINGS = Timings(boot_timeout=10.0, heartbeat_timeout=5.0, graceful_timeout=20.0,
                            shutdown_delay=3.0)


def test_a_delayed_stop_serves_as_a_lame_duck_then_drains():
    d = FsmDriver(2, LAME_DUCK_TIMINGS)
    pids = d.started()
    actions = d.feed(events.Stop, True)
    # Stopping at once (readiness fails, systemd hears STOPPING=1), yet still serving.
    assert signals(actions) == {pid: StopMode.LAME_DUCK for pid in pids}
    assert statuses(actions) == [events.ServiceState.STOPPING]
    view = d.view()
    assert view.phase is events.Phase.STOPPING and view.lame_duck_until == 3.0
    assert [g.state for g in view.generations] == [GenerationState.SERVING]
    assert d.fsm.next_deadline() == 3.0
    d.now = 2.9
    assert signals(d.feed(events.Tick)) == {}
    d.now = 3.0
    actions = d.feed(events.Tick)
    assert signals(actions) == {pid: StopMode.DRAIN for pid in pids}
    assert d.view().lame_duck_until is None
    assert [g.state for g in d.view().generations] == [GenerationState.DRAINING]
    # The drain has the whole graceful timeout, counted from its start.
    d.now = 3.0 + TIMINGS.graceful_timeout
    assert signals(d.feed(events.Tick)) == {pid: StopMode.KILL for pid in pids}


def test_a_second_graceful_stop_ends_the_lame_duck_early():
    d = FsmDriver(1, LAME_DUCK_TIMINGS)
    (pid,) = d.started()
    d.feed(events.Stop, True)
    d.now = 1.0
    assert signals(d.feed(events.Stop, True)) == {pid: StopMode.DRAIN}
    d.now = 5.0
    assert signals(d.feed(events.Tick)) == {}  # the delay's end changes nothing now
    assert signals(d.feed(events.Stop, True)) == {}
    assert exits(d.feed(events.Exited, pid, 0)) == [0]


def test_a_fast_stop_during_the_lame_duck_quits_at_once():
    d = FsmDriver(2, LAME_DUCK_TIMINGS)
    pids = d.started()
    d.feed(events.Stop, True)
    assert signals(d.feed(events.Stop, False)) == {pid: StopMode.QUIT for pid in pids}
    assert d.view().lame_duck_until is None


def test_the_lame_duck_quits_what_boots_and_refuses_reloads_and_respawns():
    d = FsmDriver(2, LAME_DUCK_TIMINGS)
    old = d.started()
    new = d.boot_generation()
    d.ready(new[0])  # half of a reload is up: it never served, so it does not linger
    actions = d.feed(events.Stop, True)
    assert signals(actions) == {old[0]: StopMode.LAME_DUCK, old[1]: StopMode.LAME_DUCK,
                                new[0]: StopMode.QUIT, new[1]: StopMode.QUIT}
    assert reload_results(d.feed(events.Reload)) == [False]
    assert spawns(d.feed(events.Exited, old[0], -9)) == []  # no respawn while stopping
    d.feed(events.Exited, new[0], 0)
    d.feed(events.Exited, new[1], 0)
    assert exits(d.feed(events.Exited, old[1], 0)) == [0]  # all gone: no need to wait


def test_without_a_delay_or_before_serving_a_stop_drains_at_once():
    d = driver(slots=1)
    (pid,) = d.started()
    assert signals(d.feed(events.Stop, True)) == {pid: StopMode.DRAIN}
    d = FsmDriver(1, LAME_DUCK_TIMINGS)
    d.feed(events.Start)
    (booting,) = d.pids_of(1)
    # Nothing serves yet, so there is nobody for a load balancer to drop.
    assert signals(d.feed(events.Stop, True)) == {booting: StopMode.DRAIN}
    assert d.view().lame_duck_until is None


def test_an_upgrade_hands_over_without_a_lame_duck():
    d = FsmDriver(1, LAME_DUCK_TIMINGS)
    (pid,) = d.started()
    d.feed(events.UpgradeRequested)
    d.feed(events.SuccessorSpawned, SUCCESSOR)
    assert signals(d.feed(events.SuccessorReady)) == {pid: StopMode.DRAIN}


def test_a_reload_asked_for_while_the_first_generation_boots_follows_it():
    d = driver(slots=2)
    d.feed(events.Start)
    actions = d.feed_events(events.Reload(d.now, ticket=7))
    assert reload_results(actions) == [] and spawns(actions) == []
    assert logs(actions, events.Level.INFO) == [
        "Reload asked for while the first generation boots; it follows once that "
        "generation serves or fails"]
    actions = d.ready_all(1)
    assert "Ready: 2 shards serving" in logs(actions, events.Level.INFO)
    assert kinds(actions).count(events.ReadConfig) == 1
    assert spawns(actions) == [(0, 2), (1, 2)]
    (finished,) = [a for a in d.ready_all(2) if isinstance(a, events.ReloadFinished)]
    assert (finished.ok, finished.tickets) == (True, (7,))


def test_a_reload_asked_for_while_stopping_is_refused_to_its_waiter():
    d = driver(slots=1)
    d.started()
    d.feed(events.Stop, True)
    actions = d.feed_events(events.Reload(d.now, ticket=4))
    assert [(a.ok, a.message, a.tickets) for a in actions
            if isinstance(a, events.ReloadFinished)] == [
        (False, "Reload refused: the server is stopping", (4,))]


def test_a_stop_before_the_configuration_is_read_boots_nothing():
    d = driver(slots=1)
    d.started()
    actions = d.feed_events(events.Reload(d.now), events.Stop(True, d.now))
    assert spawns(actions) == [] and d.view().booting is None


def steers(actions) -> list[tuple[int, ...]]:
    return [a.slots for a in actions if isinstance(a, events.Steer)]


def listeners(actions) -> list[int]:
    return [a.count for a in actions if isinstance(a, events.Listeners)]


def test_adding_a_shard_keeps_connections_off_its_listener_until_it_serves():
    d = driver(slots=2)
    d.started()
    actions = d.feed(events.Scale, +1)
    assert steers(actions) == [(0, 1)]  # only the two serving slots get new connections
    assert listeners(actions) == [3]
    assert actions.index(next(a for a in actions if isinstance(a, events.Steer))) < actions.index(
        next(a for a in actions if isinstance(a, events.Listeners)))  # steered before it opens
    assert spawns(actions) == [(2, 1)]
    new = max(d.pids_of(1))
    assert steers(d.ready(new)) == [(0, 1, 2)]
    assert d.fsm.slots == 3


def test_removing_a_shard_steers_away_first_and_closes_its_listener_only_after_it_exits():
    d = driver(slots=3)
    pids = d.started()
    leaving = d.pid_in_slot(2)
    actions = d.feed(events.Scale, -1)
    assert steers(actions) == [(0, 1)]
    assert signals(actions) == {leaving: StopMode.RETIRE}
    assert listeners(actions) == []  # its queue may still hold connections
    assert listeners(d.feed(events.Exited, leaving, 0)) == [2]
    assert spawns(d.actions) == [(0, 1), (1, 1), (2, 1)]  # nothing respawned
    assert sorted(d.fsm.shard_pids()) == sorted(p for p in pids if p != leaving)


def test_scaling_back_up_reuses_a_listener_still_draining():
    d = driver(slots=2)
    d.started()
    leaving = d.pid_in_slot(1)
    d.feed(events.Scale, -1)
    actions = d.feed(events.Scale, +1)
    assert listeners(actions) == []  # slot 1's listener was never closed
    assert spawns(actions) == [(1, 1)]
    assert listeners(d.feed(events.Exited, leaving, 0)) == []


def test_the_last_shard_is_never_removed_and_scaling_waits_for_a_reload():
    d = driver(slots=1)
    d.started()
    assert steers(d.feed(events.Scale, -1)) == []
    d.feed(events.Reload)
    assert spawns(d.feed(events.Scale, +1)) == []


def test_a_reload_after_scaling_boots_every_slot_and_keeps_steering():
    d = driver(slots=2)
    d.started()
    d.feed(events.Scale, +1)
    d.ready(max(d.pids_of(1)))
    actions = d.feed(events.Reload)
    assert spawns(actions) == [(0, 2), (1, 2), (2, 2)]
    assert steers(d.ready(*d.pids_of(2))) == []  # still 3, nothing to change


def test_a_second_added_shard_still_booting_gets_no_connections():
    d = driver(slots=2)
    d.started()
    d.feed(events.Scale, +1)
    third = max(d.pids_of(1))
    d.feed(events.Scale, +1)
    fourth = max(d.pids_of(1))
    assert steers(d.ready(third)) == [(0, 1, 2)]  # not slot 3: it still boots
    assert steers(d.ready(fourth)) == [(0, 1, 2, 3)]


def test_a_crashed_slot_gets_no_new_connections_until_its_replacement_serves():
    d = driver(slots=3)
    d.started()
    victim = d.pid_in_slot(1)
    actions = d.feed(events.Exited, victim, -9)
    assert steers(actions) == [(0, 2)]
    assert spawns(actions) == [(1, 1)]
    replacement = max(d.pids_of(1))
    assert steers(d.ready(replacement)) == [(0, 1, 2)]


def test_all_slots_serving_leaves_the_kernel_hash_alone():
    d = driver(slots=3)
    d.started()
    d.feed(events.Reload)
    assert steers(d.ready(*d.pids_of(2))) == []
    assert d.view().steered is None


# --- upgrading gshard itself (SIGUSR2) -------------------------------------

SUCCESSOR = 9000


def upgrading() -> FsmDriver:
    """A serving manager whose successor has been started and boots."""
    d = driver(slots=2)
    d.started()
    assert kinds(d.feed(events.UpgradeRequested)) == [events.StartSuccessor]
    d.feed(events.SuccessorSpawned, SUCCESSOR)
    return d


def test_a_manager_started_afresh_owns_its_files_from_the_start():
    d = driver(slots=2)
    actions = d.feed(events.Start)
    assert kinds(actions)[0] is events.TakeOwnership
    assert d.fsm.owns_files


def test_a_successor_takes_ownership_only_once_its_first_generation_is_ready():
    d = driver(slots=2, inherited=True)
    assert events.TakeOwnership not in kinds(d.feed(events.Start))
    first, second = d.pids_of(1)
    assert events.TakeOwnership not in kinds(d.ready(first))
    assert not d.fsm.owns_files
    actions = d.ready(second)
    # Ownership first: the predecessor drains only once the files are ours.
    assert kinds(actions).index(events.TakeOwnership) < kinds(actions).index(events.Status)
    assert d.fsm.owns_files
    d.feed(events.Reload)
    assert events.TakeOwnership not in kinds(d.ready(*d.pids_of(2)))


def test_upgrade_drains_only_once_the_successor_is_ready_and_then_leaves_systemd_to_it():
    d = upgrading()
    old = d.pids_of(1)
    assert signals(d.actions) == {}  # nothing drains while the successor boots
    assert d.view().upgrade is events.Upgrade.STARTING
    actions = d.feed(events.SuccessorReady)
    assert signals(actions) == {pid: StopMode.DRAIN for pid in old}
    assert events.Title("manager (upgraded, draining)") in actions
    assert statuses(actions) == []  # the successor speaks for the service now
    assert d.view().upgrade is events.Upgrade.HANDING_OVER
    assert d.view().phase is events.Phase.STOPPING
    assert not d.fsm.owns_files  # the pidfile, control and unix sockets are the successor's
    assert statuses(d.feed(events.Stop, False)) == []
    assert exits(d.feed(events.Exited, old[0], 0)) == []
    assert exits(d.feed(events.Exited, old[1], 0)) == [0]


def test_a_successor_that_exits_before_it_is_ready_leaves_this_manager_serving():
    d = upgrading()
    actions = d.feed(events.SuccessorExited, SUCCESSOR, EXIT_APP_LOAD_ERROR)
    assert logs(actions, events.Level.ERROR) == [
        f"Upgrade failed: the new manager (pid {SUCCESSOR}) exited with status "
        f"{EXIT_APP_LOAD_ERROR}; this manager keeps serving"]
    assert signals(actions) == {} and statuses(actions) == []
    assert d.view().phase is events.Phase.RUNNING and d.fsm.owns_files
    assert d.view().upgrade is events.Upgrade.NONE and d.view().successor is None
    # A fixed deploy may retry.
    assert kinds(d.feed(events.UpgradeRequested)) == [events.StartSuccessor]


def test_a_successor_that_cannot_be_started_leaves_the_next_upgrade_possible():
    d = driver(slots=1)
    d.started()
    d.feed(events.UpgradeRequested)
    actions = d.feed(events.SuccessorSpawnFailed, "No such file or directory")
    assert logs(actions, events.Level.ERROR) == [
        "Upgrade failed: cannot start a new manager: No such file or directory"]
    assert kinds(d.feed(events.UpgradeRequested)) == [events.StartSuccessor]


def test_a_successor_exiting_after_it_took_over_is_none_of_this_managers_business():
    d = upgrading()
    d.feed(events.SuccessorReady)
    actions = d.feed(events.SuccessorExited, SUCCESSOR, 0)
    assert actions == []
    assert d.view().upgrade is events.Upgrade.HANDING_OVER


def test_a_second_upgrade_is_refused_while_one_is_under_way():
    d = upgrading()
    refused = ["Upgrade already under way; SIGUSR2 ignored"]
    actions = d.feed(events.UpgradeRequested)
    assert logs(actions, events.Level.WARNING) == refused
    assert events.StartSuccessor not in kinds(actions)
    d.feed(events.SuccessorReady)
    d.feed(events.SuccessorExited, SUCCESSOR, 0)
    actions = d.feed(events.UpgradeRequested)  # handed over: never upgrades again
    assert logs(actions, events.Level.WARNING) == refused
    assert events.StartSuccessor not in kinds(actions)


@pytest.mark.parametrize("inherited", [False, True])
def test_upgrade_is_refused_before_the_server_serves(inherited):
    d = driver(slots=2, inherited=inherited)
    d.feed(events.Start)
    actions = d.feed(events.UpgradeRequested)
    assert logs(actions, events.Level.WARNING) == ["Upgrade refused: the server is not serving yet"]
    assert events.StartSuccessor not in kinds(actions)
    assert d.view().upgrade is events.Upgrade.NONE


# --- gunicorn's server hooks: where the rules put them ---------------------------


def hook_calls(actions) -> list:
    """Hook and Spawn actions in order, the way the manager carries them out."""
    return [(a.name, *a.args) if isinstance(a, events.Hook) else ("spawn", a.slot)
            for a in actions if isinstance(a, (events.Hook, events.Spawn))]


def test_start_runs_gunicorns_start_hooks_before_any_shard_is_forked():
    d = driver(slots=2)
    assert hook_calls(d.feed(events.Start)) == [
        ("nworkers_changed", 2, None), ("on_starting",), ("when_ready",),
        ("spawn", 0), ("spawn", 1)]


def test_with_preload_when_ready_runs_once_the_first_generation_serves():
    """gunicorn's --preload imports the application before when_ready; here a template
    per generation imports it, so when_ready waits for the first generation."""
    d = FsmDriver(2, TIMINGS, preload=True)
    assert hook_calls(d.feed(events.Start)) == [
        ("nworkers_changed", 2, None), ("on_starting",), ("spawn", 0), ("spawn", 1)]
    first, second = d.pids_of(1)
    assert hook_calls(d.ready(first)) == []
    actions = d.ready(second)
    assert hook_calls(actions) == [("when_ready",)]
    ready = next(i for i, a in enumerate(actions) if isinstance(a, events.Log)
                 and a.message == "Ready: 2 shards serving")
    assert actions[ready + 1] == events.Hook("when_ready")
    # Once: neither a respawn nor a reload's generation runs it again.
    d.exit_shard(first, 1)
    d.ready_booting()
    d.boot_generation()
    d.ready_all(2)
    assert [a for a in d.actions if a == events.Hook("when_ready")] == [events.Hook("when_ready")]


def test_with_preload_when_ready_never_runs_if_the_first_generation_fails_to_load():
    d = FsmDriver(2, TIMINGS, preload=True)
    d.feed(events.Start)
    a, b = d.pids_of(1)
    d.feed(events.BootFailed, a, "Traceback...\nRuntimeError: no database")
    d.feed(events.Exited, a, EXIT_APP_LOAD_ERROR)
    assert exits(d.feed(events.Exited, b, EXIT_APP_LOAD_ERROR)) == [EXIT_APP_LOAD_ERROR]
    assert events.Hook("when_ready") not in d.actions


def test_reload_runs_on_reload_before_the_new_generation_is_forked():
    d = driver(slots=2)
    d.started()
    assert hook_calls(d.feed(events.Reload)) == [
        ("nworkers_changed", 2, 2), ("on_reload",), ("spawn", 0), ("spawn", 1)]


def test_a_reload_runs_no_hook_until_it_boots():
    d = driver(slots=1)
    d.feed(events.Start)  # still starting: the reload waits
    assert hook_calls(d.feed(events.Reload)) == []
    assert ("on_reload",) in hook_calls(d.ready_all(1))
    d.config_error = "SyntaxError: invalid syntax (gunicorn.conf.py, line 3)"
    assert hook_calls(d.feed(events.Reload)) == []  # a configuration that did not load


def test_scaling_tells_nworkers_changed_the_new_and_old_counts():
    d = driver(slots=2)
    d.started()
    assert hook_calls(d.feed(events.Scale, +1)) == [("nworkers_changed", 3, 2), ("spawn", 2)]
    d.ready_booting()
    assert hook_calls(d.feed(events.Scale, -1)) == [("nworkers_changed", 2, 3)]
    assert hook_calls(d.feed(events.Scale, -1)) == [("nworkers_changed", 1, 2)]
    assert hook_calls(d.feed(events.Scale, -1)) == []  # the last shard stays: nothing changed


def test_one_shard_is_counted_as_one_shard():
    d = driver(slots=1)
    assert logs(d.feed(events.Start), events.Level.INFO) == ["Booting 1 shard"]
    (pid,) = d.pids_of(1)
    assert "Ready: 1 shard serving" in logs(d.ready(pid), events.Level.INFO)


# --- a reload reads the configuration again ------------------------------------------


def test_a_reload_reads_the_configuration_before_it_boots_anything():
    d = driver(slots=2)
    d.started()
    actions = d.feed(events.Reload)
    assert kinds(actions)[0] is events.ReadConfig
    assert kinds(actions).index(events.ReadConfig) < kinds(actions).index(events.Hook)


def test_a_configuration_that_does_not_load_keeps_the_serving_generation():
    d = driver(slots=2)
    old = d.started()
    d.config_error = "--shards: must be between 1 and 1024 (got 0)"
    actions = d.feed_events(events.Reload(d.now, ticket=5))
    message = ("Reload failed, generation 1 keeps serving: the configuration did not load: "
               "--shards: must be between 1 and 1024 (got 0)")
    assert logs(actions, events.Level.ERROR) == [message]
    assert [(a.ok, a.message, a.tickets) for a in actions
            if isinstance(a, events.ReloadFinished)] == [(False, message, (5,))]
    assert spawns(actions) == [] and signals(actions) == {} and statuses(actions) == []
    assert sorted(d.fsm.shard_pids()) == old and not d.fsm.busy()
    d.config_error = None  # fixed: the next reload goes through
    d.feed(events.Reload)
    assert reload_results(d.ready_all(2)) == [True]


def test_a_reload_to_more_shards_opens_their_listeners_first_and_steers_around_them():
    d = driver(slots=2)
    d.started()
    d.configured = (4, TIMINGS)
    actions = d.feed(events.Reload)
    order = kinds(actions)
    assert steers(actions) == [(0, 1)] and listeners(actions) == [4]
    assert order.index(events.Steer) < order.index(events.Listeners) < order.index(events.Spawn)
    assert spawns(actions) == [(0, 2), (1, 2), (2, 2), (3, 2)]
    assert ("nworkers_changed", 4, 2) in hook_calls(actions)
    assert "Reloading: booting generation 2 (4 shards, was 2)" in logs(actions,
                                                                       events.Level.INFO)
    assert d.fsm.slots == 2  # generation 1 still serves its two
    actions = d.ready_all(2)
    assert steers(actions) == [(0, 1, 2, 3)]
    assert [a.message for a in actions if isinstance(a, events.ReloadFinished)] == [
        "Generation 2 is serving (4 shards, was 2); generation 1 is draining"]
    assert d.fsm.slots == 4


def test_a_reload_to_fewer_shards_retires_the_removed_slots_once_it_serves():
    d = driver(slots=3)
    d.started()
    removed = d.pid_in_slot(2)
    d.configured = (2, TIMINGS)
    actions = d.feed(events.Reload)
    assert spawns(actions) == [(0, 2), (1, 2)] and listeners(actions) == []
    actions = d.ready_all(2)
    # Steered away from slot 2 first, then its shard accepts what was queued and drains.
    assert steers(actions) == [(0, 1)]
    assert kinds(actions).index(events.Steer) < kinds(actions).index(events.Signal)
    assert signals(actions)[removed] is StopMode.RETIRE
    assert {mode for pid, mode in signals(actions).items() if pid != removed} == {
        StopMode.DRAIN}
    assert listeners(actions) == []  # its queue may still hold connections
    assert listeners(d.feed(events.Exited, removed, 0)) == [2]
    assert d.fsm.slots == 2


def test_a_failed_reload_to_more_shards_closes_the_listeners_it_opened():
    d = driver(slots=1)
    d.started()
    d.configured = (3, TIMINGS)
    d.feed(events.Reload)
    first, second, third = d.pids_of(2)
    d.feed(events.Exited, first, EXIT_APP_LOAD_ERROR)
    d.feed(events.Exited, second, 0)
    assert listeners(d.feed(events.Exited, third, 0)) == [1]
    assert d.fsm.slots == 1 and steers(d.actions) == [(0,)]


def test_a_scaled_count_survives_a_reload_unless_the_configured_count_changed():
    d = driver(slots=2)
    d.started()
    d.feed(events.Scale, +1)
    d.ready_booting()
    assert spawns(d.feed(events.Reload)) == [(0, 2), (1, 2), (2, 2)]  # the file still says 2
    d.ready_all(2)
    d.configured = (1, TIMINGS)  # edited: the file's count wins
    assert spawns(d.feed(events.Reload)) == [(0, 3)]


def test_each_generation_is_judged_by_the_timings_it_was_booted_with():
    d = driver(slots=1)
    (old,) = d.started()
    d.configured = (1, Timings(boot_timeout=60.0, heartbeat_timeout=40.0, graceful_timeout=3.0))
    d.feed(events.Reload)
    (new,) = d.pids_of(2)
    d.now = TIMINGS.boot_timeout + 1  # past the old boot timeout, within the new one
    d.feed(events.Beat, old)
    assert signals(d.feed(events.Tick)) == {}
    d.ready(new)  # generation 1 drains within its own graceful timeout (20 s), not 3 s
    d.now += 4
    d.feed(events.Beat, new)
    assert signals(d.feed(events.Tick)) == {}
    d.now += TIMINGS.graceful_timeout
    d.feed(events.Beat, new)
    assert signals(d.feed(events.Tick)) == {old: StopMode.KILL}
    d.now += 30  # generation 2's heartbeat timeout is 40 s, not 5
    assert signals(d.feed(events.Tick)) == {}
    d.now += 11
    assert signals(d.feed(events.Tick)) == {new: StopMode.ABORT}
