"""Config files in the shapes real projects write them, started as a user starts gshard.

Each test writes a project folder (an application, its ``gunicorn.conf.py``,
sometimes a module beside it) and runs the ``gshard`` console script there,
as a deployment does: hooks, imports beside the file, helper variables and
functions, ``from __future__ import annotations``, a ``logconfig_dict`` with
a JSON formatter, a misspelt setting. Then HUP reads the file again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from gshard.cpus import usable_cpus
from tests.support.loadgen import APP, SERVER_ENV, Load, deploy, fresh_request
from tests.support.processes import (
    GSHARD_SCRIPT,
    START_TIMEOUT,
    Server,
    kill_group,
    launch_command,
    launch_script,
    listening_sockets,
    wait_until,
)
from tests.support.rawhttp import Conn


@pytest.fixture
def project(tmp_path) -> Path:
    """A deployed application (``deployed_app:app``, answering "VERSION PID")."""
    deploy(tmp_path, "v1")
    return tmp_path


@pytest.fixture
def start():
    """Factory: ``start(project, *args)`` -> the console script running there, ready, on an
    ephemeral port (``bind=False``: where the config file says)."""
    servers: list[Server] = []

    def run(folder: Path, *args: str, ready: bool = True, bind: bool = True) -> Server:
        where = ("--bind", "127.0.0.1:0") if bind else ()
        server = launch_script(APP, *where, *args, cwd=folder, env=SERVER_ENV)
        servers.append(server)
        return server.wait_ready() if ready else server

    yield run
    for server in servers:
        kill_group(server)


def write(path: Path, text: str) -> Path:
    """Write a file as a deploy does: a new file renamed into place."""
    temp = path.with_name(path.name + ".new")
    temp.write_text(textwrap.dedent(text))
    os.replace(temp, path)
    return path


def gshard(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script, run to its end (``--check-config``, ``reload``, a failing start)."""
    return subprocess.run([str(GSHARD_SCRIPT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **SERVER_ENV})


# --- 1. HUP reads the configuration again ----------------------------------------------

RELOADED_CONF = """\
    from __future__ import annotations

    import multiprocessing
    import os

    release = "{release}"
    pidfile = "{pidfile}"
    bind = "{bind}"


    def shard_count() -> int:
        return {workers}


    workers = shard_count()
    graceful_timeout = 5
    raw_env = [f"RELEASE={{release}}", "DEPLOY_ENV=staging"]


    def on_reload(server):
        server.log.info("on_reload: release %s, %d workers", release, server.cfg.workers)


    def post_worker_init(worker):  # in the shard: the environment raw_env made
        worker.log.info("post_worker_init: RELEASE=%s in generation %s",
                        os.environ.get("RELEASE"), worker.generation)
"""


def reload_conf(folder: Path, release: str, workers: int, bind: str = "127.0.0.1:0",
                pidfile: str = "gshard.pid") -> None:
    write(folder / "gunicorn.conf.py", RELOADED_CONF.format(
        release=release, workers=workers, bind=bind, pidfile=pidfile))


def booted(server: Server, release: str, generation: int) -> int:
    """How many shards of ``generation`` started with ``RELEASE=release`` (raw_env)."""
    return server.stderr.count(rf"post_worker_init: RELEASE={release} in generation "
                               rf"{generation}$")


@pytest.mark.timeout(120)
def test_hup_reads_the_config_file_again_and_the_new_generation_runs_with_it(project, start):
    reload_conf(project, "r1", workers=2)
    server = start(project, bind=False)
    assert booted(server, "r1", 1) == 2
    pidfile = project / "gshard.pid"
    with Load(server.port, fresh=6, keepalive=3, slow=2, max_seconds=60) as load:
        # More shards, a new release in raw_env and hooks; bind and pidfile edited too.
        reload_conf(project, "r2", workers=3, bind="127.0.0.1:1", pidfile="moved.pid")
        done = gshard("reload", "--pid", str(pidfile), cwd=project)
        assert done.returncode == 0, done.stderr
        assert done.stdout == ("Generation 2 is serving (3 shards, was 2); generation 1 is "
                               "draining\n")
        assert booted(server, "r2", 2) == 3
        assert len(listening_sockets(server.port)) == 3
        server.stderr.wait_for(r"on_reload: release r2, 3 workers", 5)
        kept = [line for line in server.stderr.lines if "Reload keeps" in line]
        assert len(kept) == 1 and re.search(r"for bind \(.*\); pidfile \(", kept[0]), kept
        assert not (project / "moved.pid").exists()

        # Fewer: the removed slots are retired, their listeners closed once empty.
        reload_conf(project, "r3", workers=1)
        server.signal(signal.SIGHUP)
        server.stderr.wait_for(r"Generation 3 is serving \(1 shard, was 3\)", 20)
        wait_until(lambda: len(listening_sockets(server.port)) == 1, 15,
                   "the listeners of the removed slots closed")
        assert booted(server, "r3", 3) == 1
        wait_until(lambda: len(server.shard_pids()) == 1, 15, "the other shards gone")

        # A file that does not load leaves the serving generation alone.
        serving = server.shard_pids()
        write(project / "gunicorn.conf.py", "workers = 2\nbind = \n")
        done = gshard("reload", "--pid", str(pidfile), cwd=project)
        assert done.returncode == 1
        assert done.stderr.startswith("Reload failed, generation 3 keeps serving: the "
                                      "configuration did not load: --config: "), done.stderr
        assert "SyntaxError" in done.stderr
        assert server.shard_pids() == serving
        time.sleep(0.5)
    load.assert_no_failure()
    assert server.stop() == 0


@pytest.mark.timeout(60)
def test_reload_watches_the_config_file_and_reads_it_again(project, start):
    conf = """\
        import os

        reload = True
        workers = 1
        raw_env = ["RELEASE={release}"]


        def post_worker_init(worker):
            worker.log.info("post_worker_init: RELEASE=%s in generation %s",
                            os.environ.get("RELEASE"), worker.generation)
    """
    write(project / "gunicorn.conf.py", conf.format(release="w1"))
    server = start(project)
    assert booted(server, "w1", 1) == 1
    time.sleep(1.1)  # the watcher compares modification times once a second
    write(project / "gunicorn.conf.py", conf.format(release="w2"))
    server.stderr.wait_for(r"Reloading: .*gunicorn\.conf\.py changed", 10)
    server.stderr.wait_for(r"Generation 2 is serving", 20)
    assert booted(server, "w2", 2) == 1


# --- 2. A config file imports modules beside it ------------------------------------------

BESIDE_CONF = """\
    try:
        from deploy_settings import TIMEOUT, WORKERS
    except ImportError:  # as real files guard it: a silent fallback if the import fails
        TIMEOUT, WORKERS = 60, 1

    from deploy_hooks import post_worker_init  # a hook kept in a module beside the file

    timeout = TIMEOUT
    workers = WORKERS
"""


def test_a_config_file_imports_modules_beside_it(project, start):
    (project / "deploy_settings.py").write_text("TIMEOUT = 300\nWORKERS = 2\n")
    (project / "deploy_hooks.py").write_text(
        "def post_worker_init(worker):\n"
        "    worker.log.info('post_worker_init from deploy_hooks: timeout %s', "
        "worker.cfg.timeout)\n")
    write(project / "gunicorn.conf.py", BESIDE_CONF)
    printed = gshard(APP, "--print-config", cwd=project)
    assert printed.returncode == 0, printed.stderr
    assert re.search(r"(?m)^timeout +?= 300\.0$", printed.stdout), printed.stdout
    server = start(project)
    assert server.stderr.count(r"Ready: 2 shards serving") == 1
    server.stderr.wait_for(r"post_worker_init from deploy_hooks: timeout 300\.0", 5)


# --- 3. JSON access logs from a logconfig_dict written for gunicorn ---------------------

JSON_LOGGING_CONF = """\
    import json
    import logging

    workers = 1


    class JsonFormatter(logging.Formatter):
        \"\"\"One JSON object per line; access records read gunicorn's atoms.\"\"\"

        def format(self, record):
            entry = {"logger": record.name, "level": record.levelname}
            if record.name == "gunicorn.access":
                atoms = record.args
                entry.update(remote_ip=atoms["h"], method=atoms["m"], path=atoms["U"],
                             query=atoms["q"], status=atoms["s"], bytes=atoms["B"],
                             duration_us=atoms["D"], agent=atoms["{user-agent}i"],
                             request_id=atoms.get("{x-request-id}i"), line=record.getMessage())
            else:
                entry["message"] = record.getMessage()
            return json.dumps(entry)


    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": JsonFormatter},
            "plain": {"format": "[%(levelname)s] %(message)s"},
        },
        "handlers": {
            "access": {"class": "logging.StreamHandler", "formatter": "json",
                       "stream": "ext://sys.stdout"},
            "error": {"class": "logging.StreamHandler", "formatter": "plain",
                      "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "gunicorn.error": {"handlers": ["error"], "level": "INFO", "propagate": False},
        },
        # Laid over gunicorn's defaults, whose root names their "console" handler,
        # which "handlers" above replaces: without a root of its own gunicorn
        # (and gshard) refuses the config.
        "root": {"handlers": ["error"]},
    }
"""


def test_json_access_logs_read_gunicorns_atoms_from_the_record(project, start):
    write(project / "gunicorn.conf.py", JSON_LOGGING_CONF)
    assert gshard(APP, "--check-config", cwd=project).returncode == 0
    server = start(project)
    with Conn.tcp(server.port) as conn:
        conn.send(b"GET /orders?page=2 HTTP/1.1\r\nHost: shop\r\nUser-Agent: probe/2\r\n"
                  b"X-Request-Id: req-41\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200
    line = server.stdout.wait_for(r"^\{", 5).string
    entry = json.loads(line)
    assert entry == {
        "logger": "gunicorn.access", "level": "INFO", "remote_ip": "127.0.0.1",
        "method": "GET", "path": "/orders", "query": "page=2", "status": "200",
        "bytes": len(response.body), "duration_us": entry["duration_us"], "agent": "probe/2",
        "request_id": "req-41",
        "line": entry["line"]}
    assert isinstance(entry["duration_us"], int)
    assert re.fullmatch(r'127\.0\.0\.1 - - \[.+\] "GET /orders\?page=2 HTTP/1\.1" 200 \d+ "-" '
                        r'"probe/2"', entry["line"])
    assert "Logging error" not in server.stderr.text


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("broken", "named"), [
    (JSON_LOGGING_CONF.replace('{"()": JsonFormatter}',
                               '{"()": "json_logging_not_installed.JsonFormatter"}'),
     "json_logging_not_installed"),
    # gunicorn refuses it too: its default root names the "console" handler
    # that this "handlers" replaces.
    (JSON_LOGGING_CONF.replace('"root": {"handlers": ["error"]},', ""),
     "Unable to configure root logger: ValueError: Unable to add handler 'console'"),
], ids=["formatter-not-installed", "no-console-for-the-default-root"])
def test_check_config_fails_where_the_logging_config_would_fail_the_start(project, broken,
                                                                          named):
    write(project / "gunicorn.conf.py", broken)
    checked = gshard(APP, "--check-config", cwd=project)
    assert checked.returncode == 1
    assert checked.stderr.startswith("gshard: error: logging config: "), checked.stderr
    assert named in checked.stderr and checked.stderr.count("\n") == 1
    started = gshard(APP, cwd=project)
    assert started.returncode == 2
    assert started.stderr.startswith("gshard: error: logging config: ")
    assert named in started.stderr and started.stderr.count("\n") == 1


# A real config's shape: only gunicorn's two handlers redefined, the rest (the two
# loggers, the root) from gunicorn's defaults, which it is laid over.
JSON_HANDLERS_CONF = """\
    workers = 1
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"format": '{"lvl": "%(levelname)s", "msg": "%(message)s"}'}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json"},
        },
    }
"""
JSON_LINE = r'^\{"lvl": "[A-Z]+", "msg": ".*"\}$'
PROBE_LINE = r'"msg": "127\.0\.0\.1 - - \[.+\] "GET /probe HTTP/1\.1" 200 '


def logged_by(server: Server, port: int) -> Server:
    """One request to ``server`` on ``port``, then a graceful stop: its whole output."""
    def answered() -> bool:
        try:
            with Conn.tcp(port) as conn:
                conn.send(b"GET /probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return conn.read_response().status == 200
        except OSError:
            return False  # gunicorn's worker may not have booted yet

    wait_until(answered, 20, "an answer")
    wait_until(lambda: server.stderr.count(PROBE_LINE), 5, "the access line")
    assert server.stop() == 0
    wait_until(lambda: server.stderr.closed and server.stdout.closed, 5, "the output's end")
    return server


@pytest.mark.timeout(90)
def test_a_config_redefining_only_gunicorns_handlers_logs_as_gunicorn_logs_it(project, start):
    """Error and access lines in the config's JSON format, each twice (the logger's handler,
    then the root's: gunicorn's defaults propagate), nothing on stdout: as gunicorn
    itself logs with the same file, run beside it."""
    write(project / "gunicorn.conf.py", JSON_HANDLERS_CONF)
    gunicorn = launch_command(
        [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "--no-control-socket", APP],
        cwd=project, env=SERVER_ENV)
    try:
        port = int(gunicorn.stderr.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)",
                                            START_TIMEOUT).group(1))
        theirs = logged_by(gunicorn, port)
    finally:
        kill_group(gunicorn)
    server = start(project)
    ours = logged_by(server, server.port)
    for name, run in (("gunicorn", theirs), ("gshard", ours)):
        assert run.stdout.lines == [], name
        assert run.stderr.lines, name
        for line in run.stderr.lines:
            assert re.match(JSON_LINE, line), f"{name}: {line}"
        assert run.stderr.count(PROBE_LINE) == 2, (name, run.stderr.text)
    # gshard's own messages, doubled as gunicorn's are.
    assert ours.stderr.count(r'^\{"lvl": "INFO", "msg": "Ready: 1 shard serving"\}$') == 2


