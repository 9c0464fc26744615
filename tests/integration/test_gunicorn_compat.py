"""A gunicorn deployment started unchanged: its config file, its environment, its flags."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from tests.support.paths import FIXTURE_APPS
from tests.support.processes import START_TIMEOUT, Server, kill_group, launch

# What a folder holding a gunicorn deployment looks like: the app imports a
# helper from --pythonpath, reads a variable from raw_env, and borrows
# gunicorn's error logger, as Flask apps do.
APP = """
    import logging
    import os

    import greeting  # from pythonpath

    logger = logging.getLogger("gunicorn.error")


    def app(environ, start_response):
        logger.warning("served by pid %d", os.getpid())
        print("printed by the application", flush=True)
        body = f"{greeting.WORD} {os.environ['DEPLOY_ENV']}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
"""

GUNICORN_CONF = """
    import multiprocessing

    bind = "127.0.0.1:0"
    workers = 4
    worker_class = "sync"
    threads = 8
    raw_env = ["DEPLOY_ENV=staging"]
    pythonpath = "lib"
    keepalive = 5


    def on_starting(server):
        pass
"""


@pytest.fixture
def deployment(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "greeting.py").write_text("WORD = 'hello'\n")
    (tmp_path / "deployed.py").write_text(textwrap.dedent(APP))
    (tmp_path / "gunicorn.conf.py").write_text(textwrap.dedent(GUNICORN_CONF))
    return tmp_path


@pytest.fixture
def started():
    servers: list[Server] = []

    def start(*args: str, **kwargs) -> Server:
        server = launch(*args, **kwargs)
        servers.append(server)
        match = server.stderr.wait_for(r"Listening at: http://[^ ]*:(\d+)", START_TIMEOUT)
        server.port = int(match.group(1))
        server.stderr.wait_for(r"Ready: \d+ shards? serving", START_TIMEOUT)
        return server

    yield start
    for server in servers:
        kill_group(server)


def test_a_gunicorn_deployment_starts_unchanged(deployment, started):
    """./gunicorn.conf.py without -c, GUNICORN_CMD_ARGS under GSHARD_CMD_ARGS, each warning once."""
    server = started(
        "deployed:app", cwd=deployment,
        env={"GUNICORN_CMD_ARGS": "--workers 3 --keep-alive 7",
             "GSHARD_CMD_ARGS": "--workers 2", "PYTHONPATH": ""},
    )
    assert server.stderr.count(r"Ready: 2 shards serving") == 1
    response = requests.get(server.url, timeout=5)
    assert response.text == "hello staging"
    # The application's use of gunicorn.error reaches gshard's error log.
    server.stderr.wait_for(r"\[WARNING\] served by pid \d+", 5)
    assert server.stderr.count(r"Ignoring threads = 8: greenlets do that job") == 1
    assert server.stderr.count(r"worker_class 'sync': shards run gevent") == 1
    assert server.stop() == 0


def test_check_config_imports_the_app_in_a_child(deployment):
    ok = subprocess.run([sys.executable, "-m", "gshard", "--check-config", "deployed:app"],
                        cwd=deployment, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert "deployed:app imports" in ok.stdout
    # The file's warnings are printed; the manager forked no shard and bound nothing.
    assert "Ignoring threads = 8" in ok.stderr
    assert "Listening at" not in ok.stderr
    broken = subprocess.run(
        [sys.executable, "-m", "gshard", "--check-config", "broken_import:app"],
        cwd=FIXTURE_APPS, capture_output=True, text=True, timeout=30)
    assert broken.returncode == 1
    assert "the application failed to load" in broken.stderr
    bad_config = subprocess.run(
        [sys.executable, "-m", "gshard", "--check-config", "hello:app", "--threads", "x",
         "--workers", "0"], cwd=FIXTURE_APPS, capture_output=True, text=True, timeout=30)
    assert bad_config.returncode == 1
    assert bad_config.stderr.startswith("gshard: error: --shards: must be between 1 and")


def test_print_config_shows_the_effective_settings(deployment):
    done = subprocess.run(
        [sys.executable, "-m", "gshard", "deployed:app", "--print-config", "-w", "6"],
        cwd=deployment, capture_output=True, text=True, timeout=30,
        env={"PATH": "", "GUNICORN_CMD_ARGS": "--keep-alive 9"})
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" = ", 1) for line in done.stdout.splitlines())
    settings = {name.strip(): value for name, value in lines.items()}
    assert settings["shards"] == "6"
    assert settings["keepalive"] == "9.0"
    assert settings["raw_env"] == "['DEPLOY_ENV=staging']"
    assert settings["on_starting"] == "<on_starting()>"
    assert settings["config"] == "gunicorn.conf.py"


def wait_in_file(path, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
    """The first match of ``pattern`` in the file at ``path``, once it is written there."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = regex.search(path.read_text()) if path.exists() else None
        if match:
            return match
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in {path} within {timeout}s")


