"""The manager process: the I/O around ``ManagerFSM``.

One loop, never monkey-patched: it sleeps in ``poll`` on two descriptors
(the signal wakeup pipe and the shards' message socket) until the state
machine's next deadline, turns what woke it into events, and carries out the
actions the state machine returns (fork, signal, log, exit). Signal handlers
do nothing; ``signal.set_wakeup_fd`` writes each signal's number into the
pipe, so no signal is handled halfway through another step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence

from gshard import hooks, ipc, log
from gshard.config import Config
from gshard.errors import EXIT_BOOT_ERROR, ConfigError
from gshard.manager import (
    discovery,
    events,
    process_env,
    reconfigure,
    systemd,
    templates,
    upgrade,
)
from gshard.manager.commands import CommandHandler
from gshard.manager.control import ControlServer
from gshard.manager.fsm import ManagerFSM
from gshard.manager.observe.observer import Observer
from gshard.manager.watcher import Watcher

# The serving side, reached only here and only through its two entry points:
# the manager runs them in the processes it forks (import-linter checks it).
from gshard.shard import boot, template
from gshard.sockets.listener import ListenerSet
from gshard.sockets.queues import slot_queues
from gshard.sockets.steering import steer

_SIGNAL_EVENTS = {
    signal.SIGHUP: lambda now: events.Reload(now),
    signal.SIGTERM: lambda now: events.Stop(graceful=True, now=now),
    signal.SIGINT: lambda now: events.Stop(graceful=False, now=now),
    signal.SIGQUIT: lambda now: events.Stop(graceful=False, now=now),
    signal.SIGTTIN: lambda now: events.Scale(+1, now),
    signal.SIGTTOU: lambda now: events.Scale(-1, now),
    signal.SIGUSR2: lambda now: events.UpgradeRequested(now),
}
_HANDLED_SIGNALS = (*_SIGNAL_EVENTS, signal.SIGCHLD, signal.SIGUSR1)
_STOP_SIGNALS = {
    events.StopMode.LAME_DUCK: ipc.LAME_DUCK_SIGNAL,
    events.StopMode.DRAIN: signal.SIGTERM,
    events.StopMode.RETIRE: signal.SIGUSR2,
    events.StopMode.QUIT: signal.SIGQUIT,
    events.StopMode.ABORT: signal.SIGABRT,
    events.StopMode.KILL: signal.SIGKILL,
}
# The loop wakes at least this often even when nothing is due.
MAX_SLEEP = 1.0
# How long an exiting manager waits for the templates it told to exit before killing them.
CHILD_EXIT_WAIT = 5.0


def _ignore_signal(signum: int, frame: object) -> None:
    """Installed so the signal is not fatal; the wakeup fd carries it to the loop."""


class Manager:
    """Forks the shards and keeps the right ones running until told to stop."""

    def __init__(
        self,
        config: Config,
        listeners: list[ListenerSet],
        argv: Sequence[str] | None = None,
        inherited: upgrade.Inheritance | None = None,
        reread: Callable[[], Config] | None = None,
    ) -> None:
        """``reread``: reads the configuration again, as it was read for ``config``, for
        a reload (the command line's layers, or ``gshard.run``'s settings over their
        file); ConfigError if it does not load. Without one a reload keeps ``config``."""
        configured = config.shards
        per_slot = [ls for ls in listeners if not ls.shared]
        if inherited is not None and per_slot:
            # The predecessor may have scaled: one shard per inherited listener.
            config = dataclasses.replace(config, shards=len(per_slot[0].sockets))
        self.config = config  # the configuration read last
        # Each generation's own (a reload reads it again), until its shards are gone.
        self.generation_configs: dict[int, Config] = {}
        # --preload's templates killed for not loading the application within
        # --boot-timeout: pid -> that limit, for the failure their exit reports.
        self._overdue_templates: dict[int, float] = {}
        self._reread = reread
        self.listeners = listeners
        # To start a successor with the same command line (SIGUSR2); None
        # when started from Python (gshard.run), which cannot be started again.
        self.argv = None if argv is None else list(argv)
        self.inherited = inherited
        # The successor's ready pipe, while it boots (see ``upgrade``).
        self._successor_ready: int | None = None
        self.timings = reconfigure.timings_of(config)
        self.fsm = ManagerFSM(slots=config.shards, timings=self.timings,
                              inherited=inherited is not None, configured=configured,
                              preload=config.preload_app)
        self.pid = os.getpid()
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._inbox, self._outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._inbox.setblocking(False)
        self.control: ControlServer | None = None
        # gunicorn's arbiter as the configuration's hooks see it.
        self.server = hooks.Server(config, self.pid, [ls.hook_address for ls in listeners],
                                   lambda: self.fsm.slots)
        self.commands: CommandHandler | None = None
        # Shard reports, status, /metrics, statsd. Opened here, so a metrics
        # port that cannot be bound stops gshard before any shard is forked.
        self.observer = Observer(config, self.fsm, tuple(ls.url for ls in listeners),
                                 lambda: slot_queues(self.listeners),
                                 shared_ports=inherited is not None)
        # --preload: one template process per generation forks its shards.
        self.templates = templates.Templates(self._fork_template) if config.preload_app else None
        # --reload: the application's source files, watched for changes.
        self.watcher = Watcher(config.reload_extra_files) if config.reload else None

    def run(self) -> int:
        """Serve until stopped; the exit status for the command."""
        self._install_signals()
        if self.templates is not None:
            templates.become_subreaper()
        boot.preload()
        log.set_process_title("manager", self.config)
        for listener_set in self.listeners:
            url = listener_set.url
            if self.config.certfile and url.startswith("http://"):
                url = "https://" + url[len("http://"):]
            log.error_log.info("Listening at: %s (%s)", url, log.shards(self.config.shards))
        try:
            return self._loop()
        finally:
            self._cleanup()
            self.server.call("on_exit")

    def _loop(self) -> int:
        pending = deque(self.fsm.handle(events.Start(time.monotonic())))
        while True:
            while pending:
                action = pending.popleft()
                if isinstance(action, events.Exit):
                    return action.code
                pending.extend(self._perform(action))
            if self.control is not None:
                self.control.check_waiters()
            now = time.monotonic()
            deadline = self.fsm.next_deadline()
            sleep = MAX_SLEEP if deadline is None else min(max(deadline - now, 0.0), MAX_SLEEP)
            watched = [self._wakeup_r, self._inbox, *self.observer.descriptors()]
            if self.control is not None:
                watched += self.control.descriptors()
            if self._successor_ready is not None:
                watched.append(self._successor_ready)
            readable = _wait_readable(watched, sleep)
            now = time.monotonic()
            self.observer.handle(readable)
            found: list[events.Event] = []
            if self._wakeup_r in readable:
                found += self._signal_events(now)
            if self.templates is not None:
                self._kill_overdue_templates(now)
            # Exits are collected before messages and handled after them:
            # whatever a process sent before it exited is then seen first.
            reaped = self._reap(now)
            found += self._message_events(now)
            if self.control is not None:
                found += self._control_events(readable, now)
            if self._successor_ready is not None and self._successor_ready in readable:
                found += self._successor_events(now)
            found += reaped
            if self.watcher is not None and (changed := self.watcher.changed(now)):
                log.error_log.info("Reloading: %s changed", ", ".join(changed[:3]))
                found.append(events.Reload(now))
            found.append(events.Tick(now))
            for event in found:
                pending.extend(self.fsm.handle(event))
            in_use = self.fsm.generations_in_use()
            if self.templates is not None:
                self.templates.prune(in_use)
            for generation in [g for g in self.generation_configs if g not in in_use]:
                del self.generation_configs[generation]
            self.observer.tick(now)

    # --- turning the world into events ---------------------------------

    def _signal_events(self, now: float) -> list[events.Event]:
        found: list[events.Event] = []
        try:
            signums = os.read(self._wakeup_r, 512)
        except BlockingIOError:
            return found
        for signum in signums:
            make = _SIGNAL_EVENTS.get(signum)
            if make is not None:
                found.append(make(now))
            elif signum == signal.SIGUSR1:
                self._reopen_logs()
        return found

    def _reopen_logs(self) -> int:
        """Reopen the log files here and in every shard; the shards told."""
        log.reopen_files()
        return self._signal_shards(signal.SIGUSR1)

    def _message_events(self, now: float) -> list[events.Event]:
        found: list[events.Event] = []
        while True:
            try:
                data = self._inbox.recv(ipc.MAX_DATAGRAM)
            except BlockingIOError:
                return found
            try:
                message = ipc.decode(data)
            except ValueError:
                log.error_log.warning("Ignoring a malformed message from a shard: %r", data[:80])
                continue
            self.observer.message(message, now)
            match message.kind:
                case ipc.Kind.BEAT:
                    found.append(events.Beat(message.pid, now))
                case ipc.Kind.READY:
                    found.append(events.Ready(message.pid, now))
                case ipc.Kind.BOOT_FAILED:
                    found.append(events.BootFailed(message.pid, message.detail, now))
                case ipc.Kind.RECYCLE:
                    found.append(events.RecycleRequested(message.pid, now))
                case ipc.Kind.SPAWNED if self.templates is not None:
                    spawned = self.templates.spawned(message.detail)
                    if spawned is not None:
                        found += self._spawned(spawned)
                case ipc.Kind.SOURCES if self.watcher is not None:
                    self.watcher.add(message.detail.split("\n"))
                # BLOCKED is for the observer alone.

    def _control_events(self, readable: list, now: float) -> list[events.Event]:
        control = self.control
        assert control is not None
        found: list[events.Event] = []
        for sock in readable:
            if sock is control.sock:
                control.accept()
            elif sock in control.clients:
                command = control.read(sock)
                if command is not None and self.commands is not None:
                    found += self.commands.handle(sock, command, now)
        return found

    def _reap(self, now: float) -> list[events.Event]:
        found: list[events.Event] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return found
            if pid == 0:
                return found
            code = os.waitstatus_to_exitcode(status)
            if self.templates is not None and self.templates.is_template(pid):
                found += self._template_exited(pid, code, now)
            elif self.fsm.is_successor_manager(pid):
                self._close_successor_ready()
                found.append(events.SuccessorExited(pid, code, now))
            else:
                self.server.reaped(pid)
                found.append(events.Exited(pid, code, now))

    # --- preloading (--preload) -------------------------------------------

    def _spawn_from_template(self, slot: int, generation: int) -> None:
        assert self.templates is not None
        worker = self.server.forking(slot, generation, self._config_of(generation))
        self.templates.spawn(slot, generation, worker,
                             [ls.socket_for(slot) for ls in self.listeners], time.monotonic())

    def _spawned(self, shard: templates.Spawned) -> list[events.Event]:
        # The shard's boot clock starts when it was asked for, not when the
        # template got to fork it: --boot-timeout bounds the import as well.
        self.server.forked(shard.worker, shard.pid)
        return [events.Spawned(shard.pid, shard.slot, shard.generation, shard.asked)]

    def _kill_overdue_templates(self, now: float) -> None:
        """A template that has not forked a shard asked for within --boot-timeout is
        stuck loading the application (or slow past the limit): it is killed, and
        its exit fails the generation as a shard that did not boot in time would."""
        assert self.templates is not None
        for stuck in self.templates.overdue(now, self._boot_timeout_of):
            if stuck.pid in self._overdue_templates:
                continue
            limit = self._boot_timeout_of(stuck.generation)
            log.error_log.error("The template of generation %d (pid %d) has not loaded the "
                                "application within --boot-timeout %gs; killing it",
                                stuck.generation, stuck.pid, limit)
            self._overdue_templates[stuck.pid] = limit
            with contextlib.suppress(ProcessLookupError):
                os.kill(stuck.pid, signal.SIGKILL)

    def _boot_timeout_of(self, generation: int) -> float:
        return self._config_of(generation).boot_timeout

    def _template_exited(self, pid: int, code: int, now: float) -> list[events.Event]:
        assert self.templates is not None
        limit = self._overdue_templates.pop(pid, None)
        lost = self.templates.reaped(pid, code)
        if lost is None:
            return []
        found = self._spawned(lost)
        if limit is not None:
            found.append(events.BootFailed(pid, f"the application did not load within "
                                                f"--boot-timeout {limit:g}s (--preload)", now))
        return [*found, events.Exited(pid, code, now)]

    def _fork_template(self, generation: int, requests: socket.socket,
                       others: list[socket.socket]) -> int:
        """Fork the template of ``generation``; it keeps no listener (see ``template``)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED_SIGNALS)
            return pid
        try:
            self._forget_manager_state(kept=[])
            for sock in others:
                sock.close()
            config = self._config_of(generation)
            process_env.apply(config)
            template.run(config, generation, requests, self.listeners, self._outbox,
                         self.pid, self.server, self.timings.retire_settle)
        except BaseException:
            traceback.print_exc()
        os._exit(EXIT_BOOT_ERROR)

    # --- upgrading gshard itself (SIGUSR2) -------------------------------

    def _start_successor(self) -> list[events.Action]:
        now = time.monotonic()
        if self.argv is None:
            return self.fsm.handle(events.SuccessorSpawnFailed(
                "started by gshard.run(), without a command line to start again", now))
        self.server.call("pre_exec")
        chosen = self.control.path if self.control is not None and not self.config.control_path \
            else None
        try:
            successor = upgrade.start_successor(self.argv, self.listeners, chosen)
        except OSError as exc:
            return self.fsm.handle(events.SuccessorSpawnFailed(str(exc), now))
        self._successor_ready = successor.ready_r
        return self.fsm.handle(events.SuccessorSpawned(successor.pid, now))

    def _successor_events(self, now: float) -> list[events.Event]:
        assert self._successor_ready is not None
        outcome = upgrade.read_outcome(self._successor_ready)
        if outcome is None:
            return []
        self._close_successor_ready()
        # A pipe closed without "ready": the successor died, and reaping it says how.
        return [events.SuccessorReady(now)] if outcome else []

    def _close_successor_ready(self) -> None:
        if self._successor_ready is not None:
            os.close(self._successor_ready)
            self._successor_ready = None

    def _take_ownership(self) -> None:
        """Claim the pidfile and the control socket: at start, or once a successor serves."""
        self._write_pidfile()
        if not self.config.control_socket_disable:
            self.control = self._open_control()
        if self.control is not None:
            self.commands = CommandHandler(self.fsm, self.control, self.observer.status,
                                           self._reopen_logs, self.observer.health)
        if self.inherited is not None:
            self.inherited.announce_ready()
            systemd.notify(f"MAINPID={self.pid}")
            log.error_log.info("Upgrade complete: this manager (pid %d) took over", self.pid)

    def _open_control(self) -> ControlServer | None:
        """The control socket: at the path given (``--control-socket``, ``--pid``'s
        ``FILE.ctl``), linked from where the commands look; else the predecessor's
        (an upgrade), else a path of this manager's own (``discovery``)."""
        given = self.config.control_path
        if given:
            return ControlServer.open(given, link=discovery.link_to)
        inherited = self.inherited.control_path if self.inherited is not None else None
        path = inherited or discovery.instance_path()
        if path is None:
            log.error_log.warning(
                "No control socket: none of %s is usable (a directory of this user's alone); "
                "give --control-socket PATH for gshard status, reload and the others",
                ", ".join(discovery.candidate_dirs()))
            return None
        try:
            return ControlServer.open(path)
        except OSError as exc:
            log.error_log.warning("No control socket at %s: %s", path, exc.strerror or exc)
            return None

    # --- carrying out actions -----------------------------------------

    def _perform(self, action: events.Action) -> list[events.Action]:
        """Carry out ``action``; the machine's answer to what came of it (a fork, a
        successor started)."""
        self.observer.action(action)
        match action:
            case events.Spawn() if self.templates is not None:
                self._spawn_from_template(action.slot, action.generation)
            case events.Spawn():
                pid = self._fork(action.slot, action.generation)
                return self.fsm.handle(events.Spawned(pid, action.slot, action.generation,
                                               time.monotonic()))
            case events.Signal():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(action.pid, _STOP_SIGNALS[action.mode])
            case events.Log():
                log.error_log.log(action.level, "%s", action.message)
            case events.ReadConfig():
                return self._read_config()
            case events.ReloadFinished() if self.control is not None:
                self.control.finish_reload(action.ok, action.message, action.tickets)
            case events.Steer():
                for listener_set in self.listeners:
                    if not listener_set.shared:  # one queue for all: nothing to choose
                        steer(listener_set.sockets[0], action.slots)
            case events.Listeners():
                for listener_set in self.listeners:
                    listener_set.resize(action.count, self.config.backlog)
            case events.Status():
                systemd.notify_state(action.state, action.message)
            case events.StartSuccessor():
                return self._start_successor()
            case events.TakeOwnership():
                self._take_ownership()
            case events.Title():
                log.set_process_title(action.role, self.config)
            case events.Hook():
                self.server.call(action.name, *action.args)
            # Departed is for the observer alone; events.Exit ends the loop before it gets here.
        return []

    # --- reading the configuration again (a reload) ---------------------------

    def _config_of(self, generation: int) -> Config:
        """The configuration ``generation`` was booted with (the one read last, for a
        generation not seen yet: the first)."""
        return self.generation_configs.setdefault(generation, self.config)

    def _read_config(self) -> list[events.Action]:
        """Read the configuration again for the reload about to boot; the machine's
        answer to it. What only a new manager could change keeps its value (one
        warning names it); what the manager itself uses (logging, hooks, its title,
        statsd, the files --reload watches) follows at once; each shard gets its
        generation's."""
        now = time.monotonic()
        try:
            read = self.config if self._reread is None else self._reread()
        except ConfigError as exc:
            return self.fsm.handle(events.ConfigFailed(str(exc), now))
        except Exception as exc:  # whatever it is, the serving generation stays
            log.error_log.exception("Reading the configuration again failed")
            return self.fsm.handle(events.ConfigFailed(log.failure(exc), now))
        config, kept = reconfigure.keep_fixed(self.config, read)
        try:
            log.configure_for(config)
        except Exception as exc:  # a logging config can fail in any way its handlers can
            log.configure_for(self.config)  # the one that worked
            return self.fsm.handle(events.ConfigFailed(f"logging config: {log.failure(exc)}",
                                                       now))
        if kept:
            log.error_log.warning("%s", reconfigure.kept_message(kept))
        said = set(self.config.compat_warnings())
        for warning in config.compat_warnings():
            if warning not in said:
                log.error_log.warning("%s", warning)
        self.config = self.server.config = config
        process_env.apply(config)  # for the manager's own hooks; each child applies its own
        self.observer.reconfigure(config)
        if self.watcher is not None:
            self.watcher.patterns = tuple(config.reload_extra_files)
        log.set_process_title("manager", config)
        actions = self.fsm.handle(events.ConfigRead(config.shards, reconfigure.timings_of(config),
                                                    now))
        booting = self.fsm.view().booting
        if booting is not None:
            self.generation_configs[booting] = config
        return actions

    # --- forking a shard -------------------------------------------------------

    def _fork(self, slot: int, generation: int) -> int:
        config = self._config_of(generation)
        worker = self.server.forking(slot, generation, config)
        spec = ipc.ShardSpec(
            config=config,
            slot=slot,
            generation=generation,
            listeners=[(ls.socket_for(slot), ls.address, ls.port) for ls in self.listeners],
            channel=self._outbox,
            manager_pid=self.pid,
            retire_settle=self.timings.retire_settle,
            worker=worker,
        )
        # Until the new shard has its own handlers, a signal sent to it (a
        # generation failing at once is told to quit) would run the manager's
        # and land in the manager's wakeup pipe; blocked, it waits for the
        # shard's (shard.run unblocks).
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED_SIGNALS)
            self.server.forked(worker, pid)
            return pid
        try:
            self._forget_manager_state(kept=[sock for sock, _, _ in spec.listeners])
            process_env.apply(config)
            boot.run(spec)
        except BaseException:
            traceback.print_exc()
        os._exit(EXIT_BOOT_ERROR)

    def _forget_manager_state(self, kept: list[socket.socket]) -> None:
        """In a new shard or template: drop the manager's signal plumbing and every
        listening socket but those ``kept`` (the shard's slot's)."""
        signal.set_wakeup_fd(-1)
        for signum in _HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)
        self._inbox.close()
        self.observer.close()
        if self.control is not None:
            self.control.forget()
        mine = {id(sock) for sock in kept}
        for listener_set in self.listeners:
            for sock in listener_set.sockets:
                if id(sock) not in mine:
                    sock.close()

    def _signal_shards(self, signum: int) -> int:
        told = 0
        for pid in self.fsm.shard_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
                told += 1
        return told

    # --- process setup and teardown -----------------------------------

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signum in _HANDLED_SIGNALS:
            signal.signal(signum, _ignore_signal)

    def _write_pidfile(self) -> None:
        path = self.config.pidfile
        if path is None:
            return
        temp = f"{path}.{self.pid}.tmp"
        with open(temp, "w") as handle:
            handle.write(f"{self.pid}\n")
        os.replace(temp, path)

    def _cleanup(self) -> None:
        if self.control is not None:
            self.control.finish_reload(False, "the server is shutting down", None)
            self.control.close()
        self.observer.close()
        children = self.templates.close() if self.templates is not None else []
        for pid in self.fsm.shard_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            children.append(pid)
        _reap_before_exit(children, CHILD_EXIT_WAIT)
        for listener_set in self.listeners:
            listener_set.close(unlink=self.fsm.owns_files)
        signal.set_wakeup_fd(-1)
        path = self.config.pidfile
        if path is not None and self.fsm.owns_files:
            with contextlib.suppress(OSError), open(path) as handle:
                if handle.read().strip() == str(self.pid):
                    os.unlink(path)



def _reap_before_exit(pids: list[int], timeout: float) -> None:
    """Wait for ``pids`` (children told to exit) to end and reap them, killing those
    still there after ``timeout`` seconds: a child the manager leaves unreaped is
    handed to init, which in a container may never reap it (``<defunct>``)."""
    deadline = time.monotonic() + timeout
    remaining = set(pids)
    while remaining:
        for pid in list(remaining):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped already
                done = pid
            if done:
                remaining.discard(pid)
        if not remaining:
            return
        if time.monotonic() >= deadline:
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            return
        time.sleep(0.01)


def _wait_readable(watched: list, timeout: float) -> list:
    """Which of ``watched`` (sockets or descriptor numbers) can be read, waiting
    up to ``timeout`` seconds. poll, not select: a manager holding many
    listeners may have descriptor numbers past select's 1023."""
    poller = select.poll()
    for item in watched:
        poller.register(item, select.POLLIN)
    ready = {fd for fd, _ in poller.poll(timeout * 1000)}
    return [item for item in watched if (item if isinstance(item, int) else item.fileno()) in ready]
