"""The manager's state machine driven as the manager's loop drives it, without processes.

One driver for every unit test that needs a ``ManagerFSM`` in some state
(the rules, the departures, the control commands, the status and metrics):
events are handled at the driver's clock (``now``, which the test moves),
each ``Spawn`` is answered at once with a ``Spawned`` carrying an invented
pid (from ``FIRST_PID`` up, in spawn order), as the loop answers it with a
fork, each ``ReadConfig`` with what the configuration on "disk" says
(``configured``, or ``config_error`` to make it fail), as the loop answers it
by reading it again, and every action is kept in ``actions``, in order.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from gshard.manager.events import (
    Action,
    ConfigFailed,
    ConfigRead,
    Departed,
    Event,
    Exited,
    Phase,
    ReadConfig,
    Ready,
    Reload,
    ShardState,
    Spawn,
    Spawned,
    Start,
    Timings,
)
from gshard.manager.fsm import ManagerFSM
from gshard.manager.view import MachineView

FIRST_PID = 100


class FsmDriver:
    """A ``ManagerFSM`` and the part of the manager's loop that feeds it."""

    def __init__(self, slots: int = 2, timings: Timings | None = None, inherited: bool = False,
                 after_turn: Callable[[], None] | None = None, preload: bool = False) -> None:
        """``after_turn`` runs after each turn's actions, as the loop then checks
        the control socket's waiters; ``preload``: the machine of a ``--preload`` manager."""
        self.fsm = ManagerFSM(slots=slots, timings=timings, inherited=inherited,
                              preload=preload)
        # What reading the configuration again finds: (shards, timings), or an error.
        self.configured: tuple[int, Timings] = (slots, timings or Timings())
        self.config_error: str | None = None
        self.now = 0.0
        self.actions: list[Action] = []
        self._pids = itertools.count(FIRST_PID)
        self._after_turn = after_turn

    # --- feeding events ---------------------------------------------------------

    def feed(self, event_type: Callable[..., Event], *args: Any) -> list[Action]:
        """Handle the event ``event_type(*args, now)``; the actions of the turn."""
        return self.feed_events(event_type(*args, self.now))

    def feed_events(self, *events: Event) -> list[Action]:
        """One turn of the loop: handle every event, then carry out the actions in
        order, answering each spawn at once; the actions of the turn."""
        pending: deque[Action] = deque()
        for event in events:
            pending.extend(self.fsm.handle(event))
        done = []
        while pending:
            action = pending.popleft()
            done.append(action)
            if isinstance(action, Spawn):
                pid = next(self._pids)
                pending.extend(self.fsm.handle(
                    Spawned(pid, action.slot, action.generation, self.now)))
            elif isinstance(action, ReadConfig):
                read = (ConfigRead(*self.configured, self.now) if self.config_error is None
                        else ConfigFailed(self.config_error, self.now))
                pending.extend(self.fsm.handle(read))
        self.actions += done
        if self._after_turn is not None:
            self._after_turn()
        return done

    # --- common steps -----------------------------------------------------------

    def started(self) -> list[int]:
        """Start and bring generation 1 up; its pids."""
        self.feed(Start)
        pids = self.pids_of(1)
        self.ready(*pids)
        assert self.view().phase is Phase.RUNNING
        return pids

    def boot_generation(self) -> list[int]:
        """Reload; the pids of the generation it boots."""
        self.feed(Reload)
        generation = self.view().booting
        assert generation is not None
        return self.pids_of(generation)

    def ready(self, *pids: int) -> list[Action]:
        """Each of ``pids`` reports ready, one turn each; the actions of those turns."""
        done = []
        for pid in pids:
            done += self.feed(Ready, pid)
        return done

    def ready_all(self, generation: int) -> list[Action]:
        return self.ready(*self.pids_of(generation))

    def ready_booting(self) -> list[Action]:
        """Every shard still booting, whatever its generation, reports ready."""
        return self.ready(*[shard.pid for shard in self.view().shards
                            if shard.state is ShardState.BOOTING])

    def exit_shard(self, pid: int, status: int = 0) -> list[Action]:
        """``pid`` exited with ``status`` (minus a signal's number: killed by it)."""
        return self.feed(Exited, pid, status)

    def departure(self, pid: int, status: int = 0) -> Departed:
        """``pid`` exits; how the machine says it left."""
        (departed,) = [a for a in self.exit_shard(pid, status) if isinstance(a, Departed)]
        return departed

    # --- looking ----------------------------------------------------------------

    def view(self) -> MachineView:
        return self.fsm.view()

    def pids_of(self, generation: int) -> list[int]:
        return sorted(shard.pid for shard in self.view().of_generation(generation))

    def pid_in_slot(self, slot: int) -> int:
        """The pid of the one shard in ``slot``."""
        (pid,) = [shard.pid for shard in self.view().shards if shard.slot == slot]
        return pid
