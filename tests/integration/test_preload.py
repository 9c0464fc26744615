"""--preload: shards share their template's memory, and hot reloads still load new code."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gshard.errors import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR
from tests.support.loadgen import APP, SERVER_ENV, Load, deploy, fresh_request
from tests.support.processes import (
    adopting_orphans,
    child_pids,
    process_state,
    process_title,
    wait_until,
)

BLOB_MIB = 64
_BIG_APP = f'''\
import os

BLOB = bytearray(b"\\x01") * ({BLOB_MIB} * 1024 * 1024)

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"v%d %d" % (BLOB[-1], os.getpid())]
'''


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found = [pid]
    for child in child_pids(pid):
        found += _tree(child)
    return found


def _pss_mib(pids: list[int]) -> float:
    total_kib = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            total_kib += int(re.search(r"^Pss:\s+(\d+) kB", handle.read(), re.M).group(1))
    return total_kib / 1024


def _titles(pid: int) -> list[str]:
    return [process_title(child) for child in child_pids(pid)]


def _templates(pid: int) -> list[str]:
    return [t for t in _titles(pid) if "template gen" in t]


@pytest.mark.timeout(90)
def test_preloaded_shards_share_the_application_memory(gshard_proc, tmp_path):
    (tmp_path / "big_app.py").write_text(_BIG_APP)
    totals = {}
    for preload in (False, True):
        args = ("--shards", "4", *(("--preload",) if preload else ()))
        server = gshard_proc("big_app:app", *args, cwd=tmp_path)
        assert fresh_request(server.port, "/").ok
        pids = _tree(server.pid)
        assert len(pids) == (6 if preload else 5), _titles(server.pid)
        totals[preload] = _pss_mib(pids)
        server.stop()
    # Four private copies without; one shared copy (plus interpreters) with.
    assert totals[False] > 4 * BLOB_MIB, totals
    assert totals[True] < 2 * BLOB_MIB, totals


def _reload(pidfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gshard", "reload", "--pid", str(pidfile), "--timeout", "30"],
        capture_output=True, text=True, timeout=45,
    )


def _served_version(port: int) -> str | None:
    return fresh_request(port, "/").version


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_preload_reloads_under_load_serve_new_code_and_lose_nothing(deployed_gshard, tmp_path):
    pidfile = tmp_path / "g.pid"
    server = deployed_gshard("--preload", "--shards", "2", "--pid", str(pidfile),
                             "--graceful-timeout", "5")
    assert _templates(server.pid) == [_templates(server.pid)[0]]
    with Load(server.port, fresh=8, keepalive=4, slow=2, max_seconds=60) as load:
        time.sleep(1.0)
        deploy(tmp_path, "v2")
        done = _reload(pidfile)
        assert done.returncode == 0, (done.stdout, done.stderr)
        wait_until(lambda: _served_version(server.port) == "v2", 10, "v2 served")
        # Generation 1 drains; its template exits once its shards are gone.
        wait_until(lambda: [t for t in _templates(server.pid) if "gen 1 " in t] == [], 15,
                   "generation 1's template to exit")

        deploy(tmp_path, "v-broken", broken="deploy 3 broke")
        failed = _reload(pidfile)
        assert failed.returncode == 1, (failed.stdout, failed.stderr)
        assert "RuntimeError: deploy 3 broke" in failed.stderr, failed.stderr
        assert "generation 2 keeps serving" in failed.stderr, failed.stderr
        assert _served_version(server.port) == "v2"

        deploy(tmp_path, "v4")
        done = _reload(pidfile)
        assert done.returncode == 0, (done.stdout, done.stderr)
        wait_until(lambda: _served_version(server.port) == "v4", 10, "v4 served")
        time.sleep(1.0)
    print(load.summary())
    load.assert_no_failure()
    served = {r.version for r in load.snapshot() if r.ok}
    assert {"v1", "v2", "v4"} <= served, served
    wait_until(lambda: len(_templates(server.pid)) == 1, 15, "one template left")
    assert "gen 4" in _templates(server.pid)[0]
    assert server.stop() == 0


def _shards(pid: int) -> list[int]:
    return [p for p in child_pids(pid) if "template gen" not in process_title(p)]


def _template_pid(pid: int) -> int:
    return next(p for p in child_pids(pid) if "template gen" in process_title(p))


@pytest.mark.timeout(60)
def test_a_crashed_shard_is_respawned_by_its_template_and_a_lost_template_replaced(
        deployed_gshard):
    server = deployed_gshard("--preload", "--shards", "2")
    template_pid = _template_pid(server.pid)
    first = _shards(server.pid)
    assert len(first) == 2

    os.kill(first[0], signal.SIGKILL)
    respawned = wait_until(lambda: (s := _shards(server.pid)) and len(s) == 2
                           and first[0] not in s and s, 15, "a respawned shard")
    server.stderr.wait_for(r"Shard \d \(pid \d+\) is serving", 15)
    assert _template_pid(server.pid) == template_pid  # the same template forked it

    # The template dies; the shards serve on, and the next respawn starts a new one.
    os.kill(template_pid, signal.SIGKILL)
    wait_until(lambda: template_pid not in child_pids(server.pid), 10, "the template reaped")
    assert fresh_request(server.port, "/").version == "v1"
    os.kill(respawned[0], signal.SIGKILL)
    wait_until(lambda: len(_shards(server.pid)) == 2 and respawned[0] not in _shards(server.pid),
               15, "a shard respawned from a new template")
    assert _template_pid(server.pid) != template_pid
    wait_until(lambda: server.stderr.count(r"is serving") >= 2, 15, "the respawn serving")
    assert all(fresh_request(server.port, "/").ok for _ in range(20))
    assert server.stop() == 0


# A deployment's config file, as projects write one for --preload.
PRELOAD_CONF = """\
import multiprocessing

