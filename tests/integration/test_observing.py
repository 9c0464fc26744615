"""Seeing inside a running gshard: status, queues, /metrics, statsd and the
control commands, against real processes and real clients."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import Server, status_document

WAIT = 15.0


def gshard_command(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gshard", *args], capture_output=True,
                          text=True, timeout=timeout)



def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def metrics_port(server: Server) -> int:
    return int(server.stderr.wait_for(r"Metrics at: http://127\.0\.0\.1:(\d+)/metrics",
                                      5).group(1))


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def total(families: dict, family: str, sample: str, **labels: str) -> float:
    return sum(s.value for s in families[family].samples if s.name == sample
               and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture
def pidfile(tmp_path) -> str:
    return str(tmp_path / "gshard.pid")


# --- Prometheus ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_metrics_count_every_request_sent_under_load(gshard_proc, pidfile):
    server = gshard_proc("gated_app:app", "--shards", "2", "--pid", pidfile,
                         "--metrics-bind", "127.0.0.1:0")
    port = metrics_port(server)
    sent = {"ok": 0, "missing": 0}
    lock = threading.Lock()
    scrapes: list[dict] = []

    def client(count: int) -> None:
        with requests.Session() as session:
            for i in range(count):
                path = "/missing" if i % 10 == 0 else "/"
                answer = session.get(server.url + path, timeout=10)
                with lock:
                    sent["ok" if answer.status_code == 200 else "missing"] += 1

    threads = [threading.Thread(target=client, args=(300,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        scrapes.append(scrape(port))  # answered by the manager while the shards work
        time.sleep(0.2)
    for thread in threads:
        thread.join()
    assert sent == {"ok": 1620, "missing": 180}
    assert len(scrapes) >= 2

    def counted() -> dict | None:
        families = scrape(port)
        done = total(families, "gshard_requests", "gshard_requests_total")
        return families if done >= 1800 else None

    families = wait_until(counted, "all 1800 requests counted")
    assert total(families, "gshard_requests", "gshard_requests_total",
                 status_class="2xx") == 1620
    assert total(families, "gshard_requests", "gshard_requests_total",
                 status_class="4xx") == 180
    assert total(families, "gshard_shard_requests", "gshard_shard_requests_total") == 1800
    assert total(families, "gshard_request_duration_seconds",
                 "gshard_request_duration_seconds_count") == 1800
    assert total(families, "gshard_shards", "gshard_shards", state="ready") == 2
    assert {s.labels["slot"] for s in families["gshard_accept_queue"].samples} == {"0", "1"}
    # Every request was counted once, and the in-flight gauges settled.
    assert total(families, "gshard_in_flight", "gshard_in_flight") == 0
    doc = status_document("--pid", pidfile)
    assert doc["totals"]["requests"] == 1800
    assert doc["totals"]["responses"]["4xx"] == 180


def test_metrics_port_must_be_free(gshard_proc):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        server = gshard_proc("hello:app", "--metrics-bind",
                             f"127.0.0.1:{holder.getsockname()[1]}", ready=False)
        assert server.wait(timeout=WAIT) == 1
        assert "Cannot start: --metrics-bind http://127.0.0.1:" in server.stderr.text
    finally:
        holder.close()


# --- statsd ------------------------------------------------------------------------


def test_statsd_sends_gunicorns_metric_names_to_a_udp_listener(gshard_proc):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(WAIT)
    try:
        server = gshard_proc("gated_app:app", "--shards", "2", "--statsd-host",
                             f"127.0.0.1:{receiver.getsockname()[1]}", "--statsd-prefix", "web",
                             "--dogstatsd-tags", "env:test")
        with requests.Session() as session:
            codes = [session.get(server.url + ("/missing" if i < 3 else "/")).status_code
                     for i in range(20)]
        assert codes.count(404) == 3
        counts: dict[str, float] = {}
        lines: list[str] = []
        deadline = time.monotonic() + WAIT
        # Each flush ends with the backlog: read whole flushes until all 20 are in.
        while ((counts.get("web.gunicorn.requests", 0) < 20 or "backlog" not in lines[-1])
               and time.monotonic() < deadline):
            line = receiver.recv(4096).decode()
            lines.append(line)
            match = re.fullmatch(r"([\w.]+):([\d.]+)\|c\|@1\.0\|#env:test", line)
            if match:
                counts[match[1]] = counts.get(match[1], 0) + float(match[2])
    finally:
        receiver.close()
    assert counts["web.gunicorn.requests"] == 20
    assert counts["web.gunicorn.request.status.200"] == 17
    assert counts["web.gunicorn.request.status.404"] == 3
    assert "web.gunicorn.workers:2|g|#env:test" in lines
    assert any(re.fullmatch(r"web\.gunicorn\.backlog:\d+\|h\|#env:test", line)
               for line in lines)
    assert any(line.startswith("web.gunicorn.request.duration:") and "|ms|@" in line
               for line in lines)


# --- status --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_status_during_a_reload_shows_both_generations_then_the_outcome(
        gshard_proc, pidfile, tmp_path):
    gate = tmp_path / "gate"
    server = gshard_proc("gated_app:app", "--shards", "2", "--pid", pidfile,
                         env={"GATED_APP_GATE": str(gate)})
    gate.touch()  # the next generation waits in its boot
    reload = subprocess.Popen([sys.executable, "-m", "gshard", "reload", "--pid", pidfile],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        doc = wait_until(
            lambda: (d := status_document("--pid", pidfile)) and len(d["generations"]) == 2 and d,
            "two generations in the status")
        assert doc["generations"] == [
            {"generation": 2, "state": "booting", "shards": 2},
            {"generation": 1, "state": "serving", "shards": 2},
        ]
        table = gshard_command("status", "--pid", pidfile).stdout
        states = sorted(re.findall(r"^\d+\s+\d+\s+(\d)\s+(\w+)", table, re.M))
        assert states == [("1", "serving"), ("1", "serving"), ("2", "booting"),
                          ("2", "booting")]
        gate.unlink()
        _, err = reload.communicate(timeout=WAIT)
        assert reload.returncode == 0, err
    finally:
        if reload.poll() is None:
            reload.kill()
            reload.wait()
    doc = status_document("--pid", pidfile)
    assert doc["last_reload"]["ok"] is True
    assert doc["last_reload"]["message"] == "Generation 2 is serving; generation 1 is draining"
    wait_until(lambda: status_document("--pid", pidfile)["restart_counts"].get("reloaded") == 2,
               "the first generation's shards recorded as reloaded")
    assert server.proc.poll() is None


@pytest.mark.timeout(60)
def test_status_records_a_killed_shard_and_a_broken_deploy(gshard_proc, pidfile, tmp_path):
    broken = tmp_path / "broken"
    server = gshard_proc("gated_app:app", "--shards", "2", "--pid", pidfile,
                         env={"GATED_APP_BROKEN": str(broken)})
    victim = server.shard_pids()[0]
    os.kill(victim, signal.SIGKILL)
    doc = wait_until(lambda: (d := status_document("--pid", pidfile))["restarts"] and d,
                     "a restart recorded")
    (crash,) = doc["restarts"]
    assert (crash["pid"], crash["reason"], crash["detail"]) == (
        victim, "crashed", "was killed by signal 9")
    wait_until(lambda: len(status_document("--pid", pidfile)["shards"]) == 2, "the slot respawned")

    broken.touch()  # the next import fails: the reload fails, generation 1 keeps serving
    done = gshard_command("reload", "--pid", pidfile)
    assert done.returncode == 1
    doc = wait_until(
        lambda: (d := status_document("--pid", pidfile))["restart_counts"].get("boot_failed") == 2
        and d, "the failed generation's shards recorded")
    assert doc["last_reload"]["ok"] is False
    assert "broken deploy" in doc["last_reload"]["message"]
    assert [(g["generation"], g["state"]) for g in doc["generations"]] == [(1, "serving")]
    assert requests.get(server.url, timeout=5).status_code == 200


@pytest.mark.timeout(40)
def test_a_blocked_shard_is_recorded_with_where_it_blocked(gshard_proc, pidfile):
    server = gshard_proc("blocking_app:app", "--shards", "1", "--pid", pidfile,
                         "--timeout", "4", "--metrics-bind", "127.0.0.1:0")
    blocker = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    try:
        blocker.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        server.stderr.wait_for(r"^BLOCKING \d+$", 5)
        # The only shard is stuck; the manager still answers, and sees it.
        families = scrape(metrics_port(server))
        assert total(families, "gshard_shards", "gshard_shards", state="ready") == 1
        assert status_document("--pid", pidfile)["shards"][0]["state"] == "ready"
        doc = wait_until(lambda: (d := status_document("--pid", pidfile))["restarts"] and d,
                         "a restart recorded", timeout=20)
    finally:
        blocker.close()
    (blocked,) = doc["restarts"]
    assert blocked["reason"] == "blocked"
    # SIGABRT first (the shard runs worker_abort and exits 1), SIGKILL if it cannot.
    assert re.search(r"event loop blocked for more than 4s; "
                     r"(exited with status 1|was killed by signal 9); "
                     r"blocked in .*blocking_app\.py:\d+ \(block_the_event_loop\)",
                     blocked["detail"]), blocked["detail"]
    assert doc["totals"]["blocked"] >= 1


def ss_queues(port: int) -> list[tuple[int, int]]:
    """(Recv-Q, Send-Q) of each listening socket on ``port``, as ``ss -ltn`` shows them."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return sorted((int(line.split()[1]), int(line.split()[2])) for line in out.splitlines())


