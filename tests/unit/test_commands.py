"""Control commands against a state machine, answered over a real control socket."""

from __future__ import annotations

import json
import socket

import pytest

from gshard.manager import events
from gshard.manager.commands import CommandHandler
from gshard.manager.control import ControlServer, receive_answer
from gshard.manager.observe import health, status
from gshard.manager.observe.registry import Registry
from tests.support.fsm_driver import FsmDriver

INFO = status.ManagerInfo(pid=4242, started=0.0, started_wall=1_700_000_000.0,
                          app="hello:app", urls=("http://127.0.0.1:8000",))


class Rig:
    """A state machine with generation 1 serving, a control socket and a handler."""

    def __init__(self, path: str, slots: int = 2) -> None:
        self.control = ControlServer.open(path)
        # The loop checks the control socket's waiters after each turn.
        self.driver = FsmDriver(slots, after_turn=self.control.check_waiters)
        self.machine = self.driver.fsm
        self.reopened = 0
        self.handler = CommandHandler(self.machine, self.control, lambda: {"schema": 1},
                                      self._reopen, self._health)
        self.driver.started()

    def _health(self, kind: str) -> health.Verdict:
        view = status.View(INFO, self.driver.view(), Registry(), {}, self.driver.now, 0.0)
        return health.check(kind, view)

    def _reopen(self) -> int:
        self.reopened += 1
        return len(self.machine.shard_pids())

    def send(self, line: str) -> socket.socket:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(2)
        client.connect(self.control.path)
        self.control.accept()
        server_side = next(s for s in self.control.clients if s not in self._known())
        client.sendall(line.encode() + b"\n")
        command = self.control.read(server_side)
        self.driver.feed_events(*self.handler.handle(server_side, command, self.driver.now))
        return client

    def _known(self) -> set:
        return {w.client for w in self.control.waiters} | set(self.control.reload_waiters.values())


@pytest.fixture
def rig(tmp_path):
    rig = Rig(str(tmp_path / "ctl.sock"))
    yield rig
    rig.control.close()


def answer(client: socket.socket) -> str:
    return receive_answer(client).decode()


def pending(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        client.recv(1)
    except BlockingIOError:
        return True
    finally:
        client.setblocking(True)
    return False


def test_status_answers_the_document_at_once(rig):
    assert json.loads(answer(rig.send("status")).partition(" ")[2]) == {"schema": 1}


def test_scale_up_waits_until_the_new_shards_serve(rig):
    client = rig.send("scale 4")
    assert rig.machine.slots == 4
    assert pending(client)
    rig.driver.ready_booting()
    assert answer(client) == "ok 4 shards serving\n"


def test_scale_down_waits_until_the_removed_shards_are_gone(rig):
    client = rig.send("scale 1")
    leaving = [s.pid for s in rig.driver.view().shards if s.slot == 1]
    assert pending(client)
    rig.driver.feed_events(*[events.Exited(pid, 0, rig.driver.now) for pid in leaving])
    assert answer(client) == "ok 1 shard serving\n"


def test_health_answers_what_the_endpoints_answer(rig):
    assert answer(rig.send("health ready")) == "ok ready: generation 1 serves on 2 of 2 shards\n"
    assert answer(rig.send("health live")) == "ok alive: 2 shards reported within the last 30s\n"
    rig.driver.feed(events.Stop, True)
    assert answer(rig.send("health ready")) == "failed not ready: stopping; draining\n"
    assert answer(rig.send("health live")) == "ok alive: stopping\n"


@pytest.mark.parametrize("line", ["scale", "scale 0", "scale -1", "scale two", "recycle",
                                  "recycle 99999", "stop now", "dance", "health",
                                  "health sick"])
def test_bad_commands_fail_at_once(rig, line):
    assert answer(rig.send(line)).startswith("failed ")


def test_scale_is_refused_during_a_reload(rig):
    rig.driver.feed(events.Reload)
    assert answer(rig.send("scale 3")).startswith("failed Not scaling: the server is starting")


def test_recycle_waits_for_the_successor_then_reports_both_pids(rig):
    old = min(rig.machine.shard_pids())
    client = rig.send(f"recycle {old}")
    assert pending(client)
    successor = max(rig.machine.shard_pids())
    rig.driver.ready_booting()
    assert answer(client) == (f"ok Shard 0 (pid {old}) replaced by pid {successor}; "
                              f"pid {old} is draining\n")


def test_recycle_fails_when_the_successor_dies_booting(rig):
    old = min(rig.machine.shard_pids())
    client = rig.send(f"recycle {old}")
    successor = max(rig.machine.shard_pids())
    rig.driver.exit_shard(successor, 1)
    assert answer(client) == (f"failed The successor of shard 0 did not boot; pid {old} "
                              "keeps serving\n")


def test_stop_is_answered_when_the_manager_exits(rig):
    client = rig.send("stop fast")
    assert rig.driver.view().phase is events.Phase.STOPPING
    assert pending(client)
    rig.control.close()
    assert answer(client) == "ok Stopped fast\n"


def test_reopen(rig):
    assert answer(rig.send("reopen")) == "ok Log files reopened by the manager and 2 shards\n"
    assert rig.reopened == 1
