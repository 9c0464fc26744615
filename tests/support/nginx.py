"""A real nginx (Debian's package) started by a test on loopback, in a folder of its own.

Tests that put gshard behind a load balancer or a reverse proxy start one
with a configuration they write, reload it as an operator or an ingress
controller would (a new configuration, then SIGHUP to the master), and stop
it at the end. It runs in the foreground of its own session, its pid file,
logs and temporary files in its folder, so it needs no system service and
leaves nothing behind; under root its workers run as nobody, as Debian's do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.processes import child_pids, wait_until

MODULES = Path("/usr/lib/nginx/modules")
WAIT = 15.0


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    assert found, "nginx is not installed (.ci/run installs nginx-light and libnginx-mod-stream)"
    return found


def stream_module() -> str:
    module = MODULES / "ngx_stream_module.so"
    assert module.exists(), f"{module} is missing (.ci/run installs libnginx-mod-stream)"
    return f"load_module {module};"


def free_port() -> int:
    """A loopback port nothing listens on now (nginx cannot be told to pick one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Nginx:
    """One nginx master with its folder; ``body`` is the configuration after the
    main context's lines (``events``, ``http`` or ``stream`` blocks). ``user``: who
    the workers run as, when the master is root (nginx's default: nobody)."""

    def __init__(self, folder: Path, body: str, modules: str = "",
                 user: str | None = None) -> None:
        self.folder = folder
        self.modules = modules
        self.user = f"user {user};\n" if user and os.geteuid() == 0 else ""
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)  # the workers (nobody) reach the folder's sockets
        self.config = folder / "nginx.conf"
        self.error_log = folder / "error.log"
        self._write(body)
        check = subprocess.run(self._command("-t"), capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(self._command("-g", "daemon off;"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.workers = wait_until(self._workers, WAIT, "nginx's workers")

    def _command(self, *args: str) -> list[str]:
        return [nginx_binary(), "-p", str(self.folder), "-c", str(self.config),
                "-e", str(self.error_log), *args]

    def _write(self, body: str) -> None:
        temp = self.config.with_suffix(".new")
        temp.write_text(
            f"{self.modules}\n"
            f"{self.user}"
            "worker_processes 1;\n"
            f"pid {self.folder / 'nginx.pid'};\n"
            f"error_log {self.error_log} notice;\n"
            f"{body}\n")
        os.replace(temp, self.config)

    def _workers(self) -> set[int]:
        if self.proc.poll() is not None:
            raise AssertionError(f"nginx exited: {self.proc.stderr.read().decode()}"
                                 f"{self.error_log.read_text()}")
        return set(child_pids(self.proc.pid))

    def reload(self, body: str) -> float:
        """Apply a new configuration as an operator does (SIGHUP); returns once new
        workers have started (the old ones no longer accept), at that time."""
        self._write(body)
        old = self.workers
        os.kill(self.proc.pid, signal.SIGHUP)
        self.workers = wait_until(lambda: (self._workers() - old) and self._workers(), WAIT,
                                  "nginx's new workers")
        return time.monotonic()

    def stop(self) -> None:
        """Stop now (its clients have stopped), and everything it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=WAIT)
        self.proc.stderr.close()