# --- 4. A config file's own names stay quiet ---------------------------------------------

HELPERS_CONF = """\
    from __future__ import annotations

    import multiprocessing
    import os
    from dataclasses import dataclass

    cores = multiprocessing.cpu_count()
    workers_per_core_str = os.getenv("WORKERS_PER_CORE", "1")
    use_loglevel = os.getenv("LOG_LEVEL", "info")
    timeout_str = os.getenv("TIMEOUT", "120")
    env = "staging"


    @dataclass
    class Pool:
        size: int = 2


    def shard_count(pool: Pool) -> int:
        return pool.size


    workers = shard_count(Pool())
    loglevel = use_loglevel
    timeout = int(timeout_str)
    max_requests = 1000
    max_request_jitter = 50  # misspelt: gunicorn's is max_requests_jitter
    threads = 4  # a gunicorn setting gshard has no use for
"""


def test_a_config_files_own_names_stay_quiet_and_a_misspelt_setting_is_named(project, start):
    write(project / "gunicorn.conf.py", HELPERS_CONF)
    server = start(project)
    lines = server.stderr.lines
    warnings = [line for line in lines if "[WARNING]" in line]
    assert len(warnings) == 2, warnings
    assert warnings[0].endswith("Ignoring threads = 4: greenlets do that job: each shard "
                                "serves up to --worker-connections requests at once")
    assert warnings[1].endswith("Ignoring 'max_request_jitter' in gunicorn.conf.py: not a "
                                "setting; did you mean max_requests_jitter?")
    # Everything went through the error log's format; nothing raw on stderr.
    assert all(re.match(r"\[\d{4}-\d\d-\d\d [\d:]+ [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ", line)
               for line in lines), lines
    for name in ("annotations", "cores", "use_loglevel", "timeout_str", "env", "Pool"):
        assert name not in server.stderr.text


