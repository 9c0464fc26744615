"""What each control-socket command asks of the manager, and when it is done.

The manager reads a command line from the control socket and hands it here;
this turns it into state-machine events (the machine decides, as for
signals) and leaves the client waiting on a condition over the machine's
state that says how the command ended. ``reload`` hears the outcome of the
reload that covers its request (``ReloadFinished``, by ticket); the others
are judged from the shards the machine has:

    status            the status document (JSON), at once
    health live|ready what /livez or /readyz answers, at once (ok or failed, and why)
    scale N           ok once N shards serve and no other slot has one
    recycle PID       ok once PID's successor serves (PID drains)
    stop [fast]       ok when the manager exits
    reopen            log files reopened by the manager and its shards, at once
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

from gshard import log
from gshard.manager.control import ControlServer, Outcome, Waiter
from gshard.manager.events import Event, RecycleRequested, Reload, Scale, ShardState, Stop
from gshard.manager.fsm import ManagerFSM
from gshard.manager.observe.health import KINDS, Verdict
from gshard.manager.view import ShardView

REFUSED_BUSY = "the server is starting, reloading or stopping; try again once it serves"
MAX_SHARDS = 1024


class CommandHandler:
    """Interprets control commands against the manager's state machine."""

    def __init__(
        self,
        machine: ManagerFSM,
        control: ControlServer,
        status: Callable[[], dict[str, Any]],
        reopen: Callable[[], int],
        health: Callable[[str], Verdict],
    ) -> None:
        self.machine = machine
        self.control = control
        self.status = status
        self.reopen = reopen  # reopens the log files; returns the shards told to
        self.health = health  # "live" or "ready" -> the verdict /livez or /readyz gives

    def handle(self, client: socket.socket, line: str, now: float) -> list[Event]:
        """Answer or park ``client``; the events the command asks the machine for."""
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name == "reload" and not argument:
            return [Reload(now, ticket=self.control.wait_for_reload(client))]
        if name == "status" and not argument:
            self.control.reply(client, True, json.dumps(self.status(), separators=(",", ":")))
            return []
        if name == "health" and argument in KINDS:
            verdict = self.health(argument)
            self.control.reply(client, verdict.ok, verdict.reason)
            return []
        if name == "reopen" and not argument:
            told = self.reopen()
            self.control.reply(client, True, "Log files reopened by the manager and "
                                             f"{log.shards(told)}")
            return []
        if name == "stop" and argument in ("", "fast"):
            graceful = argument == ""
            how = "gracefully" if graceful else "fast"
            self.control.wait(Waiter(client, lambda: None, (True, f"Stopped {how}")))
            return [Stop(graceful=graceful, now=now)]
        if name == "scale":
            return self._scale(client, argument, now)
        if name == "recycle":
            return self._recycle(client, argument, now)
        self.control.reply(client, False, f"unknown command {line[:40]!r}")
        return []

    def _scale(self, client: socket.socket, argument: str, now: float) -> list[Event]:
        if not argument.isdigit() or not 1 <= int(argument) <= MAX_SHARDS:
            self.control.reply(client, False, f"scale needs a shard count from 1 to {MAX_SHARDS}")
            return []
        if self.machine.busy():
            self.control.reply(client, False, f"Not scaling: {REFUSED_BUSY}")
            return []
        target = int(argument)
        delta = target - self.machine.slots
        step = 1 if delta > 0 else -1
        self.control.wait(Waiter(client, lambda: self._scaled(target)))
        return [Scale(step, now) for _ in range(abs(delta))]

    def _scaled(self, target: int) -> Outcome:
        machine = self.machine
        if machine.slots != target:
            if machine.busy():
                return False, f"Scaling to {target} interrupted: {REFUSED_BUSY}"
            return None
        leftover = any(slot >= target for slot in machine.occupied_slots())
        if machine.serving_slots().issuperset(range(target)) and not leftover:
            return True, f"{log.shards(target)} serving"
        return None

    def _recycle(self, client: socket.socket, argument: str, now: float) -> list[Event]:
        shard = self.machine.shard(int(argument)) if argument.isdigit() else None
        if shard is None or not self.machine.is_serving(shard.pid):
            self.control.reply(client, False, f"No serving shard has pid {argument[:20]}")
            return []
        if self.machine.busy() or self.machine.successor_of(shard) is not None:
            self.control.reply(client, False, f"Not recycling: {REFUSED_BUSY}")
            return []
        self.control.wait(Waiter(client, lambda: self._recycled(shard)))
        return [RecycleRequested(shard.pid, now)]

    def _recycled(self, shard: ShardView) -> Outcome:
        """``shard`` as it was when the recycle was asked for; the machine says how it is now."""
        successor = self.machine.successor_of(shard)
        current = self.machine.shard(shard.pid)
        if current is None or current.state is ShardState.DRAINING:
            replaced_by = f" by pid {successor.pid}" if successor is not None else ""
            return True, (f"Shard {shard.slot} (pid {shard.pid}) replaced{replaced_by}; "
                          f"pid {shard.pid} is draining")
        if successor is None:
            return False, (f"The successor of shard {shard.slot} did not boot; pid {shard.pid} "
                           "keeps serving")
        return None
