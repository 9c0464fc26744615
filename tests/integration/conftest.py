"""Fixtures that run real ``gshard`` processes on ephemeral loopback ports.

The helpers they use (``launch``, ``Server``, ``kill_group``...) live in
``tests/support/processes.py``; tests import those from ``tests.support``,
never from here. Each server started through a fixture is killed, with its
whole process group, at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.support.loadgen import APP, SERVER_ENV, deploy
from tests.support.processes import Server, kill_group, launch


@pytest.fixture
def gshard_proc() -> Iterator[Callable[..., Server]]:
    """Factory: ``gshard_proc("app:app", "--shards", "2")`` -> a ready ``Server``.

    ``--bind 127.0.0.1:0`` is added unless the arguments bind themselves;
    ``ready=False`` returns as soon as the process is started.
    """
    servers: list[Server] = []

    def start(app: str, *args: str, ready: bool = True, **kwargs) -> Server:
        if not any(a in ("-b", "--bind") or a.startswith("--bind=") for a in args):
            args = ("--bind", "127.0.0.1:0", *args)
        server = launch(app, *args, **kwargs)
        servers.append(server)
        return server.wait_ready() if ready else server

    yield start
    for server in servers:
        kill_group(server)


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