@pytest.mark.timeout(40)
def test_accept_queue_depth_matches_ss(gshard_proc, pidfile):
    server = gshard_proc("hello:app", "--shards", "2", "--pid", pidfile, "--backlog", "64")
    shards = server.shard_pids()
    for pid in shards:
        os.kill(pid, signal.SIGSTOP)  # nobody accepts: connections wait in the queues
    clients = []
    try:
        for _ in range(10):
            clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        wait_until(lambda: sum(q for q, _ in ss_queues(server.port)) == 10,
                   "10 connections queued")
        doc = status_document("--pid", pidfile)
        ours = sorted((q["queue"], q["queue_limit"]) for q in doc["queues"])
        assert ours == ss_queues(server.port)
        assert sum(depth for depth, _ in ours) == 10
        assert all(limit == 64 for _, limit in ours)
        by_slot = {q["slot"]: q["queue"] for q in doc["queues"]}
        assert all(s["queue"] == by_slot[s["slot"]] for s in doc["shards"])
    finally:
        for pid in shards:
            os.kill(pid, signal.SIGCONT)
        for client in clients:
            client.close()


@pytest.mark.timeout(60)
def test_status_through_the_pidfile_after_an_upgrade(gshard_proc, pidfile):
    server = gshard_proc("hello:app", "--shards", "1", "--pid", pidfile)
    server.signal(signal.SIGUSR2)
    server.stderr.wait_for(r"Upgrade complete: this manager \(pid (\d+)\) took over", WAIT)
    with open(pidfile) as handle:
        successor = int(handle.read())
    assert successor != server.pid
    doc = wait_until(
        lambda: (d := status_document("--pid", pidfile))["manager"]["pid"] == successor and d,
        "the successor answers")
    assert doc["generations"][0]["state"] == "serving"
    gshard_command("stop", "--pid", pidfile)


