"""A throwaway PostgreSQL server for tests that need a real database.

``running_postgres()`` makes a cluster with ``initdb`` in a new temporary
folder, runs ``postgres`` on a unix socket in that folder only (no TCP port,
so nothing to guess or collide with), and on the way out stops it and removes
the folder, whatever happened in between. It skips the test only when the
PostgreSQL binaries are not installed (``.ci/run`` installs Debian's
``postgresql`` package when they are missing).

PostgreSQL refuses to run as root, so as root the folder is given to the
``postgres`` user and both programs run as it; any other user runs them as
itself. Authentication is ``trust``: only processes that can reach the
socket file (here, this machine's) connect.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.processes import Output

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# The number in the socket's file name (.s.PGSQL.5432); no TCP port is opened.
SOCKET_PORT = 5432
# Settings for a disposable cluster: no durability work, room for two
# generations of shards each holding a pool during a reload.
SERVER_SETTINGS = {
    "listen_addresses": "",
    "max_connections": "200",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


@dataclass
class Postgres:
    """A running server: how to reach it and what it logged."""

    socket_dir: str
    log: Output
    user: str = "postgres"
    dbname: str = "postgres"

    @property
    def dsn(self) -> str:
        """A libpq connection string (what ``psycopg2.connect`` and ``DATABASE_URL`` take)."""
        return f"host={self.socket_dir} port={SOCKET_PORT} user={self.user} dbname={self.dbname}"


def find_bindir() -> str | None:
    """Where initdb and postgres are: Debian keeps them out of PATH, per major version."""
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    versions = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not versions:
        return None
    newest = max(versions, key=lambda path: int(path.split("/")[-3]))
    return os.path.dirname(newest)


def _run_as() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and there is no postgres user to run PostgreSQL as")


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A ready PostgreSQL server in a temporary folder, removed afterwards."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb in PATH or /usr/lib/postgresql/*/bin)")
    account = _run_as()
    as_user: dict = {}
    if account is not None:
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    folder = tempfile.mkdtemp(prefix="gshard-pg-")
    server: subprocess.Popen | None = None
    try:
        os.chmod(folder, 0o755)  # the socket file is reached through it
        if account is not None:
            os.chown(folder, account.pw_uid, account.pw_gid)
        data = os.path.join(folder, "data")
        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        if account is not None:
            env["HOME"] = folder
        made = subprocess.run(
            [os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-sync"],
            capture_output=True, text=True, timeout=START_TIMEOUT, cwd=folder, env=env,
            **as_user,
        )
        if made.returncode != 0:
            pytest.fail(f"initdb failed ({made.returncode}):\n{made.stdout}{made.stderr}")
        settings = [arg for name, value in SERVER_SETTINGS.items()
                    for arg in ("-c", f"{name}={value}")]
        server = subprocess.Popen(
            [os.path.join(bindir, "postgres"), "-D", data, "-k", folder,
             "-p", str(SOCKET_PORT), *settings],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=folder, env=env,
            start_new_session=True, **as_user,
        )
        log = Output()
        threading.Thread(target=log.pump, args=(server.stderr,), daemon=True).start()
        log.wait_for("database system is ready to accept connections", START_TIMEOUT)
        yield Postgres(socket_dir=folder, log=log)
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(folder, ignore_errors=True)


def _stop(server: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT: clients are disconnected), then SIGKILL to the group if stuck."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=STOP_TIMEOUT)
