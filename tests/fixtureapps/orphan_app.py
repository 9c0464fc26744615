"""Leaves orphans behind, as applications that start helper processes do.

``/orphan`` runs a child that forks a grandchild and exits at once; the
child is reaped here, the grandchild is orphaned (adopted by the nearest
reaper: PID 1 of its PID namespace, or a subreaper), lives ``ORPHAN_SECONDS``
and exits with status 3. Any other path answers "hello".
"""

import subprocess
import sys

ORPHAN_SECONDS = 1.5
_ORPHAN = (
    "import os, time\n"
    "if os.fork():\n"
    "    os._exit(0)\n"
    f"time.sleep({ORPHAN_SECONDS})\n"
    "os._exit(3)\n"
)


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/orphan":
        subprocess.run([sys.executable, "-c", _ORPHAN], check=True)
        body = b"orphaned\n"
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
