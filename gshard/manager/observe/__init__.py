"""The manager's read-only window: shard reports in; status, /metrics and statsd out.

``observer`` takes what the manager hands it (shard messages, the actions it
carried out, a tick) and keeps the books in ``registry``; ``status`` builds
the status document, ``prometheus`` answers ``--metrics-bind`` and ``statsd``
sends gunicorn's metrics. Decisions about shards are the state machine's;
this only records and shows them.

May import: the top-level modules and the manager's read-only vocabulary
(``manager.events``, ``manager.view``); nothing that changes the manager's
state: not its state machine, loop, control socket or commands
(import-linter checks it, setup.cfg).
"""
