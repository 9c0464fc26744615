"""The views of a running gshard: status document and table, top's screen,
Prometheus' collector and endpoint, statsd's lines. Built from a state machine
driven by events and a registry fed by snapshots, as the manager does."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import defaultdict
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gshard.addresses import BindAddress, parse_statsd_host
from gshard.cli import status as status_cli
from gshard.cli import top
from gshard.manager import events
from gshard.manager.events import Reason
from gshard.manager.fsm import Timings
from gshard.manager.observe import health, status
from gshard.manager.observe.prometheus import MetricsServer
from gshard.manager.observe.registry import Registry
from gshard.manager.observe.statsd import StatsdSender, normalize_prefix
from gshard.shard.metrics import ShardMetrics
from tests.support.fsm_driver import FsmDriver

INFO = status.ManagerInfo(pid=4242, started=0.0, started_wall=1_700_000_000.0,
                          app="hello:app", urls=("http://127.0.0.1:8000",))


class World:
    """A state machine and a registry, fed what a manager would feed them."""

    def __init__(self, slots: int = 2, timings: Timings | None = None) -> None:
        self.driver = FsmDriver(slots, timings)
        self.registry = Registry()
        self.counters: defaultdict[int, ShardMetrics] = defaultdict(ShardMetrics)
        self.driver.feed(events.Start)

    @property
    def now(self) -> float:
        return self.driver.now

    def serve(self, pid: int, count: int, code: int = 200) -> None:
        for _ in range(count):
            self.counters[pid].exchange_done(SimpleNamespace(
                writer=SimpleNamespace(status=f"{code} X", sent=12), duration=0.004,
                body_bytes=0))

    def beat(self, seconds: float = 1.0) -> None:
        self.driver.now += seconds
        for shard in self.driver.view().shards:
            snapshot = self.counters[shard.pid].snapshot(3, 1, 30_000_000)
            self.registry.report(shard.pid, shard.slot, shard.generation, snapshot, self.now)

    def view(self, queues=None) -> status.View:
        queues = {0: (5, 2048), 1: (0, 2048)} if queues is None else queues
        return status.View(INFO, self.driver.view(), self.registry, queues, self.now,
                           1_700_000_100.0)


def serving_world() -> World:
    world = World()
    world.driver.ready_all(1)
    for _ in range(3):
        for pid in world.driver.fsm.shard_pids():
            world.serve(pid, 10)
        world.beat()
    return world


def reloading_world() -> World:
    """Generation 2 booting while generation 1 serves."""
    world = serving_world()
    world.driver.feed(events.Reload)
    world.beat()
    return world


# --- status ------------------------------------------------------------------


def test_status_document_describes_manager_shards_queues_and_totals():
    doc = status.document(serving_world().view())
    assert doc["schema"] == status.SCHEMA
    assert doc["manager"]["pid"] == 4242
    assert doc["manager"]["phase"] == "running"
    assert doc["generations"] == [{"generation": 1, "state": "serving", "shards": 2}]
    assert [(s["slot"], s["generation"], s["state"]) for s in doc["shards"]] == [
        (0, 1, "ready"), (1, 1, "ready")]
    first = doc["shards"][0]
    assert first["requests"] == 30
    assert first["rps"] == pytest.approx(10.0)
    assert (first["queue"], first["queue_limit"]) == (5, 2048)
    assert (first["in_flight"], first["connections"], first["rss"]) == (2, 3, 30_000_000)
    assert doc["totals"]["requests"] == 60
    assert doc["totals"]["rps"] == pytest.approx(20.0)
    assert doc["last_reload"] is None
    json.dumps(doc)  # plain data


def test_status_during_a_reload_shows_both_generations():
    doc = status.document(reloading_world().view())
    assert doc["generations"] == [
        {"generation": 2, "state": "booting", "shards": 2},
        {"generation": 1, "state": "serving", "shards": 2},
    ]
    text = status_cli.render(doc)
    assert "gen 2 booting (2)" in text and "gen 1 serving (2)" in text
    rows = [line.split() for line in text.splitlines() if line[:1].isdigit()]
    assert sorted((row[2], row[3]) for row in rows) == [
        ("1", "serving"), ("1", "serving"), ("2", "booting"), ("2", "booting")]


def test_status_after_a_reload_shows_old_generation_draining_and_the_outcome():
    world = reloading_world()
    first, second = world.driver.pids_of(2)
    for action in world.driver.ready(first):
        assert not isinstance(action, events.ReloadFinished)
    actions = world.driver.ready(second)
    finished = next(a for a in actions if isinstance(a, events.ReloadFinished))
    world.registry.reload_finished(finished.ok, finished.message, 1_700_000_050.0)
    doc = status.document(world.view())
    assert [(g["generation"], g["state"]) for g in doc["generations"]] == [
        (2, "serving"), (1, "draining")]
    assert doc["last_reload"]["ok"] is True
    assert "Generation 2 is serving" in status_cli.render(doc)


def test_status_lists_departures_with_reasons():
    world = serving_world()
    pid = world.driver.fsm.shard_pids()[0]
    world.driver.exit_shard(pid, -9)
    world.registry.shard_gone(pid, 0, 1, Reason.CRASHED, "was killed by signal 9",
                              1_700_000_060.0)
    doc = status.document(world.view())
    assert doc["restarts"][0]["reason"] == "crashed"
    assert doc["restart_counts"] == {"crashed": 1}
    assert doc["totals"]["requests"] == 60  # its requests still count
    assert "crashed: was killed by signal 9" in status_cli.render(doc)


# --- top -----------------------------------------------------------------------


def test_top_screen_shows_a_row_per_shard_with_trend_queue_and_state():
    world = World()
    world.driver.ready_all(1)
    trends = top.Trends()
    for load in (0, 5, 10, 20):
        for pid in world.driver.fsm.shard_pids():
            world.serve(pid, load)
        world.beat()
        trends.add(status.document(world.view()))
    world.driver.feed(events.Reload)
    world.beat()
    doc = status.document(world.view())
    trends.add(doc)
    lines = top.screen(doc, trends, width=120)
    rows = [line for line in lines if line[:1].isdigit()]
    assert len(rows) == 4
    serving = [row for row in rows if " serving " in row]
    booting = [row for row in rows if " booting " in row]
    assert len(serving) == 2 and len(booting) == 2
    assert "5/2048" in serving[0]
    assert "█" in serving[0]  # the peak of its trend
    assert all(len(line) <= 120 for line in lines if not line.startswith("\x1b"))


# --- Prometheus ----------------------------------------------------------------


def families(world: World) -> dict:
    server = MetricsServer.open(BindAddress("127.0.0.1", 0), world.view)
    try:
        from prometheus_client.exposition import generate_latest

        text = generate_latest(server.registry).decode()
    finally:
        server.close()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(family, name: str | None = None, **labels) -> float:
    values = [s.value for s in family.samples
              if (name is None or s.name == name)
              and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(values) == 1, (labels, family.samples)
    return values[0]


def test_prometheus_collector_totals_per_shard_series_queues_and_states():
    world = reloading_world()
    found = families(world)
    assert sample(found["gshard_requests"], "gshard_requests_total", status_class="2xx") == 60
    shard = world.driver.view().of_generation(1)[0]
    assert sample(found["gshard_shard_requests"], slot=str(shard.slot), generation="1",
                  pid=str(shard.pid), status_class="2xx") == 30
    histogram = found["gshard_request_duration_seconds"]
    assert sample(histogram, "gshard_request_duration_seconds_count") == 60
    assert sample(histogram, "gshard_request_duration_seconds_bucket", le="0.005") == 60
    assert sample(found["gshard_accept_queue"], slot="0") == 5
    assert sample(found["gshard_accept_queue_limit"], slot="1") == 2048
    assert sample(found["gshard_shards"], state="booting") == 2
    assert sample(found["gshard_shards"], state="ready") == 2
    assert sample(found["gshard_serving_generation"]) == 1
    assert sample(found["gshard_reloads"], outcome="failed") == 0


def test_prometheus_counts_exits_by_reason():
    world = serving_world()
    pid = world.driver.fsm.shard_pids()[0]
    world.registry.shard_gone(pid, 0, 1, Reason.BLOCKED, "blocked", 0.0)
    found = families(world)
    assert sample(found["gshard_shard_exits"], reason="blocked") == 1
    assert sample(found["gshard_shard_exits"], reason="crashed") == 0


def scrape(server: MetricsServer, request: bytes) -> bytes:
    """Send ``request`` to the endpoint while serving it the way the manager's loop does."""
    done = threading.Event()

    def loop() -> None:
        import select

        while not done.is_set():
            poller = select.poll()
            watched = server.descriptors()
            for sock in watched:
                poller.register(sock, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(50)}
            server.handle([s for s in watched if s.fileno() in ready])

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        with socket.create_connection(server.sock.getsockname()[:2], timeout=5) as client:
            client.sendall(request)
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        return answer
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def metrics_server(world: World) -> Iterator[MetricsServer]:
    """The endpoint on a loopback port of its own, over ``world``'s view."""
    server = MetricsServer.open(BindAddress("127.0.0.1", 0), world.view)
    try:
        yield server
    finally:
        server.close()


