"""What runs after the fork: a shard's boot, its serving loop, and the ``--preload`` template.

``boot`` takes a forked process from the manager's state to a loaded
application (patch with gevent first, then hooks, TLS, privileges, the
import) and hands it to ``serving``, which runs gevent ``StreamServer``s on
the slot's listeners until told to drain, retire or quit. ``template`` is the
``--preload`` process that loads once and forks shards. The rest serves
them: ``loader`` (``MODULE:ATTR``), ``tls``, ``privileges``, ``metrics`` (a
shard's counters), ``request_hooks`` (gunicorn's per-request hooks) and
``sources`` (what ``--reload`` watches).

May import: the top-level modules, ``http`` and ``sockets``; never the
manager or the cli. The manager enters only through ``boot.run``,
``boot.preload`` and ``template.run`` (import-linter checks it, setup.cfg).
"""
