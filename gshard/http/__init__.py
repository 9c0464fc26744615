"""HTTP/1.1 for one connection: the sans-IO core and the one I/O adapter over it.

``protocol`` parses requests and ``response`` frames responses without a
socket; ``wsgi`` and ``exchange`` run one request's PEP 3333 cycle;
``connection`` is the only code here that reads or writes a socket (with
``preamble`` and ``linger`` for what comes before the first request and after
the last). ``proxy`` reads PROXY headers and forwarded fields, ``context``
is what a listener hands its connections, ``access_log`` formats a finished
exchange in gunicorn's atoms. ``compiled`` decides whether the per-request
modules run compiled (Cython) or from their ``.py`` files, as one unit.

May import: the top-level modules (errors, log, version) and gevent's
sockets; never the shard, manager, sockets or cli packages, and never
gevent's monkey-patching (import-linter checks it, setup.cfg).
"""

from gshard.http import compiled

compiled.install()
