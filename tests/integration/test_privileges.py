"""--user/--group: a privileged port bound as root, served by shards running as nobody."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import subprocess
import sys

import pytest
import requests

from gshard.errors import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def _python_usable_by_nobody() -> bool:
    """Whether this Python can run as nobody (not if it lives under a private /root)."""
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import pprint, json, gevent"],
            user="nobody", group=pwd.getpwnam("nobody").pw_gid, capture_output=True,
            timeout=30,
        )
    except PermissionError:
        return False  # the interpreter itself cannot be executed as nobody
    return probe.returncode == 0


needs_python_for_nobody = pytest.mark.skipif(
    os.geteuid() == 0 and not _python_usable_by_nobody(),
    reason=f"this Python ({sys.base_prefix}) is not readable by the user nobody",
)


def _free_privileged_port() -> int:
    for port in range(900, 1024):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port below 1024 on 127.0.0.1")


def _ids(pid: int) -> tuple[int, int]:
    """(effective uid, effective gid) of a process."""
    with open(f"/proc/{pid}/status") as handle:
        fields = dict(line.split(":", 1) for line in handle if ":" in line)
    return int(fields["Uid"].split()[1]), int(fields["Gid"].split()[1])


@needs_python_for_nobody
def test_port_80_style_bind_as_root_then_serve_as_nobody(gshard_proc):
    nobody = pwd.getpwnam("nobody")
    port = _free_privileged_port()
    server = gshard_proc("pid_app:app", "--bind", f"127.0.0.1:{port}", "--shards", "2",
                         "--user", "nobody")
    response = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert response.status_code == 200
    shards = server.shard_pids()
    assert int(response.text) in shards
    assert {_ids(pid) for pid in shards} == {(nobody.pw_uid, nobody.pw_gid)}
    assert _ids(server.pid) == (0, 0)  # the manager keeps root to own the listeners
    assert server.stop() == 0


@needs_python_for_nobody
def test_unix_socket_is_given_to_the_shards_user_and_umask_applies(gshard_proc, tmp_path):
    nobody = pwd.getpwnam("nobody")
    tmp_path.chmod(0o755)
    path = tmp_path / "g.sock"
    server = gshard_proc("hello:app", "--bind", f"unix:{path}", "--shards", "1",
                         "--user", "nobody", "--umask", "0o077", ready=False)
    server.stderr.wait_for(r"Ready: 1 shard serving", 20)
    info = path.stat()
    assert (info.st_uid, info.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert info.st_mode & 0o077 == 0
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(path))
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert client.recv(100).startswith(b"HTTP/1.1 200 ")


def test_an_unknown_user_is_a_usage_error_before_binding(gshard_proc):
    server = gshard_proc("hello:app", "--user", "no-such-user-here", ready=False)
    assert server.wait(15) == 2
    assert "no such user 'no-such-user-here'" in server.stderr.text
    assert "Listening at" not in server.stderr.text


def test_shards_switch_group_while_the_manager_keeps_its_own(gshard_proc):
    nogroup = grp.getgrnam("nogroup").gr_gid
    server = gshard_proc("pid_app:app", "--shards", "2", "--group", "nogroup")
    response = requests.get(server.url + "/", timeout=5)
    assert response.status_code == 200
    assert {_ids(pid)[1] for pid in server.shard_pids()} == {nogroup}
    assert _ids(server.pid)[1] == os.getegid()


@pytest.mark.timeout(90)
def test_check_config_imports_as_the_shards_user_as_the_start_does(gshard_proc, tmp_path):
    """The application is imported as --user, never as root (--preload's template
    included, where gunicorn imports as root): --check-config imports it the same
    way, so it fails where the start fails instead of passing as root."""
    secret = tmp_path / "secret"
    secret.write_text("root's alone")
    secret.chmod(0o600)
    (tmp_path / "secret_app.py").write_text(
        f"KEY = open({str(secret)!r}).read()  # at import, as a settings module might\n\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [KEY.encode()]\n")

    def check(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gshard", "secret_app:app", "--preload",
                               "--check-config", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)

    assert check().returncode == 0  # as root it imports
    as_nobody = check("--user", "nobody")
    assert as_nobody.returncode == 1, as_nobody.stdout + as_nobody.stderr
    assert "the application failed to load" in as_nobody.stderr
    started = gshard_proc("secret_app:app", "--preload", "--user", "nobody", cwd=tmp_path,
                          ready=False)
    assert started.wait(40) in (EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR), started.stderr.text