def test_metrics_endpoint_answers_get_metrics_and_refuses_the_rest():
    with metrics_server(serving_world()) as server:
        answer = scrape(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"text/plain; version=" in head
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert "gshard_requests" in names
        assert scrape(server, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
        assert scrape(server, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
        too_long = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000
        assert scrape(server, too_long).startswith(b"HTTP/1.1 431")
        assert server.clients == {}


# --- health: /livez and /readyz -------------------------------------------------


def verdicts(world: World) -> tuple[health.Verdict, health.Verdict]:
    view = world.view()
    return health.liveness(view), health.readiness(view)


def test_readiness_follows_the_first_boot_serving_reloads_and_a_delayed_stop():
    world = World(timings=Timings(heartbeat_timeout=30.0, shutdown_delay=5.0))
    live, ready = verdicts(world)
    assert live.ok and not ready.ok
    assert ready.reason == "not ready: starting, generation 1 is booting (0 of 2 shards ready)"
    world.driver.ready(world.driver.pids_of(1)[0])
    assert "(1 of 2 shards ready)" in health.readiness(world.view()).reason
    world.driver.ready_all(1)
    live, ready = verdicts(world)
    assert live.ok and ready.ok
    assert ready.reason == "ready: generation 1 serves on 2 of 2 shards"
    world.driver.feed(events.Reload)  # a reload never makes a serving server unready
    assert health.readiness(world.view()) == health.Verdict(
        True, "ready: generation 1 serves on 2 of 2 shards; generation 2 is booting")
    world.driver.ready_all(2)
    world.driver.feed(events.Stop, True)
    world.driver.now += 1.5
    live, ready = verdicts(world)
    assert live.ok and not ready.ok
    assert ready.reason == ("not ready: stopping; serving 3.5s more as a lame duck "
                            "(--shutdown-delay), then draining")
    world.driver.now += 3.5
    world.driver.feed(events.Tick)
    assert health.readiness(world.view()).reason == "not ready: stopping; draining"
    assert health.liveness(world.view()).ok


def test_readiness_fails_while_no_shard_of_the_serving_generation_is_up():
    world = serving_world()
    for pid in world.driver.pids_of(1):
        world.driver.exit_shard(pid, -9)
    verdict = health.readiness(world.view())
    assert not verdict.ok and "no shard of generation 1 serves" in verdict.reason


def test_liveness_fails_only_when_no_shard_has_reported_within_the_timeout():
    world = World(timings=Timings(heartbeat_timeout=30.0))
    world.driver.now = 100.0  # a slow first boot is alive: --boot-timeout bounds it
    assert health.liveness(world.view()).ok
    world.driver.ready_all(1)
    first = world.driver.pids_of(1)[0]
    world.driver.now += 29.0
    world.driver.feed(events.Beat, first)
    world.driver.now += 29.0  # first beat 29 s ago, second 58 s ago
    assert health.liveness(world.view()) == health.Verdict(
        True, "alive: 1 shard reported within the last 30s")
    world.driver.now += 2.0
    assert health.liveness(world.view()) == health.Verdict(
        False, "not alive: no shard has reported within the last 30s (--timeout)")


def test_health_endpoints_answer_200_or_503_with_one_line_saying_why():
    world = World()
    with metrics_server(world) as server:
        answer = scrape(server, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 Service Unavailable")
        assert b"Cache-Control: no-store" in head
        assert body == b"not ready: starting, generation 1 is booting (0 of 2 shards ready)\n"
        assert scrape(server, b"GET /livez HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 OK")
        world.driver.ready_all(1)
        answer = scrape(server, b"GET /readyz?verbose HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert answer.endswith(b"\r\n\r\nready: generation 1 serves on 2 of 2 shards\n")
        head_only = scrape(server, b"HEAD /readyz HTTP/1.1\r\n\r\n")
        assert head_only.startswith(b"HTTP/1.1 200 OK") and head_only.endswith(b"\r\n\r\n")
        assert b"Content-Length: 44\r\n" in head_only


# --- statsd --------------------------------------------------------------------


def test_statsd_target_and_prefix_are_read_as_gunicorn_reads_them():
    assert parse_statsd_host("localhost:9125") == (socket.AF_INET, ("localhost", 9125))
    assert parse_statsd_host("127.0.0.1") == (socket.AF_INET, ("127.0.0.1", 8125))
    assert parse_statsd_host("[::1]:9000") == (socket.AF_INET6, ("::1", 9000))
    assert parse_statsd_host("unix:///run/statsd.sock") == (socket.AF_UNIX, "/run/statsd.sock")
    for bad in ("host:port", "host:0", ":80", "unix:"):
        with pytest.raises(ValueError):
            parse_statsd_host(bad)
    assert normalize_prefix("") == ""
    assert normalize_prefix("app") == "app."
    assert normalize_prefix("app...") == "app."


def test_statsd_sends_changes_with_gunicorns_names_over_udp():
    world = serving_world()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    sender = StatsdSender.open(f"127.0.0.1:{port}", prefix="app", tags="env:test,team:web")
    try:
        sender.flush(world.view())
        first = receive_all(receiver)
        pid = world.driver.fsm.shard_pids()[0]
        world.serve(pid, 4, code=503)
        world.registry.manager_logs["error"] = 1
        world.beat()
        sender.flush(world.view())
        second = receive_all(receiver)
    finally:
        sender.close()
        receiver.close()
    assert "app.gunicorn.requests:60|c|@1.0|#env:test,team:web" in first
    assert "app.gunicorn.request.status.200:60|c|@1.0|#env:test,team:web" in first
    assert "app.gunicorn.request.duration:2.5|ms|@0.0166667|#env:test,team:web" in first
    assert "app.gunicorn.workers:2|g|#env:test,team:web" in first
    assert "app.gunicorn.backlog:5|h|#env:test,team:web" in first
    # Only what changed since, and the gauges again.
    assert [line.split("|#")[0] for line in second] == [
        "app.gunicorn.requests:4|c|@1.0",
        "app.gunicorn.request.status.503:4|c|@1.0",
        "app.gunicorn.request.duration:2.5|ms|@0.25",
        "app.gunicorn.log.error:1|c|@1.0",
        "app.gunicorn.workers:2|g",
        "app.gunicorn.backlog:5|h",
    ]


def receive_all(receiver: socket.socket) -> list[str]:
    """Datagrams up to and including the backlog line, which each flush sends last."""
    lines = []
    while not lines or "gunicorn.backlog" not in lines[-1]:
        lines.append(receiver.recv(4096).decode())
    return lines
