"""Run bjoern as N processes on one port: ``bjoern_workers.py MODULE:APP --processes N``.

bjoern has no process manager of its own; its documented way to use several
cores is several processes, each with its own ``SO_REUSEPORT`` listener on the
same port, which is how the benchmark compares it with gshard's shards. The
app is imported once here, before forking, like a preloaded gunicorn app.

The port is chosen by binding port 0 with ``SO_REUSEPORT`` and never listening
on that socket: it keeps the port reserved while the workers bind theirs, and
the kernel hands connections only to listening sockets. The log lines match
the ones the benchmark already reads from gunicorn: ``Listening at: URL``
once, ``Booting worker with pid PID`` per worker.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import socket
import sys

import bjoern

HOST = "127.0.0.1"


def _load(target: str):
    module, _, attr = target.partition(":")
    sys.path.insert(0, os.getcwd())
    return getattr(importlib.import_module(module), attr or "app")


def _say(line: str) -> None:
    """One write per line, so lines of processes sharing the log never interleave."""
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


def _serve(app, port: int, backlog: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    bjoern.listen(app, HOST, port, reuse_port=True, listen_backlog=backlog)
    _say(f"Booting worker with pid {os.getpid()}")
    bjoern.run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", help="MODULE:ATTR, imported from the current directory")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=2048)
    args = parser.parse_args()
    app = _load(args.app)
    reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind((HOST, 0))
    port = reservation.getsockname()[1]
    _say(f"Listening at: http://{HOST}:{port}")
    workers = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            try:
                _serve(app, port, args.backlog)
            finally:
                os._exit(1)
        workers.append(pid)

    def stop(signum: int, frame: object) -> None:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in workers:
        os.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
