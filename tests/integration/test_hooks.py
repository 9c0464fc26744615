"""gunicorn's server hooks, from a real gunicorn config file, at their moments.

The config (``fixtureapps/recording_hooks.conf.py``) defines every hook; each
appends a JSON line to a file: the hook, the process it ran in, and what it
was given. The tests drive gshard through its life (start, requests, HUP,
TTIN, a shard quitting, a shard blocked past --timeout, USR2, TERM) and read
the file. Where gunicorn itself can run the same config (start order, the
request objects, patching before post_fork) it does, and both must agree.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.support.paths import FIXTURE_APPS
from tests.support.processes import Output, Server

CONFIG = str(FIXTURE_APPS / "recording_hooks.conf.py")


def records(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def named(recs: list[dict], hook: str) -> list[dict]:
    return [r for r in recs if r["hook"] == hook]


@pytest.fixture
def hooked(gshard_proc, tmp_path) -> Callable[..., tuple[Server, str]]:
    """Start gshard with the recording config: (server, the hook log's path)."""

    def start(app: str, *args: str, env: dict | None = None) -> tuple[Server, str]:
        path = str(tmp_path / "hooks.jsonl")
        server = gshard_proc(app, "-c", CONFIG, *args, env={"HOOK_LOG": path, **(env or {})})
        return server, path

    return start


def test_start_request_and_stop_hooks_run_at_gunicorns_moments(hooked):
    server, path = hooked("hello:app", "--shards", "2")
    response = requests.get(f"{server.url}/greet?name=ada", headers={"X-Trace": "t1"},
                            timeout=5)
    assert response.status_code == 200
    assert server.stop() == 0
    recs = records(path)
    manager = server.pid
    order = [r["hook"] for r in recs]

    # The manager: the count, then started and ready (listeners bound), then forks.
    assert order[:3] == ["nworkers_changed", "on_starting", "when_ready"]
    assert named(recs, "nworkers_changed")[0] | {"pid": 0} == {
        "hook": "nworkers_changed", "pid": 0, "new": 2, "old": None}
    for rec in recs[1:3]:
        assert (rec["pid"], rec["server_pid"], rec["num_workers"], rec["workers_setting"]) == (
            manager, manager, 2, 2)
    forks = named(recs, "pre_fork")
    assert [(f["pid"], f["worker_pid"], f["age"]) for f in forks] == [
        (manager, "[booting]", 1), (manager, "[booting]", 2)]

    # Each shard: post_fork (unpatched, as in gunicorn) then post_worker_init, in itself.
    shards = {r["pid"] for r in named(recs, "post_fork")}
    assert len(shards) == 2 and manager not in shards
    for shard in shards:
        mine = [r for r in recs if r["pid"] == shard]
        assert [r["hook"] for r in mine][:2] == ["post_fork", "post_worker_init"]
        fork, init = mine[:2]
        assert (fork["worker_pid"], fork["ppid"], fork["server_pid"]) == (shard, manager, manager)
        assert fork["socket_patched"] is False
        assert init["has_app"] is True
        assert order.index("pre_fork") < order.index("post_fork")

    # One request: pre_request then post_request, in the shard that served it.
    (pre,) = named(recs, "pre_request")
    (post,) = named(recs, "post_request")
    assert pre["pid"] == post["pid"] == pre["worker_pid"] and pre["pid"] in shards
    assert (pre["method"], pre["path"], pre["query"], pre["version"]) == (
        "GET", "/greet", "name=ada", [1, 1])
    assert ["X-TRACE", "t1"] in pre["headers"]
    assert (post["status"], post["status_code"], post["sent"], post["kept_state"]) == (
        "200 OK", 200, len(b"hello\n"), True)

    # Stopping: each shard's worker_exit, the manager's child_exit for each, on_exit last.
    assert {r["pid"] for r in named(recs, "worker_exit")} == shards
    assert {(r["pid"], r["worker_pid"]) for r in named(recs, "child_exit")} == {
        (manager, shard) for shard in shards}
    assert order[-1] == "on_exit" and recs[-1]["pid"] == manager


def test_reload_scale_and_quit_hooks(hooked):
    server, path = hooked("pid_app:app", "--shards", "2")
    first = set(server.shard_pids())

    server.signal(signal.SIGHUP)
    server.stderr.wait_for(r"Generation 2 is serving", 15)
    wait_until(lambda: len(named(records(path), "child_exit")) == 2, "the old shards' exit")
    recs = records(path)
    reload_at = [r["hook"] for r in recs].index("on_reload")
    assert recs[reload_at]["pid"] == server.pid
    assert recs[reload_at - 1] | {"pid": 0} == {
        "hook": "nworkers_changed", "pid": 0, "new": 2, "old": 2}  # as gunicorn, on reload
    assert [r["age"] for r in named(recs[reload_at:], "pre_fork")] == [3, 4]
    assert {r["pid"] for r in named(recs, "worker_exit")} == first
    assert {r["worker_pid"] for r in named(recs, "child_exit")} == first
    second = set(server.shard_pids())

    server.signal(signal.SIGTTIN)
    server.stderr.wait_for(r"Shard 2 \(pid \d+\) is serving", 15)
    recs = records(path)
    assert named(recs, "nworkers_changed")[-1] | {"pid": 0} == {
        "hook": "nworkers_changed", "pid": 0, "new": 3, "old": 2}
    assert named(recs, "pre_fork")[-1]["age"] == 5

    # A shard told to quit (SIGQUIT, as gunicorn's workers) runs worker_int, then leaves.
    victim = sorted(second)[0]
    os.kill(victim, signal.SIGQUIT)
    wait_until(lambda: victim in {r["worker_pid"] for r in named(records(path), "child_exit")},
               "the quitting shard to be reaped")
    recs = records(path)
    assert [r["hook"] for r in recs if r["pid"] == victim][-2:] == ["worker_int", "worker_exit"]

    server.signal(signal.SIGTTOU)
    server.stderr.wait_for(r"Removing shard 2", 10)
    wait_until(lambda: named(records(path), "nworkers_changed")[-1]["new"] == 2,
               "nworkers_changed on TTOU")
    assert named(records(path), "nworkers_changed")[-1]["old"] == 3


@pytest.mark.timeout(40)
def test_worker_abort_runs_when_a_shard_blocks_past_the_timeout(hooked):
    server, path = hooked("blocking_app:app", "--shards", "1", "--timeout", "2")
    blocker = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    try:
        blocker.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        hung = int(server.stderr.wait_for(r"^BLOCKING (\d+)$", timeout=5).group(1))
        server.stderr.wait_for(rf"\(pid {hung}\) blocked for more than 2s; aborting it", 10)
        server.stderr.wait_for(rf"\(pid {hung}\) exited with status 1", 5)
        server.stderr.wait_for(r"Shard 0 \(pid \d+\) is serving", 10)
    finally:
        blocker.close()
    recs = records(path)
    assert [r["hook"] for r in recs if r["pid"] == hung][-2:] == ["worker_abort", "worker_exit"]
    assert named(recs, "worker_abort")[0]["worker_pid"] == hung
    assert hung in {r["worker_pid"] for r in named(recs, "child_exit")}


def test_a_broken_post_fork_fails_the_reload_and_the_old_generation_serves(hooked, tmp_path):
    marker = tmp_path / "break-post-fork"
    server, path = hooked("pid_app:app", "--shards", "2",
                          env={"HOOK_FAIL_POST_FORK": str(marker)})
    serving = set(server.shard_pids())
    marker.touch()
    server.signal(signal.SIGHUP)
    server.stderr.wait_for(r"Reload failed, generation 1 keeps serving: a shard failed to "
                           r"boot: RuntimeError: post_fork cannot reach the database", 15)
    log = server.stderr.text
    assert "The post_fork hook raised:" in log and "Traceback (most recent call last)" in log
    for _ in range(10):
        assert int(requests.get(server.url, timeout=5).text) in serving
    # The shards that failed still ran worker_exit, as gunicorn's do.
    wait_until(lambda: len(named(records(path), "worker_exit")) == 2, "the failed shards' exit")
    assert not serving & {r["pid"] for r in named(records(path), "worker_exit")}
    # Fixed, the next reload goes through.
    marker.unlink()
    server.signal(signal.SIGHUP)
    server.stderr.wait_for(r"Generation 3 is serving", 15)
    wait_until(lambda: serving <= {r["worker_pid"] for r in named(records(path), "child_exit")},
               "generation 1 to drain and be reaped")
    assert int(requests.get(server.url, timeout=5).text) not in serving


@pytest.mark.timeout(60)
def test_pre_exec_runs_in_the_old_manager_on_usr2(hooked, tmp_path):
    server, path = hooked("hello:app", "--shards", "1", "--pid", str(tmp_path / "g.pid"))
    server.signal(signal.SIGUSR2)
    server.stderr.wait_for(r"Upgrade complete", 20)
    server.wait(20)
    recs = records(path)
    (pre_exec,) = named(recs, "pre_exec")
    assert pre_exec["pid"] == server.pid
    successor = int((tmp_path / "g.pid").read_text())
    # The new manager read the config and started as gunicorn's new master does.
    assert [r["pid"] for r in named(recs, "on_starting")] == [server.pid, successor]
    assert named(recs, "on_exit")[0]["pid"] == server.pid
    os.kill(successor, signal.SIGTERM)
    wait_until(lambda: successor in {r["pid"] for r in named(records(path), "on_exit")},
               "the new manager's on_exit", 15)


def test_ssl_context_hook_builds_the_context_that_serves(hooked, tmp_path):
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, cafile = tmp_path / "server.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    ca.cert_pem.write_to_path(str(cafile))
    server, path = hooked("hello:app", "--shards", "1", "--certfile", str(certfile))
    context = ssl.create_default_context(cafile=str(cafile))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        # The hook's context offers http/1.1 only; gshard's default offers no ALPN.
        assert tls.selected_alpn_protocol() == "http/1.1"
    (rec,) = named(records(path), "ssl_context")
    assert rec["certfile"] == str(certfile) and rec["pid"] in server.shard_pids()


# --- against gunicorn itself ---------------------------------------------------------------


@pytest.fixture
def gunicorn_hooked(tmp_path) -> Iterator[Callable[[], tuple[int, str]]]:
    """Start gunicorn's gevent worker with the same config: (port, the hook log's path)."""
    started: list[subprocess.Popen] = []

    def start() -> tuple[int, str]:
        path = str(tmp_path / "gunicorn-hooks.jsonl")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", CONFIG, "-k", "gevent", "-w", "1",
             "-b", "127.0.0.1:0", "hello:app"],
            cwd=FIXTURE_APPS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True, env={**os.environ, "HOOK_LOG": path},
        )
        started.append(proc)
        output = Output()
        threading.Thread(target=output.pump, args=(proc.stderr,), daemon=True).start()
        port = int(output.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)", 20).group(1))
        wait_until(lambda: named(records(path), "post_worker_init"), "gunicorn's worker", 20)
        return port, path

    yield start
    for proc in started:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_hooks_see_what_gunicorns_gevent_worker_shows_them(hooked, gunicorn_hooked):
    """Start order, patching before post_fork (what psycogreen relies on) and the
    request objects, side by side with gunicorn running the same config."""
    gunicorn_port, gunicorn_path = gunicorn_hooked()
    server, path = hooked("hello:app", "--shards", "1")
    for port in (gunicorn_port, server.port):
        response = requests.get(f"http://127.0.0.1:{port}/p/q?a=1&b=2",
                                headers={"X-Trace": "same", "User-Agent": "parity"},
                                timeout=5)
        assert response.status_code == 200
    wait_until(lambda: named(records(gunicorn_path), "post_request")
               and named(records(path), "post_request"), "post_request in both")
    theirs, ours = records(gunicorn_path), records(path)

    def start_order(recs):
        return [r["hook"] for r in recs][:6]

    assert start_order(ours) == start_order(theirs) == [
        "nworkers_changed", "on_starting", "when_ready", "pre_fork", "post_fork",
        "post_worker_init"]
    assert named(ours, "post_fork")[0]["socket_patched"] is \
        named(theirs, "post_fork")[0]["socket_patched"] is False

    def request_view(recs):
        (pre,) = named(recs, "pre_request")
        (post,) = named(recs, "post_request")
        headers = [h for h in pre["headers"] if h[0] != "HOST"]  # the ports differ
        return ({k: pre[k] for k in ("method", "path", "query", "version")}, headers,
                {k: post[k] for k in ("status", "status_code", "sent", "kept_state", "script")})

    assert request_view(ours) == request_view(theirs)


