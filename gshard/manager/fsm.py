"""The manager's decisions as a pure state machine: events in, actions out.

No clock, no fork, no signals: every event carries ``now`` and every effect
is an action the I/O loop (``loop``) carries out; both are plain data in
``events``. That makes each rule testable by feeding events
(``tests/unit/test_manager_fsm.py``, through ``tests/support/fsm_driver.py``).
The machine's state is its own: the loop and the control commands read it
through its queries, the observers through frozen views (``view``).

The rules that make restarts safe:

* Shards belong to generations. A generation serves only once *all* of its
  shards are ready; only then are the shards of the generation before it
  told to drain. A generation that fails to boot (a shard exits, reports an
  import error, or misses ``boot_timeout``) is torn down and the serving one
  is left alone. At first start there is nothing to protect, so the manager
  halts instead of retrying a broken application forever.
* A shard of the serving generation that dies is respawned in the same slot
  (its listener and queued connections wait for it), after a backoff that
  grows while the slot keeps failing.
* A shard that asks to be recycled gets a successor in its slot; it drains
  only once the successor is ready.
* Upgrading gshard itself (SIGUSR2) follows the same rule one level up: a
  successor manager boots on the same listeners, and only once it serves does
  this manager hand over the pidfile, control socket and supervisor
  (systemd) and drain. A successor that exits before that changes nothing.
  One upgrade at a time, and only from a manager that serves and owns its
  files. Those rules are a part of their own (``upgrade_rules``), which the
  machine hands the upgrade's events.
* A shard whose event loop is blocked past the heartbeat timeout is asked to
  abort (SIGABRT: gunicorn's worker_abort hook runs), then killed.
* A reload reads the configuration again first (``ReadConfig``); the
  generation it boots has the shard count and timings read (each generation
  keeps its own timings). A configuration that does not load changes nothing.
  More slots: their listeners are opened before the generation boots and get
  no connection until it serves. Fewer: once it serves, the removed slots are
  steered away from and their old shards retired (they accept what was queued
  first). A count changed by scaling (TTIN/TTOU) is kept unless the
  configured count changed.
* A reload asked for while the first generation boots, or while a reload
  boots, follows it: all such requests make one more reload, and each waiter
  hears the outcome of the reload that covers its request (``Reload.ticket``).
* A graceful stop with a shutdown delay (``--shutdown-delay``) begins as a
  lame duck: the phase is stopping at once (readiness fails, systemd hears
  STOPPING=1), but the serving shards keep accepting and serving, each
  response ending its connection, until the delay is over (or a second
  graceful stop cuts it short); only then do they drain. Load balancers that
  learn of the stop late (Kubernetes removes a pod's endpoints while it is
  already being stopped) still find a server that answers. A fast stop ends
  everything at once, lame duck or not.

gunicorn's server hooks that belong to one of these decisions (start, reload,
scaling) are ``Hook`` actions in gunicorn's order; the manager runs them, so
no user code runs in here. ``when_ready`` follows gunicorn's rule that it
runs only once the application is known to load: at start, as gunicorn's
arbiter runs it before its workers import the application; but with
``--preload``, where gunicorn imports the application first and never runs it
when the import fails, only once the first generation serves (its template
loaded the application and every shard is ready), and never if it fails to
boot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gshard.errors import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR, EXIT_OK
from gshard.log import shards
from gshard.manager.events import (
    Action,
    Beat,
    BootFailed,
    ConfigFailed,
    ConfigRead,
    Departed,
    Event,
    Exit,
    Exited,
    Hook,
    Level,
    Listeners,
    Log,
    Phase,
    ReadConfig,
    Ready,
    Reason,
    RecycleRequested,
    Reload,
    ReloadFinished,
    Scale,
    ServiceState,
    ShardState,
    Signal,
    Spawn,
    Spawned,
    Start,
    Status,
    Steer,
    Stop,
    StopMode,
    SuccessorExited,
    SuccessorReady,
    SuccessorSpawned,
    SuccessorSpawnFailed,
    TakeOwnership,
    Tick,
    Timings,
    UpgradeRequested,
    describe_status,
)
from gshard.manager.upgrade_rules import SelfUpgrade, UpgradeEvent
from gshard.manager.view import GenerationState, GenerationView, MachineView, ShardView

# A shard that served this long before dying starts its slot's backoff afresh.
STABLE_SECONDS = 10.0
# Respawn delays: none for the first failure, then doubling up to the cap.
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
# How long a shard told to quit (not drain) has before it is killed.
QUIT_GRACE = 5.0
# How long a blocked shard sent SIGABRT (gunicorn's worker_abort hook runs) has
# before it is killed; gunicorn's master kills on its next check, a second later.
ABORT_GRACE = 1.0


@dataclass
class Shard:
    """The machine's own record of one shard process; outside, a ``ShardView`` of it."""

    pid: int
    slot: int
    generation: int
    state: ShardState
    since: float
    last_beat: float
    kill_at: float | None = None  # when a leaving shard is killed outright
    killed: bool = False
    leaving: Reason | None = None  # why it was asked (or forced) to leave

    def view(self) -> ShardView:
        return ShardView(self.pid, self.slot, self.generation, self.state, self.since,
                         self.last_beat, self.kill_at, self.leaving)


