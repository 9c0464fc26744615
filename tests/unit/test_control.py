"""The control socket's manager side, driven the way the manager's loop drives it."""

from __future__ import annotations

import socket

import pytest

from gshard.manager.control import MAX_CLIENTS, MAX_LINE, ControlServer


@pytest.fixture
def control(tmp_path):
    server = ControlServer.open(str(tmp_path / "control.sock"))
    yield server
    server.close()


def connect(control: ControlServer) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(2)
    client.connect(control.path)
    return client


def test_a_command_split_across_writes_is_read_whole(control):
    client = connect(control)
    control.accept()
    (server_side,) = control.clients
    client.sendall(b"rel")
    assert control.read(server_side) is None
    client.sendall(b"oad\n")
    assert control.read(server_side) == "reload"
    control.reply(server_side, True, "done")
    assert client.recv(100) == b"ok done\n"


def test_an_endless_command_is_refused(control):
    client = connect(control)
    control.accept()
    (server_side,) = control.clients
    client.sendall(b"x" * (MAX_LINE + 10))
    while server_side in control.clients:
        assert control.read(server_side) is None
    assert client.recv(100) == b"failed command too long\n"


def test_clients_are_capped_and_the_rest_wait_in_the_backlog(control):
    clients = []
    for _ in range(MAX_CLIENTS + 5):
        clients.append(connect(control))
        if control.sock in control.descriptors():
            control.accept()
    assert len(control.clients) == MAX_CLIENTS
    assert control.sock not in control.descriptors()
    # One client leaves: the manager reads its end and listens again.
    clients[0].close()
    leaving = next(iter(control.clients))
    assert control.read(leaving) is None
    assert control.sock in control.descriptors()
    for client in clients[1:]:
        client.close()
