"""Upgrading gshard itself (SIGUSR2), the rules: when a successor manager may
start, when this manager hands over to it, and what a failed attempt changes.

The rule one level up from a reload: a successor manager boots on the same
listeners, and only once it serves does this manager hand over the pidfile,
control socket and supervisor (systemd) and drain. A successor that exits
before that changes nothing. One upgrade at a time, and only from a manager
that serves and owns its files. (``upgrade`` does the process and pipe work.)

``SelfUpgrade`` is a part of ``ManagerFSM``, which hands it the upgrade's
events. What passes between the two is explicit, both ways: the machine says
with each event whether it is in charge (serves and owns its files), and the
rules answer with actions and, once the successor serves, ``hand_over``: the
machine then gives up its files and stops gracefully.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gshard.manager.events import (
    Action,
    Level,
    Log,
    StartSuccessor,
    SuccessorExited,
    SuccessorReady,
    SuccessorSpawned,
    SuccessorSpawnFailed,
    Title,
    Upgrade,
    UpgradeRequested,
    describe_status,
)

UpgradeEvent = (
    UpgradeRequested | SuccessorSpawned | SuccessorSpawnFailed | SuccessorReady | SuccessorExited
)


@dataclass(frozen=True)
class Outcome:
    actions: list[Action] = field(default_factory=list)
    # The successor serves: the machine gives up its files and drains, after ``actions``.
    hand_over: bool = False


@dataclass
class SelfUpgrade:
    """Where a self-upgrade stands, seen from the manager being replaced."""

    state: Upgrade = Upgrade.NONE
    successor: int | None = None  # the successor manager's pid while it runs

    @property
    def handed_over(self) -> bool:
        """The successor serves: it speaks for the service now, this manager only drains."""
        return self.state is Upgrade.HANDING_OVER

    def handle(self, event: UpgradeEvent, in_charge: bool) -> Outcome:
        """``in_charge``: the machine serves and owns its files, so it may be replaced."""
        match event:
            case UpgradeRequested():
                return Outcome(self._requested(in_charge))
            case SuccessorSpawned(pid=pid):
                self.successor = pid
                return Outcome([Log(Level.INFO, f"Upgrading: started a new manager (pid {pid}); "
                                                "this one drains once it serves")])
            case SuccessorSpawnFailed(error=error):
                self.state = Upgrade.NONE
                return Outcome([Log(Level.ERROR,
                                    f"Upgrade failed: cannot start a new manager: {error}")])
            case SuccessorReady():
                return self._successor_ready()
            case SuccessorExited(pid=pid, status=status):
                self.successor = None
                if self.state is not Upgrade.STARTING:
                    return Outcome()  # it took over, and may come and go as it likes
                self.state = Upgrade.NONE
                return Outcome([Log(Level.ERROR, f"Upgrade failed: the new manager (pid {pid}) "
                                                 f"{describe_status(status)}; this manager keeps "
                                                 "serving")])
        raise TypeError(f"not an upgrade event: {event!r}")

    def _requested(self, in_charge: bool) -> list[Action]:
        if self.state is not Upgrade.NONE:
            return [Log(Level.WARNING, "Upgrade already under way; SIGUSR2 ignored")]
        if not in_charge:
            return [Log(Level.WARNING, "Upgrade refused: the server is not serving yet")]
        self.state = Upgrade.STARTING
        return [StartSuccessor()]

    def _successor_ready(self) -> Outcome:
        """The successor serves and owns the files: hand over and drain."""
        if self.state is not Upgrade.STARTING:
            return Outcome()
        self.state = Upgrade.HANDING_OVER
        return Outcome([Log(Level.INFO, f"Upgrade: the new manager (pid {self.successor}) "
                                        "serves; draining this one"),
                        Title("manager (upgraded, draining)")], hand_over=True)