# A traceback's frame lines; "<frozen importlib._bootstrap>" and the like are no
# place a user can open.
_FRAME = re.compile(r'^  File "([^"<][^"]*)", line (\d+)', re.MULTILINE)


def traceback_summary(text: str) -> str:
    """A shard's boot traceback in one line: the exception, and the file and line
    it was raised at, which ``gshard reload`` prints and a reader fixes first
    (``SyntaxError: invalid syntax (/srv/app/app.py, line 12)``)."""
    lines = text.strip().splitlines()
    if not lines:
        return "no traceback"
    frames = _FRAME.findall(text)
    if not frames:
        return lines[-1]
    path, line = frames[-1]
    return f"{lines[-1]} ({path}, line {line})"


class ManagerFSM:
    """Shards, generations and the phase of the whole server.

    Its state is its own: the loop, the control commands and the observers
    change it only through ``handle`` and read it through the queries below
    (and ``view()``), so every rule about it is in this class.
    """

    def __init__(self, slots: int, timings: Timings | None = None,
                 inherited: bool = False, configured: int | None = None,
                 preload: bool = False) -> None:
        """``inherited``: a successor manager (SIGUSR2), started on its
        predecessor's listeners, which owns nothing until it serves.
        ``configured``: the shard count the configuration gave, where ``slots``
        differs from it (a successor takes over its predecessor's scaled count).
        ``preload``: the application is imported by a template per generation
        (``--preload``), so ``when_ready`` waits for the first generation to serve."""
        self.timings = timings or Timings()  # the serving generation's
        self._preload = preload
        self._slots = slots  # the serving generation's (or, at first, the booting one's)
        self._configured = slots if configured is None else configured
        self._inherited = inherited
        self._phase = Phase.STARTING
        self._shards: dict[int, Shard] = {}
        self._live = 0  # generation serving now; 0 before the first is ready
        self._booting: int | None = None  # generation booting as a whole (first start or reload)
        self._booting_slots = slots  # how many shards it has
        self._timings: dict[int, Timings] = {}  # generation -> its own
        # Reload requests: the tickets of those no reload covers yet, those the
        # reload under way covers, whether one more reload must follow the boot
        # under way, and whether the configuration is being read.
        self._waiting: list[int] = []
        self._covered: tuple[int, ...] = ()
        self._reload_wanted = False
        self._reading = False
        self._last_generation = 0
        self._exit_code = EXIT_OK
        self._respawn_at: dict[int, float] = {}  # slot -> when
        self._failures: dict[int, int] = {}  # slot -> consecutive failures
        self._boot_errors: dict[int, str] = {}  # generation -> first traceback
        self._sockets = 0  # slots that have a listener open; set from ``slots`` at start
        # The slots last steered to; None while the kernel's hash is left alone.
        self._steered: tuple[int, ...] | None = None
        # This manager owns the pidfile, control socket and unix socket files.
        self._owns_files = False
        self._upgrade = SelfUpgrade()  # SIGUSR2's rules, and where an upgrade stands
        # While a delayed stop serves as a lame duck: when the drain begins.
        self._lame_duck_until: float | None = None

    def handle(self, event: Event) -> list[Action]:
        """What ``event`` calls for: the actions, in the order to carry them out."""
        match event:
            case Start():
                return self._on_start(event)
            case Spawned():
                return self._on_spawned(event)
            case Beat():
                return self._on_beat(event)
            # A shard that is ready or gone, or a slot added or removed, may change
            # which slots serve: steering follows.
            case Ready():
                return self._on_ready(event) + self._steer()
            case Exited():
                return self._on_exited(event) + self._steer()
            case Scale():
                return self._on_scale(event) + self._steer()
            case BootFailed():
                return self._on_boot_failed(event)
            case RecycleRequested():
                return self._on_recycle_requested(event)
            case Reload():
                return self._on_reload(event)
            case ConfigRead():
                return self._on_config_read(event)
            case ConfigFailed():
                return self._on_config_failed(event)
            case Stop():
                return self._on_stop(event)
            case Tick():
                return self._on_tick(event)
            case (UpgradeRequested() | SuccessorSpawned() | SuccessorSpawnFailed()
                  | SuccessorReady() | SuccessorExited()):
                return self._on_upgrade_event(event)
        raise TypeError(f"not an event: {event!r}")

    # --- queries -------------------------------------------------------

    @property
    def slots(self) -> int:
        """Shards the server runs now (gunicorn's worker count)."""
        return self._slots

    @property
    def owns_files(self) -> bool:
        """The pidfile, control socket and unix socket files are this manager's to
        write and remove (not yet a successor's, no longer one that handed over)."""
        return self._owns_files

    def busy(self) -> bool:
        """Starting, reloading or stopping: no time to scale or recycle."""
        return self._phase is not Phase.RUNNING or self._booting is not None or self._reading

    def shard(self, pid: int) -> ShardView | None:
        shard = self._shards.get(pid)
        return shard.view() if shard is not None else None

    def shard_pids(self) -> list[int]:
        return list(self._shards)

    def is_serving(self, pid: int) -> bool:
        """``pid`` is a ready shard of the generation serving."""
        shard = self._shards.get(pid)
        return (shard is not None and shard.state is ShardState.READY
                and shard.generation == self._live)

    def serving_slots(self) -> set[int]:
        """Slots whose shard of the serving generation is ready."""
        return {s.slot for s in self._of_generation(self._live) if s.state is ShardState.READY}

    def occupied_slots(self) -> set[int]:
        """Slots that have a shard, whatever its state (a leaving shard may still
        accept what its listener holds)."""
        return {s.slot for s in self._shards.values()}

    def successor_of(self, shard: ShardView) -> ShardView | None:
        """The other shard of ``shard``'s generation and slot: a recycled shard's
        successor (while either is there)."""
        return next((s.view() for s in self._of_generation(shard.generation)
                     if s.slot == shard.slot and s.pid != shard.pid), None)

    def generations_in_use(self) -> set[int]:
        """Generations that serve, boot or still have a shard (their ``--preload``
        templates are kept)."""
        return {*(g for g in (self._live, self._booting) if g),
                *(s.generation for s in self._shards.values())}

    def is_successor_manager(self, pid: int) -> bool:
        """``pid`` is the manager started to replace this one (SIGUSR2)."""
        return pid == self._upgrade.successor

    def next_deadline(self) -> float | None:
        """The earliest time a ``Tick`` could change something."""
        times = list(self._respawn_at.values())
        if self._lame_duck_until is not None:
            times.append(self._lame_duck_until)
        for shard in self._shards.values():
            timings = self._timings_of(shard)
            if shard.kill_at is not None:
                times.append(shard.kill_at)
            elif shard.killed:
                continue
            elif shard.state is ShardState.BOOTING:
                times.append(shard.since + timings.boot_timeout)
            elif shard.state is ShardState.READY and timings.heartbeat_timeout:
                times.append(shard.last_beat + timings.heartbeat_timeout)
        return min(times, default=None)

    def _timings_of(self, shard: Shard) -> Timings:
        """The timings of the configuration ``shard``'s generation was booted with."""
        return self._timings.get(shard.generation, self.timings)

    def view(self) -> MachineView:
        return MachineView(
            phase=self._phase,
            slots=self._slots,
            live=self._live,
            booting=self._booting,
            shards=tuple(shard.view() for shard in self._shards.values()),
            generations=self._generations(),
            steered=self._steered,
            owns_files=self._owns_files,
            upgrade=self._upgrade.state,
            successor=self._upgrade.successor,
            lame_duck_until=self._lame_duck_until,
        )

    def _generations(self) -> tuple[GenerationView, ...]:
        """Each generation with shards, newest first: booting, serving or draining."""
        views = []
        for generation in sorted({s.generation for s in self._shards.values()}, reverse=True):
            if generation == self._booting:
                state = GenerationState.BOOTING
            elif generation == self._live and (self._phase is not Phase.STOPPING
                                               or self._lame_duck_until is not None):
                state = GenerationState.SERVING
            else:
                state = GenerationState.DRAINING
            views.append(GenerationView(generation, state,
                                        len(self._of_generation(generation))))
        return tuple(views)

    def _of_generation(self, generation: int) -> list[Shard]:
        return [s for s in self._shards.values() if s.generation == generation]

    # --- event handlers --------------------------------------------------

    def _on_start(self, event: Start) -> list[Action]:
        self._sockets = self._slots
        actions: list[Action] = [] if self._inherited else self._take_ownership()
        # gunicorn's order: the count is set, then the server starts and is
        # ready (its listeners are bound), and only then are workers forked.
        # With --preload, gunicorn is ready only once the application imported:
        # when_ready waits for the first generation (``_promote``).
        hooks = [Hook("nworkers_changed", (self._slots, None)), Hook("on_starting"),
                 *(() if self._preload else (Hook("when_ready"),))]
        return [*actions, *hooks, Log(Level.INFO, f"Booting {shards(self._slots)}"),
                *self._boot_generation(self._slots, self.timings)]

    def _take_ownership(self) -> list[Action]:
        self._owns_files = True
        return [TakeOwnership()]

    def _status(self, state: ServiceState, message: str) -> list[Action]:
        """Tell the supervisor, unless a successor speaks for the service now."""
        if self._upgrade.handed_over:
            return []
        return [Status(state, message)]

    def _boot_generation(self, slots: int, timings: Timings) -> list[Action]:
        self._last_generation += 1
        self._booting = self._last_generation
        self._booting_slots = slots
        self._timings[self._booting] = timings
        return [Spawn(slot, self._booting) for slot in range(slots)]

    def _on_spawned(self, event: Spawned) -> list[Action]:
        shard = self._shards[event.pid] = Shard(
            event.pid, event.slot, event.generation, ShardState.BOOTING, event.now, event.now
        )
        if self._phase is Phase.STOPPING or event.generation not in (self._live, self._booting):
            # Reported late (--preload's template forks asynchronously): its
            # generation failed, was replaced or is stopping meanwhile.
            reason = Reason.STOPPED if self._phase is Phase.STOPPING else Reason.BOOT_FAILED
            return self._leave(shard, StopMode.QUIT, event.now, reason)
        return []

    def _on_beat(self, event: Beat) -> list[Action]:
        shard = self._shards.get(event.pid)
        if shard is not None:
            shard.last_beat = event.now
        return []

    def _on_ready(self, event: Ready) -> list[Action]:
        shard = self._shards.get(event.pid)
        if shard is None or shard.state is not ShardState.BOOTING:
            return []
        shard.state = ShardState.READY
        shard.since = shard.last_beat = event.now
        if shard.generation == self._booting:
            booting = self._of_generation(self._booting)
            if (all(s.state is ShardState.READY for s in booting)
                    and len(booting) == self._booting_slots):
                return self._promote(event.now)
            return []
        # A replacement within the serving generation: a respawn or a recycle.
        actions: list[Action] = [
            Log(Level.INFO, f"Shard {shard.slot} (pid {shard.pid}) is serving")
        ]
        for other in self._of_generation(shard.generation):
            if other is not shard and other.slot == shard.slot and other.state is ShardState.READY:
                actions += self._leave(other, StopMode.DRAIN, event.now, Reason.RECYCLED)
        return actions

    def _steer(self) -> list[Action]:
        """Send new connections only to slots whose shard serves.

        A slot whose shard crashed (and may wait out a respawn backoff), was
        just added and still boots, or is being removed gets no new
        connection, so none waits in a queue nobody accepts from; those
        already queued wait for the slot's next shard. While every listener
        has a serving shard, the kernel's own hash is left alone.
        """
        if self._phase is not Phase.RUNNING:
            return []
        serving = tuple(sorted(slot for slot in self.serving_slots() if slot < self._slots))
        if not serving or serving == self._steered:
            return []
        if self._steered is None and serving == tuple(range(self._sockets)):
            return []
        self._steered = serving
        return [Steer(serving)]

    def _promote(self, now: float) -> list[Action]:
        """The booting generation is all ready: it serves, and the one before drains
        (its shards of slots the new generation has not are retired: steered away
        from first, so they accept what was queued for them)."""
        old, self._live, self._booting = self._live, self._booting or 0, None
        count_before, self._slots = self._slots, self._booting_slots
        self.timings = self._timings[self._live]
        self._respawn_at.clear()
        for slot in [slot for slot in self._failures if slot >= self._slots]:
            del self._failures[slot]
        leaving = [s for s in self._of_generation(old) if s.state is not ShardState.DRAINING]
        actions: list[Action] = []
        if any(shard.slot >= self._slots for shard in leaving):
            actions += self._steer()
        for shard in leaving:
            mode = StopMode.RETIRE if shard.slot >= self._slots else StopMode.DRAIN
            actions += self._leave(shard, mode, now, Reason.RELOADED)
        if self._phase is Phase.STARTING:
            self._phase = Phase.RUNNING
            message = f"Ready: {shards(self._slots)} serving"
            actions.append(Log(Level.INFO, message))
            if self._preload:  # the application loaded: gunicorn's master is ready now
                actions.append(Hook("when_ready"))
            if not self._owns_files:  # a successor: its predecessor drains now
                actions += self._take_ownership()
        else:
            counted = ("" if self._slots == count_before
                       else f" ({shards(self._slots)}, was {count_before})")
            message = (f"Generation {self._live} is serving{counted}; generation {old} "
                       "is draining")
            actions += [Log(Level.INFO, message), self._finish_reload(True, message)]
        return [*actions, *self._status(ServiceState.READY, message), *self._next_reload()]

    def _leave(self, shard: Shard, mode: StopMode, now: float, reason: Reason) -> list[Action]:
        """Ask a shard to go, and arm the kill that follows if it does not."""
        shard.state = ShardState.DRAINING
        shard.leaving = shard.leaving or reason
        timings = self._timings_of(shard)
        grace = QUIT_GRACE if mode is StopMode.QUIT else timings.graceful_timeout
        if mode is StopMode.RETIRE:
            grace += timings.retire_settle
        # A gentler request never postpones a kill already armed (an aborted shard).
        armed = shard.kill_at
        shard.kill_at = now + grace if armed is None else min(armed, now + grace)
        return [Signal(shard.pid, mode)]

    def _on_boot_failed(self, event: BootFailed) -> list[Action]:
        shard = self._shards.get(event.pid)
        if shard is None:
            return []
        if shard.generation in self._boot_errors:
            return []  # every shard of the generation fails alike: report it once
        self._boot_errors[shard.generation] = event.detail
        return [Log(Level.ERROR, f"Shard {shard.slot} failed to boot:\n{event.detail.rstrip()}")]

    def _on_exited(self, event: Exited) -> list[Action]:
        shard = self._shards.pop(event.pid, None)
        if shard is None:
            return []
        actions = [self._departure(shard, event.status), *self._after_exit(shard, event)]
        if shard.generation not in self.generations_in_use():
            self._timings.pop(shard.generation, None)
        return actions

    def _departure(self, shard: Shard, status: int) -> Departed:
        reason = shard.leaving
        if reason is None:
            if self._phase is Phase.STOPPING:
                reason = Reason.STOPPED
            elif shard.generation == self._booting:
                reason = Reason.BOOT_FAILED
            else:
                reason = Reason.CRASHED
        detail = describe_status(status)
        if reason is Reason.BLOCKED:
            limit = self._timings_of(shard).heartbeat_timeout
            detail = f"event loop blocked for more than {limit:g}s; {detail}"
        return Departed(shard.pid, shard.slot, shard.generation, reason, detail)

    def _after_exit(self, shard: Shard, event: Exited) -> list[Action]:
        how = describe_status(event.status)
        if self._phase is Phase.STOPPING:
            return [Exit(self._exit_code)] if not self._shards else []
        if shard.state is ShardState.DRAINING:
            return [Log(Level.INFO, f"Shard {shard.slot} (pid {shard.pid}) {how} after draining"),
                    *self._close_unused_listeners()]
        if shard.generation == self._booting:
            return self._generation_failed(shard, event.status, event.now)
        if shard.generation != self._live:
            return []
        actions: list[Action] = [
            Log(Level.ERROR, f"Shard {shard.slot} (pid {shard.pid}) {how}")
        ]
        if any(s.slot == shard.slot and s.state is ShardState.READY
               for s in self._of_generation(self._live)):
            return actions  # a successor that failed; its predecessor still serves
        return actions + self._schedule_respawn(shard, event.now)

    def _close_unused_listeners(self) -> list[Action]:
        """Close listeners of removed slots once no shard accepts on them any more (nor
        will: a generation booting may not have forked every shard yet)."""
        booting = self._booting_slots if self._booting is not None else 0
        needed = max([self._slots, booting, *(slot + 1 for slot in self.occupied_slots())])
        if needed >= self._sockets:
            return []
        self._sockets = needed
        return [Listeners(needed)]

    def _schedule_respawn(self, shard: Shard, now: float) -> list[Action]:
        ran_well = shard.state is ShardState.READY and now - shard.since >= STABLE_SECONDS
        failures = 1 if ran_well else self._failures.get(shard.slot, 0) + 1
        self._failures[shard.slot] = failures
        delay = 0.0 if failures == 1 else min(BACKOFF_FIRST * 2 ** (failures - 2), BACKOFF_CAP)
        if delay == 0.0:
            return [Spawn(shard.slot, self._live)]
        self._respawn_at[shard.slot] = now + delay
        return [Log(Level.WARNING, f"Shard {shard.slot} keeps failing; respawning in {delay:g}s")]

    def _generation_failed(self, shard: Shard, status: int, now: float) -> list[Action]:
        """A shard of the booting generation died: that generation will not serve."""
        generation = shard.generation
        self._booting = None
        reason = self._boot_reason(generation, shard, status)
        actions: list[Action] = []
        for other in self._of_generation(generation):
            if other.state is not ShardState.DRAINING:
                actions += self._leave(other, StopMode.QUIT, now, Reason.BOOT_FAILED)
        actions += self._close_unused_listeners()  # slots only it would have had
        if not self._live:
            self._phase = Phase.STOPPING
            self._exit_code = status if status in (EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR) \
                else EXIT_BOOT_ERROR
            actions.append(Log(Level.ERROR, f"Shutting down: {reason}"))
            if not self._shards:
                actions.append(Exit(self._exit_code))
            return actions
        message = f"Reload failed, generation {self._live} keeps serving: {reason}"
        return [*actions, Log(Level.ERROR, message), self._finish_reload(False, message),
                *self._status(ServiceState.READY, message), *self._next_reload()]

    def _boot_reason(self, generation: int, shard: Shard, status: int) -> str:
        error = self._boot_errors.get(generation)
        if error:
            what = ("the application failed to load" if status == EXIT_APP_LOAD_ERROR
                    else "a shard failed to boot")
            return f"{what}: {traceback_summary(error)}"
        if shard.killed:
            limit = self._timings_of(shard).boot_timeout
            return f"shard {shard.slot} was not ready within {limit:g}s"
        return f"shard {shard.slot} {describe_status(status)} while booting"

    def _on_recycle_requested(self, event: RecycleRequested) -> list[Action]:
        shard = self._shards.get(event.pid)
        if (
            shard is None
            or shard.state is not ShardState.READY
            or shard.generation != self._live
            or self.busy()
            or any(s.slot == shard.slot and s.state is ShardState.BOOTING
                   for s in self._of_generation(self._live))
        ):
            return []
        return [Log(Level.INFO, f"Recycling shard {shard.slot} (pid {shard.pid})"),
                Spawn(shard.slot, self._live)]

    def _on_reload(self, event: Reload) -> list[Action]:
        ticket = () if event.ticket is None else (event.ticket,)
        if self._phase is Phase.STOPPING:
            message = "Reload refused: the server is stopping"
            return [Log(Level.WARNING, message), ReloadFinished(False, message, ticket)]
        if self._reading:  # the configuration is not read yet: the reload under way covers it
            self._covered += ticket
            return []
        self._waiting += ticket
        if self._phase is Phase.RUNNING and self._booting is None:
            return self._begin_reload()
        if self._reload_wanted:
            return []  # one more reload is due already: it covers this request too
        self._reload_wanted = True
        booting = ("the first generation boots" if self._phase is Phase.STARTING
                   else f"generation {self._booting} boots")
        return [Log(Level.INFO, f"Reload asked for while {booting}; it follows once that "
                                "generation serves or fails")]

    def _begin_reload(self) -> list[Action]:
        """A reload starts by reading the configuration; it covers every request so far."""
        self._reload_wanted = False
        self._reading = True
        self._covered, self._waiting = (*self._covered, *self._waiting), []
        return [ReadConfig()]

    def _next_reload(self) -> list[Action]:
        """Once a boot is over (served or failed): the reload asked for meanwhile."""
        if not self._reload_wanted or self._phase is not Phase.RUNNING:
            return []
        return self._begin_reload()

    def _finish_reload(self, ok: bool, message: str) -> ReloadFinished:
        """The outcome of the reload under way, for the requests it covers."""
        tickets, self._covered = self._covered, ()
        return ReloadFinished(ok, message, tickets)

    def _on_config_read(self, event: ConfigRead) -> list[Action]:
        if not self._reading:
            return []  # stopped meanwhile
        self._reading = False
        slots = self._slots
        if event.slots != self._configured:  # edited: that count, whatever scaling did
            self._configured = slots = event.slots
        actions: list[Action] = []
        if slots > self._sockets:
            # Steered off the new listeners before they exist, until their shards serve.
            self._sockets = slots
            actions = [*self._steer(), Listeners(slots)]
        spawns = self._boot_generation(slots, event.timings)
        counted = "" if slots == self._slots else f" ({shards(slots)}, was {self._slots})"
        message = f"Reloading: booting generation {self._booting}{counted}"
        return [Log(Level.INFO, message), *self._status(ServiceState.RELOADING, message),
                # gunicorn sets its count anew on every reload, then reloads.
                Hook("nworkers_changed", (slots, self._slots)), Hook("on_reload"),
                *actions, *spawns]

    def _on_config_failed(self, event: ConfigFailed) -> list[Action]:
        if not self._reading:
            return []
        self._reading = False
        message = (f"Reload failed, generation {self._live} keeps serving: the configuration "
                   f"did not load: {event.reason}")
        return [Log(Level.ERROR, message), self._finish_reload(False, message),
                *self._next_reload()]

    def _on_stop(self, event: Stop) -> list[Action]:
        if not event.graceful:
            return self._stop(event.now, StopMode.QUIT, "Shutting down now")
        if self._lame_duck_until is not None:
            return self._end_lame_duck(event.now, "Asked to stop again: the lame-duck period "
                                                  "ends early; draining")
        if self._phase is Phase.STOPPING:
            return []
        if (self._phase is Phase.RUNNING and self.timings.shutdown_delay > 0
                and self.serving_slots()):
            return self._start_lame_duck(event.now)
        return self._stop(event.now, StopMode.DRAIN, "Shutting down gracefully")

    def _stop(self, now: float, mode: StopMode, message: str) -> list[Action]:
        """Every shard leaves now (drains or quits); the manager exits once none is left."""
        self._phase = Phase.STOPPING
        self._lame_duck_until = None
        self._booting = None
        self._reading = self._reload_wanted = False  # waiters hear "shutting down" at exit
        self._respawn_at.clear()
        actions: list[Action] = [Log(Level.INFO, message),
                                 *self._status(ServiceState.STOPPING, message)]
        for shard in self._shards.values():
            actions += self._leave(shard, mode, now, Reason.STOPPED)
        if not self._shards:
            actions.append(Exit(self._exit_code))
        return actions

    def _start_lame_duck(self, now: float) -> list[Action]:
        """A graceful stop's first step (``--shutdown-delay``): the serving shards go on
        serving with ``Connection: close``; nothing else that boots will serve now."""
        delay = self.timings.shutdown_delay
        self._phase = Phase.STOPPING
        self._lame_duck_until = now + delay
        self._booting = None
        self._respawn_at.clear()
        message = (f"Shutting down gracefully: serving {delay:g}s more as a lame duck "
                   "(--shutdown-delay; every response closes its connection), then draining")
        actions: list[Action] = [
            Log(Level.INFO, message),
            *self._status(ServiceState.STOPPING,
                          f"Stopping: lame duck for {delay:g}s, then draining")]
        for shard in list(self._shards.values()):
            if self.is_serving(shard.pid):
                actions.append(Signal(shard.pid, StopMode.LAME_DUCK))
            elif shard.state is not ShardState.DRAINING:
                actions += self._leave(shard, StopMode.QUIT, now, Reason.STOPPED)
        return actions

    def _end_lame_duck(self, now: float, message: str) -> list[Action]:
        """The lame-duck period is over (or cut short): every shard drains."""
        self._lame_duck_until = None
        actions: list[Action] = [Log(Level.INFO, message),
                                 *self._status(ServiceState.STOPPING, "Stopping: draining")]
        for shard in list(self._shards.values()):
            if shard.state is not ShardState.DRAINING:
                actions += self._leave(shard, StopMode.DRAIN, now, Reason.STOPPED)
        if not self._shards:
            actions.append(Exit(self._exit_code))
        return actions

    def _on_scale(self, event: Scale) -> list[Action]:
        if self.busy():
            return [Log(Level.WARNING, "Not scaling while the server is starting, reloading "
                                       "or stopping")]
        if event.delta > 0:
            return self._add_slot()
        if self._slots == 1:
            return [Log(Level.WARNING, "Not removing the last shard")]
        return self._remove_slot(event.now)

    def _add_slot(self) -> list[Action]:
        slot = self._slots
        self._slots += 1
        opens = self._sockets < self._slots
        self._sockets = max(self._sockets, self._slots)
        # Steered off the new listener before it exists, until its shard serves.
        actions: list[Action] = [Log(Level.INFO, f"Adding shard {slot}"),
                                 Hook("nworkers_changed", (self._slots, slot)), *self._steer()]
        if opens:
            actions.append(Listeners(self._slots))
        return [*actions, Spawn(slot, self._live)]

    def _remove_slot(self, now: float) -> list[Action]:
        self._slots -= 1
        slot = self._slots
        self._respawn_at.pop(slot, None)
        self._failures.pop(slot, None)
        # Steered away first: the leaving shard then accepts what was queued.
        actions: list[Action] = [Log(Level.INFO, f"Removing shard {slot}"),
                                 Hook("nworkers_changed", (slot, slot + 1)), *self._steer()]
        for shard in list(self._shards.values()):
            if shard.slot == slot and shard.state is not ShardState.DRAINING:
                actions += self._leave(shard, StopMode.RETIRE, now, Reason.SCALED_DOWN)
        return actions + self._close_unused_listeners()

    def _on_tick(self, event: Tick) -> list[Action]:
        now = event.now
        actions: list[Action] = []
        if self._lame_duck_until is not None and now >= self._lame_duck_until:
            actions += self._end_lame_duck(now, "The lame-duck period is over; draining")
        for shard in list(self._shards.values()):
            actions += self._check_shard(shard, now)
        for slot, due in list(self._respawn_at.items()):
            if due <= now:
                del self._respawn_at[slot]
                actions.append(Spawn(slot, self._live))
        return actions

    def _check_shard(self, shard: Shard, now: float) -> list[Action]:
        if shard.killed:
            return []
        if shard.kill_at is not None:
            if now < shard.kill_at:
                return []
            message = f"Shard {shard.slot} (pid {shard.pid}) did not exit in time; killing it"
        elif (shard.state is ShardState.BOOTING
              and now - shard.since > (boot := self._timings_of(shard).boot_timeout)):
            message = (f"Shard {shard.slot} (pid {shard.pid}) not ready after {boot:g}s; "
                       "killing it")
            shard.leaving = Reason.BOOT_FAILED
        elif (
            shard.state is ShardState.READY
            and (limit := self._timings_of(shard).heartbeat_timeout)
            and now - shard.last_beat > limit
        ):
            # As gunicorn: SIGABRT first (the shard runs worker_abort and exits),
            # then the kill above if it cannot.
            shard.kill_at = now + ABORT_GRACE
            shard.leaving = Reason.BLOCKED
            return [Log(Level.ERROR, f"Shard {shard.slot} (pid {shard.pid}) blocked for more "
                                     f"than {limit:g}s; aborting it"),
                    Signal(shard.pid, StopMode.ABORT)]
        else:
            return []
        shard.killed = True
        shard.kill_at = None
        return [Log(Level.ERROR, message), Signal(shard.pid, StopMode.KILL)]

    # --- upgrading gshard itself (SIGUSR2) -------------------------------

    def _on_upgrade_event(self, event: UpgradeEvent) -> list[Action]:
        """SIGUSR2's rules decide (``upgrade_rules``); once the successor serves,
        this manager gives it the files and drains."""
        in_charge = self._phase is Phase.RUNNING and self._owns_files
        outcome = self._upgrade.handle(event, in_charge)
        if not outcome.hand_over:
            return outcome.actions
        self._owns_files = False
        # No lame duck: the successor serves on the same listeners already.
        return [*outcome.actions,
                *self._stop(event.now, StopMode.DRAIN, "Shutting down gracefully")]
