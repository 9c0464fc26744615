"""Where default control sockets go, and how the commands find running managers."""

from __future__ import annotations

import os
import select
import socket
import threading

from gshard.manager import discovery
from gshard.manager.control import ControlServer


def test_candidates_in_order_xdg_home_system_then_temporary(tmp_path):
    environ = {"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/ann", "TMPDIR": "/scratch"}
    assert discovery.candidate_dirs(environ, uid=1000) == [
        "/run/user/1000/gshard", "/home/ann/.gshard", "/scratch/gshard-1000"]
    assert discovery.candidate_dirs({"HOME": "/root", "TMPDIR": "/tmp"}, uid=0) == [
        "/root/.gshard", "/run/gshard", "/tmp/gshard-0"]
    # Unset and empty are the same (a container's user often has no HOME).
    assert discovery.candidate_dirs({"XDG_RUNTIME_DIR": "", "HOME": "", "TMPDIR": "/t"},
                                    uid=7) == ["/t/gshard-7"]


def test_a_directory_another_could_enter_or_a_link_is_never_used(tmp_path):
    open_to_all = tmp_path / "xdg"
    (open_to_all / "gshard").mkdir(parents=True)
    (open_to_all / "gshard").chmod(0o777)
    home = tmp_path / "home"
    home.mkdir()
    environ = {"XDG_RUNTIME_DIR": str(open_to_all), "HOME": str(home)}
    assert discovery.runtime_dir(environ) == str(home / ".gshard")
    assert oct(os.stat(home / ".gshard").st_mode & 0o777) == "0o700"
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(home / ".gshard", linked / "gshard")
    assert not discovery.trusted(str(linked / "gshard"))


def test_each_manager_gets_a_name_of_its_own(tmp_path):
    environ = {"XDG_RUNTIME_DIR": str(tmp_path)}
    first, second = discovery.instance_path(environ), discovery.instance_path(environ)
    assert first != second
    assert os.path.basename(first).startswith(f"{os.getpid()}-") and first.endswith(".ctl")
    # A directory whose names would be too long for a unix socket is passed over.
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    (tmp_path / "home").mkdir()
    elsewhere = discovery.instance_path({"XDG_RUNTIME_DIR": str(deep),
                                         "HOME": str(tmp_path / "home")})
    assert elsewhere.startswith(str(tmp_path / "home" / ".gshard" / f"{os.getpid()}-"))


def test_running_answers_live_managers_once_and_removes_what_nobody_answers(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(discovery, "SYSTEM_RUNTIME", str(tmp_path / "run"))
    environ = {"XDG_RUNTIME_DIR": str(tmp_path), "HOME": "", "TMPDIR": str(tmp_path / "t")}
    live_path = discovery.instance_path(environ)
    directory = os.path.dirname(live_path)
    server = ControlServer.open(live_path,
                                link=lambda target: discovery.link_to(target, environ))
    # A dead manager's socket (bound, nobody listening) and a link to nothing.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(os.path.join(directory, "1-dead.ctl"))
    dead.close()
    os.symlink(str(tmp_path / "gone.ctl"), os.path.join(directory, "2-gone.ctl"))
    with open(os.path.join(directory, "notes.txt"), "w") as handle:
        handle.write("not a socket name: left alone")
    assert len(os.listdir(directory)) == 5
    answered = []
    stop = threading.Event()

    def serve() -> None:
        """The manager's loop, for the control socket only."""
        while not stop.is_set():
            for sock in select.select(server.descriptors(), [], [], 0.05)[0]:
                if sock is server.sock:
                    server.accept()
                elif server.read(sock) == "status":
                    answered.append(sock)
                    server.reply(sock, True, '{"manager": {"pid": 4242}}')

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        found = discovery.running(environ)
    finally:
        stop.set()
        thread.join()
        server.close()
    # The socket and the link to it are one manager.
    assert [(i.pid, i.path) for i in found] == [(4242, min(live_path, server.link))]
    assert len(answered) == 2
    assert sorted(os.listdir(directory)) == ["notes.txt"]
