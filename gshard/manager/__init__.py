"""The manager: one unpatched loop that forks shards and keeps the right ones running.

``loop`` is the only I/O here: signals, the shards' messages, forks and
reaping, turned into events for ``fsm``, the pure state machine (its events
and actions in ``events``, the self-upgrade's rules in ``upgrade_rules``, a
read-only ``view`` of it for observers). Around it: ``control`` (the control
socket) and ``commands`` (what each control command asks of the machine),
``upgrade`` (SIGUSR2's processes and pipe), ``templates`` (the manager's
handle on ``--preload`` templates), ``watcher`` (``--reload``), ``systemd``
(sd_notify). ``observe/`` keeps books and shows them: status, /metrics, statsd.

May import: the top-level modules and ``sockets``; of the serving side, only
the entry points it runs in forked processes (``shard.boot``,
``shard.template``); never ``http``, gevent or the cli (import-linter checks
it, setup.cfg). The process does load gevent once, unpatched, through
``shard.boot.preload``, so that each fork finds it imported.
"""
