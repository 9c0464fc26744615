"""Every gshard opens a control socket of its own, and the commands find it without options.

Each test gives its servers and commands a runtime directory of its own
(``XDG_RUNTIME_DIR``, or ``HOME`` and ``TMPDIR`` for the fallbacks), so what
they find is only what the test started.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from tests.support.loadgen import APP, SERVER_ENV, deploy
from tests.support.processes import Server, kill_group, wait_until

WAIT = 15.0


def gshard(*args: str, env: dict[str, str], cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gshard", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env}, cwd=cwd)


def sockets(directory) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


@pytest.fixture
def runtime(tmp_path) -> dict[str, str]:
    """An environment whose default control sockets go to tmp_path/run/gshard."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    return {"XDG_RUNTIME_DIR": str(run)}


@pytest.mark.timeout(90)
def test_commands_find_the_one_gshard_running_or_ask_which(gshard_proc, runtime, tmp_path):
    elsewhere = str(tmp_path)  # not where the servers started
    first = gshard_proc("hello:app", "--shards", "1", env=runtime)
    second = gshard_proc("hello:app", "--shards", "1", env=runtime)
    directory = os.path.join(runtime["XDG_RUNTIME_DIR"], "gshard")
    # One name each, of the user's alone, in a directory of the user's alone.
    names = sockets(directory)
    assert len(names) == 2 and {n.split("-")[0] for n in names} == {str(first.pid),
                                                                     str(second.pid)}
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for name in names:
        mode = os.stat(os.path.join(directory, name)).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600

    for command in (("status",), ("health",), ("reload",), ("scale", "2"), ("stop",),
                    ("recycle", "1"), ("top",)):
        done = gshard(*command, env=runtime, cwd=elsewhere)
        assert done.returncode == 2, (command, done.stderr)
        assert "2 gshards are running; say which with --pid PID, --bind ADDRESS" in done.stderr
        for server in (first, second):
            assert f"{server.pid}  http://127.0.0.1:{server.port}  hello:app" in done.stderr

    done = gshard("status", "--json", "--bind", f"127.0.0.1:{second.port}", env=runtime,
                  cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["manager"]["pid"] == second.pid
    done = gshard("stop", "--pid", str(first.pid), env=runtime, cwd=elsewhere)
    assert (done.returncode, done.stdout) == (0, "Stopped gracefully\n"), done.stderr
    assert first.wait(WAIT) == 0
    # Now one is running: no option needed.
    done = gshard("status", "--json", env=runtime, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["manager"]["pid"] == second.pid
    done = gshard("health", env=runtime, cwd=elsewhere)
    assert (done.returncode, done.stdout) == (0, "ready: generation 1 serves on 1 of 1 shards\n")
    done = gshard("reload", env=runtime, cwd=elsewhere)
    assert (done.returncode, done.stdout) == (
        0, "Generation 2 is serving; generation 1 is draining\n"), done.stderr
    assert sockets(directory) == [n for n in names if n.startswith(f"{second.pid}-")]
    assert second.stop() == 0
    assert sockets(directory) == []
    done = gshard("status", env=runtime, cwd=elsewhere)
    assert done.returncode == 1
    assert done.stderr.startswith("gshard status: no running gshard of this user found")


@pytest.mark.timeout(60)
def test_a_killed_managers_socket_is_ignored_and_removed(gshard_proc, runtime, tmp_path):
    directory = os.path.join(runtime["XDG_RUNTIME_DIR"], "gshard")
    dead = gshard_proc("hello:app", "--shards", "1", env=runtime)
    alive = gshard_proc("hello:app", "--shards", "1", env=runtime)
    os.killpg(dead.pid, signal.SIGKILL)  # no chance to remove its socket
    dead.wait(WAIT)
    assert len(sockets(directory)) == 2
    done = gshard("status", "--json", env=runtime, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["manager"]["pid"] == alive.pid
    assert [n.split("-")[0] for n in sockets(directory)] == [str(alive.pid)]


@pytest.mark.timeout(60)
def test_health_answers_as_readyz_does_through_a_delayed_stop(gshard_proc, runtime, tmp_path):
    server = gshard_proc("hello:app", "--shards", "1", "--shutdown-delay", "60", env=runtime)
    assert gshard("health", "ready", env=runtime, cwd=str(tmp_path)).returncode == 0
    server.signal(signal.SIGTERM)
    server.stderr.wait_for(r"lame duck", WAIT)
    done = gshard("health", env=runtime, cwd=str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith("not ready: stopping; serving")
    done = gshard("health", "live", env=runtime, cwd=str(tmp_path))
    assert (done.returncode, done.stdout) == (0, "alive: stopping\n")
    server.signal(signal.SIGTERM)
    assert server.wait(WAIT) == 0
    done = gshard("health", env=runtime, cwd=str(tmp_path))
    assert done.returncode == 1 and "no running gshard" in done.stderr


@pytest.mark.timeout(60)
def test_without_a_runtime_directory_home_then_a_private_one(gshard_proc, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"XDG_RUNTIME_DIR": "", "HOME": str(home), "TMPDIR": str(temp)}
    server = gshard_proc("hello:app", "--shards", "1", env=env)
    assert [n.split("-")[0] for n in sockets(home / ".gshard")] == [str(server.pid)]
    assert gshard("health", env=env, cwd=str(tmp_path)).returncode == 0
    assert server.stop() == 0
    assert sockets(home / ".gshard") == []
    # HOME unset (as for a container's user): a private directory under the
    # system's runtime directory (/run, root's) or else the temporary one.
    env = {"XDG_RUNTIME_DIR": "", "HOME": "", "TMPDIR": str(temp)}
    server = gshard_proc("hello:app", "--shards", "1", env=env)
    private = "/run/gshard" if os.getuid() == 0 else str(temp / f"gshard-{os.getuid()}")
    (mine,) = [n for n in sockets(private) if n.startswith(f"{server.pid}-")]
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    done = gshard("health", "--pid", str(server.pid), env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert server.stop() == 0
    assert mine not in sockets(private)


@pytest.mark.timeout(60)
def test_a_pidfile_socket_is_linked_where_the_commands_look_and_none_is_opened_on_request(
        gshard_proc, runtime, tmp_path):
    directory = os.path.join(runtime["XDG_RUNTIME_DIR"], "gshard")
    pidfile = str(tmp_path / "g.pid")
    server = gshard_proc("hello:app", "--shards", "1", "--pid", pidfile, env=runtime)
    (link,) = sockets(directory)
    assert os.readlink(os.path.join(directory, link)) == pidfile + ".ctl"
    done = gshard("status", "--json", env=runtime, cwd=str(tmp_path))
    assert json.loads(done.stdout)["manager"]["pid"] == server.pid
    assert server.stop() == 0
    assert sockets(directory) == [] and not os.path.exists(pidfile + ".ctl")
    quiet = gshard_proc("hello:app", "--shards", "1", "--no-control-socket", env=runtime)
    assert sockets(directory) == []
    assert quiet.stop() == 0


@pytest.mark.timeout(90)
def test_an_upgrade_keeps_the_one_default_socket(gshard_proc, runtime, tmp_path):
    directory = os.path.join(runtime["XDG_RUNTIME_DIR"], "gshard")
    deploy(tmp_path, "v1")
    server: Server = gshard_proc(APP, "--shards", "1", cwd=tmp_path,
                                 env={**SERVER_ENV, **runtime})
    (name,) = sockets(directory)
    server.signal(signal.SIGUSR2)
    server.stderr.wait_for(r"Upgrade complete", 30)
    server.wait(WAIT)  # the old manager drains and exits
    # The successor took the name over: the commands still find exactly one.
    assert sockets(directory) == [name]
    done = gshard("status", "--json", env=runtime, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    successor = json.loads(done.stdout)["manager"]["pid"]
    assert successor != server.pid
    done = gshard("stop", env=runtime, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    wait_until(lambda: not sockets(directory), WAIT, "the successor to remove its socket")
    kill_group(server)  # the successor ran in the server's session: nothing may outlive it