def test_capture_output_sends_prints_to_the_error_log(deployment):
    error_log = deployment / "error.log"
    server = launch("deployed:app", "--capture-output", "--error-logfile", str(error_log),
                    "-w", "1", cwd=deployment)
    try:
        port = int(wait_in_file(error_log, r"Listening at: http://[^ ]*:(\d+)").group(1))
        wait_in_file(error_log, r"Ready: 1 shard serving")
        assert requests.get(f"http://127.0.0.1:{port}", timeout=5).text == "hello staging"
        wait_in_file(error_log, r"(?m)^printed by the application$")
        # Rotated: after USR1 the prints follow the error log into the new file.
        error_log.rename(deployment / "error.log.1")
        server.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not (error_log.exists() and "printed by" in error_log.read_text()):
            assert time.monotonic() < deadline, "prints never reached the reopened file"
            requests.get(f"http://127.0.0.1:{port}", timeout=5)
            time.sleep(0.05)
    finally:
        kill_group(server)


def test_refused_setting_stops_the_start_with_one_line(deployment):
    config = "strip_header_spaces = True\nbind = '127.0.0.1:0'\n"
    (deployment / "gunicorn.conf.py").write_text(config)
    done = subprocess.run([sys.executable, "-m", "gshard", "deployed:app"], cwd=deployment,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("gshard: error: --strip-header-spaces: it would weaken")
    assert done.stderr.count("\n") == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_daemon_detaches_and_serves(deployment):
    error_log, pidfile = deployment / "error.log", deployment / "gshard.pid"
    starter = subprocess.run(
        [sys.executable, "-m", "gshard", "deployed:app", "-D", "--pid", str(pidfile),
         "--error-logfile", str(error_log), "-w", "1"],
        cwd=deployment, capture_output=True, text=True, timeout=30)
    assert starter.returncode == 0, starter.stderr
    pid = int(wait_in_file(pidfile, r"(\d+)\n").group(1))
    try:
        # A session of its own, which it does not lead: it can never get a terminal.
        assert os.getsid(pid) not in (os.getsid(0), pid)
        port = int(wait_in_file(error_log, r"Listening at: http://[^ ]*:(\d+)").group(1))
        wait_in_file(error_log, r"Ready: 1 shard serving")
        assert requests.get(f"http://127.0.0.1:{port}", timeout=5).text == "hello staging"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                for child in children.read().split():
                    os.kill(int(child), signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)


def test_syslog_receives_the_error_and_access_logs(deployment, started):
    path = str(deployment / "syslog.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(10)
    try:
        server = started("deployed:app", "--log-syslog", "--log-syslog-to",
                         f"unix://{path}#dgram", "--log-syslog-prefix", "shop",
                         "--log-syslog-facility", "local3", "-w", "1", cwd=deployment)
        requests.get(server.url, timeout=5)
        seen = []
        while not any("gunicorn.shop.access:" in line for line in seen):
            seen.append(receiver.recv(4096).decode())
        # <PRI> = facility local3 (19) * 8 + severity; info is 6.
        assert any(line.startswith("<158>gunicorn.shop.error: [") and "Listening at" in line
                   for line in seen), seen
        assert any('"GET / HTTP/1.1" 200' in line for line in seen), seen
    finally:
        receiver.close()