# --- 5. Bad paths fail before anything binds --------------------------------------------


@pytest.mark.parametrize(("setting", "refusal"), [
    ('pidfile = "run/gshard.pid"', "--pid: cannot create 'run/gshard.pid': no such directory"),
    ('chdir = "/srv/app-not-deployed"', "--chdir: no such directory '/srv/app-not-deployed'"),
    ('worker_tmp_dir = "/dev/shm/not-there"',
     "--worker-tmp-dir: no such directory '/dev/shm/not-there'"),
    ('errorlog = "logs/error.log"',
     "--error-logfile: cannot create 'logs/error.log': no such directory"),
    ('accesslog = "/"', "--access-logfile: '/' is a directory"),
])
def test_a_bad_path_fails_before_anything_binds_with_one_line(project, setting, refusal):
    write(project / "gunicorn.conf.py", f"""\
        bind = "127.0.0.1:0"
        workers = 1
        {setting}


        def on_starting(server):
            server.log.info("on_starting ran")
    """)
    done = gshard(APP, cwd=project)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"gshard: error: {refusal}"), done.stderr
    assert done.stderr.count("\n") == 1
    checked = gshard(APP, "--check-config", cwd=project)
    assert (checked.returncode, checked.stderr) == (1, done.stderr)


def test_check_config_tells_the_applications_missing_data_from_a_bad_setting(project):
    (project / "cached_app.py").write_text(textwrap.dedent("""\
        import os

        CACHE = os.listdir("data/cache")  # opened at import


        def app(environ, start_response):
            start_response("200 OK", [])
            return [b""]
    """))
    write(project / "gunicorn.conf.py", 'workers = 1\nwsgi_app = "cached_app:app"\n')
    checked = subprocess.run([str(GSHARD_SCRIPT), "--check-config"], cwd=project,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1
    assert checked.stderr.startswith("gshard: error: the configuration is valid, but the "
                                     "application failed to load:"), checked.stderr
    assert "FileNotFoundError" in checked.stderr and "data/cache" in checked.stderr


# --- 7. A HUP while the first generation boots is applied once it is up -------------------


@pytest.mark.timeout(60)
def test_hups_while_the_first_generation_boots_make_one_reload_once_it_serves(project, start):
    deploy(project, "v1", import_seconds=2.0)  # a slow import: time to ask while it boots
    write(project / "gunicorn.conf.py", """\
        pidfile = "gshard.pid"
        workers = 1


        def on_reload(server):
            server.log.info("on_reload: %d workers", server.cfg.workers)
    """)
    server = start(project, ready=False)
    server.stderr.wait_for(r"Booting 1 shard", START_TIMEOUT)
    waiter: dict = {}
    asked = threading.Thread(target=lambda: waiter.update(
        done=gshard("reload", "--pid", str(project / "gshard.pid"), cwd=project)))
    asked.start()
    server.signal(signal.SIGHUP)
    server.signal(signal.SIGHUP)
    # Edited after the HUPs: the reload reads the file when it starts, not when asked.
    write(project / "gunicorn.conf.py",
          (project / "gunicorn.conf.py").read_text().replace("workers = 1", "workers = 2"))
    server.wait_ready()
    assert server.stderr.count(r"Ready: 1 shard serving") == 1
    server.stderr.wait_for(r"Generation 2 is serving \(2 shards, was 1\)", START_TIMEOUT)
    asked.join(30)
    assert waiter["done"].returncode == 0, waiter["done"].stderr
    assert waiter["done"].stdout.startswith("Generation 2 is serving")
    time.sleep(1.0)
    assert server.stderr.count(r"Reloading: booting generation") == 1
    assert server.stderr.count(r"on_reload: 2 workers") == 1
    assert "Reload refused" not in server.stderr.text
    assert fresh_request(server.port, "/").ok


# --- 8. Defaults that differ say so once ---------------------------------------------------


def test_defaults_that_differ_from_gunicorns_are_said_once(project, start, monkeypatch):
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)  # the servers inherit this environment
    write(project / "gunicorn.conf.py", """\
        import os

        forwarded_allow_ips = "*"  # behind a load balancer, as many deployments say
        accesslog = "-"


        def post_worker_init(worker):
            worker.log.info("post_worker_init: a scheduler would start here")
    """)
    server = start(project)
    cpus = usable_cpus()
    per_cpu = server.stderr.wait_for(r"\[WARNING\] Starting one shard per CPU", 5).string
    assert f"({cpus})" in per_cpu and "workers = 1" in per_cpu
    assert server.stderr.count(r"\[WARNING\] forwarded_allow_ips = '\*' on 127\.0\.0\.1:0: "
                               r"any client that connects directly chooses its REMOTE_ADDR"
                               ) == 1
    server.signal(signal.SIGHUP)  # a reload reads the same file: nothing new to say
    server.stderr.wait_for(r"Generation 2 is serving", 20)
    assert server.stderr.count(r"Starting one shard per CPU") == 1
    assert server.stderr.count(r"forwarded_allow_ips = '\*'") == 1

    one = project / "one"
    one.mkdir()
    deploy(one, "v1")
    write(one / "gunicorn.conf.py", "workers = 1\n")
    single = start(one)
    assert single.stderr.count(r"Ready: 1 shard serving") == 1
    assert "per CPU" not in single.stderr.text
