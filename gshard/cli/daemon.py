"""``--daemon``: detach from the terminal as gunicorn does, for init scripts that expect it.

Done after the listeners are bound, so an address in use is still reported
on the terminal with a failing exit status; everything after (the manager and
its shards) runs in the detached process. Under a supervisor (systemd) do not
use it: the supervisor needs the process it started.
"""

from __future__ import annotations

import os
import sys


def daemonize(keep_stdio: bool) -> None:
    """Fork twice around ``setsid`` so no terminal can be reacquired; the starter exits 0.

    Standard input, output and error become /dev/null unless ``keep_stdio``
    (gunicorn's --enable-stdio-inheritance); log files stay open.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    if keep_stdio:
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