preload_app = True
workers = 2
graceful_timeout = 5


def post_fork(server, worker):
    server.log.info("post_fork: shard %s of generation %s", worker.slot, worker.generation)


def when_ready(server):
    server.log.info("when_ready: %d workers", server.num_workers)
"""


@pytest.mark.timeout(60)
def test_the_manager_reaps_every_template_before_it_exits(deployed_gshard, tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text(PRELOAD_CONF)
    with adopting_orphans():
        server = deployed_gshard()
        server.stderr.wait_for(r"post_fork: shard 1 of generation 1", 10)
        old_template = _template_pid(server.pid)
        server.signal(signal.SIGHUP)  # a second generation, so two templates have lived
        wait_until(lambda: old_template not in child_pids(server.pid), 20,
                   "generation 1's template to exit")
        template = _template_pid(server.pid)
        assert server.stop() == 0
        try:
            time.sleep(0.5)  # an orphan would have reached this process by now
            assert process_state(template) is None, (
                f"template {template} outlived the manager: {process_state(template)}")
        finally:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(template, os.WNOHANG)


# A config whose when_ready says the server is ready (a readiness marker, as
# deployments write one for a load balancer or a deploy script).
READY_MARKER_CONF = """\
import pathlib

preload_app = True
workers = 2


def when_ready(server):
    pathlib.Path("ready.marker").write_text(str(server.pid))
"""


@pytest.mark.timeout(60)
def test_when_ready_runs_only_once_the_preloaded_application_loaded(gshard_proc, tmp_path):
    """gunicorn imports a preloaded application before when_ready, which never runs
    when the import fails; gshard's templates import it per generation, so when_ready
    waits for the first generation to serve."""
    (tmp_path / "gunicorn.conf.py").write_text(READY_MARKER_CONF)
    marker = tmp_path / "ready.marker"
    deploy(tmp_path, "v1", broken="no database at import")
    failed = gshard_proc(APP, cwd=tmp_path, env=SERVER_ENV, ready=False)
    assert failed.wait(40) == EXIT_APP_LOAD_ERROR, failed.stderr.text
    failed.stderr.wait_for(r"RuntimeError: no database at import", 5)
    assert not marker.exists()
    deploy(tmp_path, "v1")
    server = gshard_proc(APP, cwd=tmp_path, env=SERVER_ENV)  # ready: its first generation serves
    wait_until(marker.exists, 5, "the readiness marker")
    assert marker.read_text() == str(server.pid)
    assert fresh_request(server.port, "/").ok
    assert server.stop() == 0


@pytest.mark.timeout(60)
def test_boot_timeout_bounds_a_preloaded_import_at_start_and_at_reload(gshard_proc, tmp_path):
    """The template imports the application before any shard exists; the shards'
    boot clock starts when the manager asks for them, so --boot-timeout bounds that
    import: a stuck one fails the start (exit 3) or the reload (the old generation
    serves), rather than leaving the server starting for as long as the import takes."""
    gate = tmp_path / "gate"
    gate.touch()  # importing gated_app waits (up to 20 s) while it exists
    env = {"GATED_APP_GATE": str(gate)}
    started = time.monotonic()
    stuck = gshard_proc("gated_app:app", "--preload", "--shards", "2", "--boot-timeout", "2",
                        env=env, ready=False)
    assert stuck.wait(15) == EXIT_BOOT_ERROR, stuck.stderr.text
    assert time.monotonic() - started < 10
    stuck.stderr.wait_for(r"has not loaded the application within --boot-timeout 2s; "
                          r"killing it", 5)
    assert "the application did not load within --boot-timeout 2s" in stuck.stderr.text

    gate.unlink()
    pidfile = tmp_path / "gshard.pid"
    server = gshard_proc("gated_app:app", "--preload", "--shards", "2", "--boot-timeout", "2",
                         "--pid", str(pidfile), env=env)
    assert fresh_request(server.port, "/").ok
    gate.touch()
    reload = subprocess.run([sys.executable, "-m", "gshard", "reload", "--pid", str(pidfile)],
                            capture_output=True, text=True, timeout=20)
    assert reload.returncode == 1
    assert "the application did not load within --boot-timeout 2s" in reload.stdout + reload.stderr
    assert fresh_request(server.port, "/").ok  # generation 1 serves on
    gate.unlink()
    assert server.stop() == 0

