"""Liveness and readiness: should this server be restarted, should it get traffic?

An orchestrator asks two different questions and acts on each differently:
a failed liveness check restarts the container, a failed readiness check
only takes it out of its load balancer. So they answer different things:

* **live** fails only when a restart would help: the manager's loop answers
  (or the probe would time out), and while gshard runs, at least one shard
  has reported within ``--timeout``. A first generation still booting, a
  reload, a stop: all alive (booting is bounded by ``--boot-timeout``, after
  which gshard exits by itself).
* **ready** holds only while a generation serves and gshard is not stopping:
  it fails while the first generation boots (a slow ``--preload`` import
  included), when no shard of the serving generation is up, and from the
  moment a stop begins (the lame duck of ``--shutdown-delay`` included, which
  is what lets a load balancer drop the server while it still answers).

Both are the manager's own answers, read from the state machine's view:
the same functions serve ``/livez`` and ``/readyz`` on ``--metrics-bind``
and the control socket's ``health`` command (``gshard health``). Each
verdict carries one line saying why, for the probe's log and for a person.
"""

from __future__ import annotations

from dataclasses import dataclass

from gshard.manager.events import Phase, ShardState, Upgrade
from gshard.manager.observe.status import View

KINDS = ("live", "ready")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # one line, without a newline


def check(kind: str, view: View) -> Verdict:
    """The verdict of ``kind`` ("live" or "ready") on ``view``."""
    if kind == "live":
        return liveness(view)
    if kind == "ready":
        return readiness(view)
    raise ValueError(f"no such health check {kind!r} (live or ready)")


def readiness(view: View) -> Verdict:
    machine, now = view.machine, view.now
    if machine.phase is Phase.STARTING:
        booting = machine.of_generation(machine.booting) if machine.booting else ()
        ready = sum(1 for shard in booting if shard.state is ShardState.READY)
        return Verdict(False, f"not ready: starting, generation {machine.booting or 1} is "
                              f"booting ({ready} of {machine.slots} shards ready)")
    if machine.phase is Phase.STOPPING:
        if machine.upgrade is Upgrade.HANDING_OVER:
            # Both managers answer on the metrics port until this one exits;
            # the pod serves, through the successor.
            return Verdict(True, "ready: upgraded; the new manager serves while this one "
                                 "drains")
        if machine.lame_duck_until is not None:
            left = max(machine.lame_duck_until - now, 0.0)
            return Verdict(False, f"not ready: stopping; serving {left:.1f}s more as a lame "
                                  "duck (--shutdown-delay), then draining")
        return Verdict(False, "not ready: stopping; draining")
    serving = [shard for shard in machine.of_generation(machine.live)
               if shard.state is ShardState.READY]
    if not serving:
        return Verdict(False, f"not ready: no shard of generation {machine.live} serves "
                              "(respawning)")
    reloading = f"; generation {machine.booting} is booting" if machine.booting else ""
    return Verdict(True, f"ready: generation {machine.live} serves on {len(serving)} of "
                         f"{machine.slots} shards{reloading}")


def liveness(view: View) -> Verdict:
    machine, now, timeout = view.machine, view.now, view.info.heartbeat_timeout
    if machine.phase is Phase.STARTING:
        return Verdict(True, "alive: starting (booting is bounded by --boot-timeout)")
    if machine.phase is Phase.STOPPING:
        return Verdict(True, "alive: stopping")
    running = [shard for shard in machine.shards if shard.state is not ShardState.BOOTING]
    if not timeout:  # --timeout 0: no heartbeat deadline to judge by
        if running:
            return Verdict(True, f"alive: {_shards(len(running))} running")
        return Verdict(False, "not alive: no shard is running")
    recent = [shard for shard in running if now - shard.last_beat <= timeout]
    if recent:
        return Verdict(True, f"alive: {_shards(len(recent))} reported within the last "
                             f"{timeout:g}s")
    return Verdict(False, f"not alive: no shard has reported within the last {timeout:g}s "
                          "(--timeout)")


def _shards(count: int) -> str:
    return f"{count} shard{'' if count == 1 else 's'}"
