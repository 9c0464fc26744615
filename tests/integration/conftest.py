"""Fixtures that run real ``gshard`` processes on ephemeral loopback ports.

The helpers they use (``launch``, ``Server``, ``kill_group``...) live in
``tests/support/processes.py``; tests import those from ``tests.support``,
never from here. Each server started through a fixture is killed, with its
whole process group, at teardown.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from tests.support.loadgen import APP, SERVER_ENV, deploy
from tests.support.processes import Server, kill_group, launch
from tests.support.transports import TRANSPORTS, Pki, Transport, make_pki, make_transport


class Servers:
    """The servers one fixture started: each is killed with its process group, and
    its folder removed, when the fixture ends."""

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.folders: list[str] = []

    def start(self, app: str, *args: str, transport: Transport | None = None,
              ready: bool = True, **kwargs) -> Server:
        if transport is not None:
            # Under /tmp, not tmp_path: a unix socket's path must fit in 108 bytes.
            folder = tempfile.mkdtemp(prefix="gshard-")
            self.folders.append(folder)
            args = (*transport.server_args(folder), *args)
        elif not any(a in ("-b", "--bind") or a.startswith("--bind=") for a in args):
            args = ("--bind", "127.0.0.1:0", *args)
        server = launch(app, *args, **kwargs)
        self.servers.append(server)
        return server.wait_ready() if ready else server

    def close(self) -> None:
        for server in self.servers:
            kill_group(server)
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def gshard_proc() -> Iterator[Callable[..., Server]]:
    """Factory: ``gshard_proc("app:app", "--shards", "2")`` -> a ready ``Server``.

    ``transport=`` (a ``Transport``) adds the arguments that make the server
    listen its way; without one, ``--bind 127.0.0.1:0`` is added unless the
    arguments bind themselves. ``ready=False`` returns as soon as the process
    is started.
    """
    servers = Servers()
    yield servers.start
    servers.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as files."""
    pytest.importorskip("trustme")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module", params=TRANSPORTS)
def transport(request) -> Transport:
    """Each transport in turn (tcp, unix, tls, proxy) for a behaviour suite.

    Module-scoped, so pytest runs a module's tests for one transport, then the
    next, and ``shared_gshard``'s servers for one are gone before the next starts.
    """
    pki = request.getfixturevalue("pki") if request.param == "tls" else None
    return make_transport(request.param, pki)


@pytest.fixture(scope="module")
def shared_gshard(transport) -> Iterator[Callable[..., Server]]:
    """Factory like ``gshard_proc`` for the module's ``transport``, but a server is
    started once and shared: the same arguments return the same running server.

    For tests that only send requests and read their own responses; one that
    reads the server's log looks from ``server.stderr.mark()`` on, and one that
    changes the server (signals, scaling) starts its own with ``gshard_proc``.
    """
    servers = Servers()
    started: dict[tuple, Server] = {}

    def start(app: str, *args: str, env: dict[str, str] | None = None, **kwargs) -> Server:
        key = (app, args, tuple(sorted((env or {}).items())), tuple(sorted(kwargs.items())))
        server = started.get(key)
        if server is None:
            server = started[key] = servers.start(app, *args, transport=transport, env=env,
                                                  **kwargs)
        # A test before this one must not have ended it unnoticed.
        assert server.proc.poll() is None, f"the shared server exited:\n{server.stderr.text}"
        return server

    yield start
    servers.close()


@pytest.fixture
def deployed_gshard(gshard_proc, tmp_path) -> Callable[..., Server]:
    """Factory: deploys loadgen's application into ``tmp_path`` and starts gshard on it.

    ``deployed_gshard("--shards", "2")`` -> a ready ``Server`` answering
    "v1 PID"; the test deploys later versions into the same ``tmp_path``.
    ``env`` adds to ``SERVER_ENV``; other keywords go to ``gshard_proc``.
    """

    def start(*args: str, version: str = "v1", env: dict[str, str] | None = None,
              **kwargs) -> Server:
        deploy(tmp_path, version)
        return gshard_proc(APP, *args, cwd=tmp_path, env={**SERVER_ENV, **(env or {})},
                           **kwargs)

    return start


TCP_MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


@pytest.fixture
def no_request_migration() -> Iterator[None]:
    """Run with ``net.ipv4.tcp_migrate_req`` = 0, or skip saying why not.

    With 1, the kernel moves connections queued on a closing listener to
    another one of the group: it would hide a listener closed too early.
    Tests that close listeners under load use it:
    ``pytestmark = pytest.mark.usefixtures("no_request_migration")``.
    """
    try:
        with open(TCP_MIGRATE_REQ) as handle:
            value = handle.read().strip()
    except FileNotFoundError:
        yield  # a kernel before 5.14 never migrates
        return
    if value == "0":
        yield
        return
    if os.geteuid() != 0:
        pytest.skip(f"{TCP_MIGRATE_REQ} is {value} and only root may set it to 0")
    try:
        with open(TCP_MIGRATE_REQ, "w") as handle:
            handle.write("0")
    except OSError as exc:
        pytest.skip(f"{TCP_MIGRATE_REQ} is {value} and cannot be set to 0: {exc}")
    try:
        yield
    finally:
        with open(TCP_MIGRATE_REQ, "w") as handle:
            handle.write(value)