RETIRING_CONFIG = '''
def post_request(worker, req, environ, resp):
    if req.path == "/retire":
        worker.alive = False  # gunicorn's way: this worker should be replaced
'''


def test_a_hook_setting_worker_alive_false_gets_the_shard_replaced(gshard_proc, tmp_path):
    config = tmp_path / "retire.conf.py"
    config.write_text(RETIRING_CONFIG)
    server = gshard_proc("pid_app:app", "--shards", "1", "-c", str(config))
    (first,) = server.shard_pids()
    assert int(requests.get(f"{server.url}/retire", timeout=5).text) == first
    server.stderr.wait_for(rf"Recycling shard 0 \(pid {first}\)", 10)
    server.stderr.wait_for(rf"\(pid {first}\) exited with status 0 after draining", 15)
    (second,) = server.shard_pids()
    assert second != first
    assert int(requests.get(server.url, timeout=5).text) == second


@pytest.mark.timeout(40)
def test_shards_failing_at_once_never_pass_their_signals_to_the_manager(hooked, tmp_path):
    """A generation whose post_fork fails at once is told to quit within
    milliseconds of its fork; a signal reaching a shard before it has its own
    handlers once ran the manager's, which read it as its own (it shut down
    after a few such reloads). Signals are held across the fork now."""
    marker = tmp_path / "break-post-fork"
    server, _ = hooked("pid_app:app", "--shards", "2", env={"HOOK_FAIL_POST_FORK": str(marker)})
    serving = set(server.shard_pids())
    marker.touch()
    for _ in range(20):  # each reload quits the generation still booting, if any
        server.signal(signal.SIGHUP)
        time.sleep(0.05)

    def settled() -> bool:
        text = server.stderr.text
        return text.rfind("Reload failed") > text.rfind("Reloading: booting")

    wait_until(settled, "the last reload to fail", 15)
    assert server.stderr.count("Shutting down") == 0, server.stderr.text
    assert server.proc.poll() is None
    assert int(requests.get(server.url, timeout=5).text) in serving
