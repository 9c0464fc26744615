"""The manager's vocabulary: the events its state machine is fed, the actions it answers with.

Plain frozen data and the enums they carry, kept apart from the rules
(``fsm``) so that each side of the machine can speak it without reaching
into the machine: the loop (``loop``) turns signals, messages and reaped
processes into events and carries out actions; the observers (``observe/``)
book the actions they are shown (``Departed``, ``ReloadFinished``) and name
states and reasons in the status and metrics, and may import this and
``view`` but never the machine itself.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

# --- states ------------------------------------------------------------------


class ShardState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"


class Phase(enum.Enum):
    STARTING = "starting"  # the first generation is booting; nothing serves yet
    RUNNING = "running"
    STOPPING = "stopping"  # every shard is leaving; the manager exits when none is left


class Upgrade(enum.Enum):
    """Where a self-upgrade (SIGUSR2) stands, seen from the manager being replaced."""

    NONE = "none"
    STARTING = "starting"  # a successor manager is being started or boots
    HANDING_OVER = "handing over"  # the successor serves; this manager drains and exits


class Reason(enum.Enum):
    """Why a shard left: the rule that made it go, for the status and metrics."""

    CRASHED = "crashed"  # exited or was killed without being asked to
    BLOCKED = "blocked"  # event loop blocked past --timeout: killed
    RECYCLED = "recycled"  # --max-requests or ``gshard recycle``: a successor took over
    SCALED_DOWN = "scaled_down"  # its slot was removed
    RELOADED = "reloaded"  # a newer generation took over
    BOOT_FAILED = "boot_failed"  # its generation did not boot
    STOPPED = "stopped"  # the server is stopping


class StopMode(enum.Enum):
    """How to ask a shard to leave; the loop maps these to signals."""

    # The first step of a delayed stop (--shutdown-delay): keep accepting and
    # serving while load balancers drop this server, but end every connection
    # after its response (Connection: close); a DRAIN follows.
    LAME_DUCK = "lame-duck"
    DRAIN = "drain"  # finish in-flight requests, then exit (SIGTERM)
    # Connections were steered away from this shard's listener: accept what is
    # still queued on it, then drain (SIGUSR2).
    RETIRE = "retire"
    QUIT = "quit"  # exit now (SIGQUIT)
    ABORT = "abort"  # blocked past --timeout: exit at once, through worker_abort (SIGABRT)
    KILL = "kill"  # cannot be ignored (SIGKILL)


class Level(enum.IntEnum):
    """How much a ``Log`` action matters; the values are ``logging``'s."""

    INFO = logging.INFO
    WARNING = logging.WARNING
    ERROR = logging.ERROR


class ServiceState(enum.Enum):
    """What a supervisor (systemd) is told the service is doing."""

    READY = "ready"
    RELOADING = "reloading"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Timings:
    """How long shards have for each step (seconds), from the configuration.

    Each generation keeps those of the configuration it was booted with (a
    reload may change them), and its shards are judged by them.
    """

    boot_timeout: float = 30.0
    heartbeat_timeout: float = 30.0  # 0 disables
    graceful_timeout: float = 30.0
    # Retiring (SIGUSR2 to a shard): how long the shard keeps accepting what was
    # queued before it was steered away (handshakes under way complete within a
    # round trip). Both sides use it: the shard to settle (the manager hands it
    # over in its ``ShardSpec``), the manager to add it to the shard's grace
    # before killing it.
    retire_settle: float = 1.0
    # A graceful stop serves this long as a lame duck before draining (0: drain at once).
    shutdown_delay: float = 0.0


# --- events ------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    now: float


@dataclass(frozen=True)
class Spawned:
    pid: int
    slot: int
    generation: int
    now: float


@dataclass(frozen=True)
class Ready:
    pid: int
    now: float


@dataclass(frozen=True)
class Beat:
    pid: int
    now: float


@dataclass(frozen=True)
class BootFailed:
    pid: int
    detail: str
    now: float


@dataclass(frozen=True)
class RecycleRequested:
    pid: int
    now: float


@dataclass(frozen=True)
class Exited:
    """A shard process ended; ``status`` is its exit code, or minus the killing signal."""

    pid: int
    status: int
    now: float


