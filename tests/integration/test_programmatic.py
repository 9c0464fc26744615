"""``gshard.run(app, **settings)``: a server started from Python, checked as the command is.

Each server runs in a child Python (``python -c``) in a session of its own,
so a server that failed to stop cannot outlive the test, and so a setting
that failed to be refused could not start a server inside the test process.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from tests.support.paths import FIXTURE_APPS
from tests.support.processes import Server, kill_group, launch_command
from tests.support.rawhttp import fetch


@pytest.fixture
def run_from_python(tmp_path):
    """Factory: ``run_from_python("shards=2", cwd=...)`` -> a ``Server`` running
    ``gshard.run("hello:app", <those settings>)``, not waited for."""
    servers: list[Server] = []

    def start(settings: str, cwd=None) -> Server:
        code = ("import sys, gshard\n"
                f"sys.exit(gshard.run('hello:app', {settings}))\n")
        server = launch_command([sys.executable, "-c", code], cwd=cwd or tmp_path,
                                env={"PYTHONPATH": _fixture_path()})
        servers.append(server)
        return server

    yield start
    for server in servers:
        kill_group(server)


def _fixture_path() -> str:
    return os.pathsep.join(filter(None, [str(FIXTURE_APPS), os.environ.get("PYTHONPATH")]))


def test_run_serves_and_stops_as_the_command_does(run_from_python):
    server = run_from_python("bind=['127.0.0.1:0'], shards=2, timeout=10").wait_ready()
    assert server.stderr.count(r"Ready: 2 shards serving") == 1
    assert fetch(server.port, "/").status == 200
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


@pytest.mark.parametrize(("settings", "message"), [
    ("shards=0", "--shards: must be between 1 and 1024"),
    ("wrokers=2", "unknown setting 'wrokers'"),
    ("bind='127.0.0.1:99999'", "invalid port '99999'"),
])
def test_a_bad_setting_raises_config_error_before_anything_binds(run_from_python, settings,
                                                                 message):
    server = run_from_python(settings)
    assert server.wait() == 1  # an uncaught exception in the child Python
    server.stderr.wait_for(r"gshard\.errors\.ConfigError: .*" + message.replace("(", r"\("),
                           timeout=5)
    assert "Listening" not in server.stderr.text


def test_no_config_file_is_read_unless_asked(run_from_python, tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 3\n")
    implicit = run_from_python("bind=['127.0.0.1:0'], shards=1").wait_ready()
    assert implicit.stderr.count(r"Ready: 1 shard serving") == 1
    explicit = run_from_python("bind=['127.0.0.1:0'], config='gunicorn.conf.py'").wait_ready()
    assert explicit.stderr.count(r"Ready: 3 shards serving") == 1
    # What run() is given wins over the file, as the command line does.
    both = run_from_python("bind=['127.0.0.1:0'], config='gunicorn.conf.py', shards=2")
    assert both.wait_ready().stderr.count(r"Ready: 2 shards serving") == 1


def test_an_upgrade_in_place_is_refused_and_the_server_keeps_serving(run_from_python):
    server = run_from_python("bind=['127.0.0.1:0'], shards=1").wait_ready()
    server.signal(signal.SIGUSR2)
    server.stderr.wait_for(
        r"Upgrade failed: cannot start a new manager: started by gshard\.run\(\)", timeout=5)
    assert fetch(server.port, "/").status == 200


def test_a_reload_reads_the_config_file_again_under_runs_own_settings(run_from_python, tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 3\ntimeout = 20\n\n\ndef on_reload(server):\n"
                    "    server.log.info('on_reload: timeout %s', server.cfg.timeout)\n")
    server = run_from_python("bind=['127.0.0.1:0'], config='gunicorn.conf.py', shards=1")
    assert server.wait_ready().stderr.count(r"Ready: 1 shard serving") == 1
    conf.write_text(conf.read_text().replace("timeout = 20", "timeout = 40"))
    server.signal(signal.SIGHUP)
    server.stderr.wait_for(r"on_reload: timeout 40\.0", timeout=10)
    # run()'s own setting still wins over the file's workers = 3.
    server.stderr.wait_for(r"Generation 2 is serving; generation 1 is draining", timeout=20)
    assert fetch(server.port, "/").status == 200