# --- control commands --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_scale_recycle_reopen_and_stop_wait_and_report(gshard_proc, pidfile):
    server = gshard_proc("hello:app", "--shards", "2", "--pid", pidfile)
    done = gshard_command("scale", "3", "--pid", pidfile)
    assert (done.returncode, done.stdout) == (0, "3 shards serving\n")
    assert sorted(s["slot"] for s in status_document("--pid", pidfile)["shards"]) == [0, 1, 2]
    done = gshard_command("scale", "1", "--pid", pidfile)
    assert (done.returncode, done.stdout) == (0, "1 shard serving\n")
    doc = status_document("--pid", pidfile)
    assert [s["slot"] for s in doc["shards"]] == [0]
    assert doc["restart_counts"]["scaled_down"] == 2

    old = doc["shards"][0]["pid"]
    done = gshard_command("recycle", str(old), "--pid", pidfile)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"Shard 0 \(pid {old}\) replaced by pid \d+; pid {old} is draining\n",
                        done.stdout)
    wait_until(lambda: status_document("--pid", pidfile)["restart_counts"].get("recycled") == 1,
               "the recycled shard recorded")
    assert requests.get(server.url, timeout=5).status_code == 200

    done = gshard_command("recycle", "1", "--pid", pidfile)
    assert (done.returncode, done.stderr) == (1, "No serving shard has pid 1\n")

    done = gshard_command("reopen", "--pid", pidfile)
    assert (done.returncode, done.stdout) == (0, "Log files reopened by the manager and "
                                                 "1 shard\n")

    done = gshard_command("stop", "--pid", pidfile)
    assert (done.returncode, done.stdout) == (0, "Stopped gracefully\n")
    assert server.wait(timeout=WAIT) == 0


def test_commands_report_an_unreachable_manager(tmp_path):
    done = gshard_command("status", "--pid", str(tmp_path / "none.pid"))
    assert done.returncode == 1
    assert "cannot reach the manager" in done.stderr
    done = gshard_command("scale", "x", "--pid", str(tmp_path / "none.pid"))
    assert done.returncode == 2