@dataclass(frozen=True)
class Reload:
    """HUP, ``gshard reload`` or a changed source file (``--reload``) asks for a reload.

    ``ticket`` names a ``gshard reload`` that waits for the outcome; the
    ``ReloadFinished`` of the reload that covers the request carries it back.
    """

    now: float
    ticket: int | None = None


@dataclass(frozen=True)
class ConfigRead:
    """The configuration, read again for a reload (``ReadConfig``): the shard count it
    asks for and its timings."""

    slots: int
    timings: Timings
    now: float


@dataclass(frozen=True)
class ConfigFailed:
    """The configuration read again for a reload did not load or is not valid."""

    reason: str
    now: float


@dataclass(frozen=True)
class Stop:
    graceful: bool
    now: float


@dataclass(frozen=True)
class Scale:
    """Add (+1, SIGTTIN) or remove (-1, SIGTTOU) a shard."""

    delta: int
    now: float


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class UpgradeRequested:
    """SIGUSR2: start a successor manager to take over."""

    now: float


@dataclass(frozen=True)
class SuccessorSpawned:
    pid: int
    now: float


@dataclass(frozen=True)
class SuccessorSpawnFailed:
    error: str
    now: float


@dataclass(frozen=True)
class SuccessorReady:
    """The successor said it serves; it has taken over the pidfile and control socket."""

    now: float


@dataclass(frozen=True)
class SuccessorExited:
    pid: int
    status: int
    now: float


Event = (
    Start | Spawned | Ready | Beat | BootFailed | RecycleRequested | Exited | Reload | ConfigRead
    | ConfigFailed | Stop | Scale | Tick | UpgradeRequested | SuccessorSpawned
    | SuccessorSpawnFailed | SuccessorReady | SuccessorExited
)

# --- actions -----------------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    slot: int
    generation: int


@dataclass(frozen=True)
class Signal:
    pid: int
    mode: StopMode


@dataclass(frozen=True)
class Log:
    level: Level
    message: str


@dataclass(frozen=True)
class ReadConfig:
    """Read the configuration again, for the reload about to boot; answered by
    ``ConfigRead`` or ``ConfigFailed``."""


@dataclass(frozen=True)
class ReloadFinished:
    """The outcome of a reload, for the requests it covers (their ``Reload.ticket``)."""

    ok: bool
    message: str
    tickets: tuple[int, ...] = ()


@dataclass(frozen=True)
class Steer:
    """New connections go only to the listeners of these slots."""

    slots: tuple[int, ...]


@dataclass(frozen=True)
class Listeners:
    """Open or close listeners (at the end) so that ``count`` slots have one."""

    count: int


@dataclass(frozen=True)
class Status:
    """The service's state changed, for a supervisor that listens (systemd)."""

    state: ServiceState
    message: str


@dataclass(frozen=True)
class Exit:
    code: int


@dataclass(frozen=True)
class StartSuccessor:
    """Start a new manager on the same listeners; answered by ``SuccessorSpawned``
    or ``SuccessorSpawnFailed``."""


@dataclass(frozen=True)
class TakeOwnership:
    """Claim the pidfile and the control socket (and, for a successor, tell the
    manager it replaces and the supervisor that this one serves now)."""


@dataclass(frozen=True)
class Title:
    """What ``ps`` shows for the manager changed."""

    role: str


@dataclass(frozen=True)
class Hook:
    """Run the configuration's gunicorn server hook ``name`` with the server and ``args``
    (``gshard.hooks``); the manager runs it, so no user code runs in here."""

    name: str
    args: tuple = ()


@dataclass(frozen=True)
class Departed:
    """A shard left, and why (bookkeeping for ``gshard status`` and the metrics)."""

    pid: int
    slot: int
    generation: int
    reason: Reason
    detail: str  # how it ended: "exited with status 0", "was killed by signal 9", ...


Action = (
    Spawn | Signal | Log | ReadConfig | ReloadFinished | Steer | Listeners | Status | Exit
    | StartSuccessor | TakeOwnership | Title | Hook | Departed
)


def describe_status(status: int) -> str:
    return f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
