"""``--metrics-bind``: Prometheus' ``/metrics`` and the health checks ``/livez`` and
``/readyz``, answered by the manager itself.

The manager answers, not a shard, so a scrape or a probe works while shards
are blocked, booting or draining, and it sees every queue; what the health
checks mean is ``health``'s to say. The manager is a
single poll loop that forks; a thread would serve scrapes more simply, but
forking a process with a second thread risks a child inheriting a lock held
at the fork (logging's, the import lock). So, like the control socket, the
endpoint is a non-blocking listener the manager's loop polls: a scrape is
read, answered in one write with a short timeout, and closed.

The text format is prometheus_client's: a custom collector turns the
manager's ``status.View`` into metric families at each scrape, so nothing is
recorded twice and nothing here writes the format by hand.
"""

from __future__ import annotations

import contextlib
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from gshard.addresses import BindAddress
from gshard.manager.events import Reason
from gshard.manager.observe import health
from gshard.manager.observe.status import View
from gshard.snapshot import DURATION_BOUNDS, Snapshot

MAX_REQUEST = 8192  # a scrape's request head; more is not a scrape
MAX_CLIENTS = 16
SEND_TIMEOUT = 1.0
_HEALTH_PATHS = {b"/livez": "live", b"/readyz": "ready"}
_SHARD_LABELS = ("slot", "generation", "pid")


class GshardCollector(Collector):
    """Metric families from the manager's view, built at each scrape."""

    def __init__(self, observe: Callable[[], View]) -> None:
        self.observe = observe

    def collect(self) -> Iterator:
        view = self.observe()
        registry, machine = view.registry, view.machine
        totals = registry.totals()

        requests = CounterMetricFamily(
            "gshard_requests", "Responses sent, by status class (every shard, past ones too)",
            labels=["status_class"])
        for status_class, count in totals.by_class().items():
            requests.add_metric([status_class], count)
        yield requests
        yield _histogram("gshard_request_duration_seconds",
                         "Time from a request's head to its response's end", totals)
        yield CounterMetricFamily("gshard_received_bytes", "Request body bytes read",
                                  value=totals.bytes_in)
        yield CounterMetricFamily("gshard_sent_bytes", "Response body bytes sent",
                                  value=totals.bytes_out)
        yield CounterMetricFamily("gshard_blocked_loop_events",
                                  "Times a shard's event loop was seen blocked past half "
                                  "of --timeout", value=registry.blocked_events)

        shard_requests = CounterMetricFamily(
            "gshard_shard_requests", "Responses sent by one shard, by status class",
            labels=[*_SHARD_LABELS, "status_class"])
        gauges = {
            name: GaugeMetricFamily(f"gshard_shard_{name}", text, labels=_SHARD_LABELS)
            for name, text in (
                ("in_flight", "Connections reading or answering a request"),
                ("connections", "Open client connections"),
                ("idle_connections", "Keep-alive connections waiting for a request"),
                ("rss_bytes", "Resident memory"),
                ("requests_per_second", "Requests per second over the last 10 s"),
                ("heartbeat_age_seconds", "Seconds since the shard's last report"),
            )
        }
        states: Counter = Counter({state: 0 for state in ("booting", "ready", "draining")})
        for shard in machine.shards:
            states[shard.state.value] += 1
            record = registry.shards.get(shard.pid)
            if record is None:
                continue
            labels = [str(shard.slot), str(shard.generation), str(shard.pid)]
            snap = record.snapshot
            for status_class, count in snap.by_class().items():
                shard_requests.add_metric([*labels, status_class], count)
            gauges["in_flight"].add_metric(labels, snap.in_flight)
            gauges["connections"].add_metric(labels, snap.connections)
            gauges["idle_connections"].add_metric(labels, snap.idle)
            gauges["rss_bytes"].add_metric(labels, snap.rss)
            gauges["requests_per_second"].add_metric(labels, record.rate())
            if record.reported is not None:
                gauges["heartbeat_age_seconds"].add_metric(labels, view.now - record.reported)
        yield shard_requests
        yield from gauges.values()

        shards = GaugeMetricFamily("gshard_shards", "Shard processes by state", labels=["state"])
        for state, count in states.items():
            shards.add_metric([state], count)
        yield shards
        yield GaugeMetricFamily("gshard_in_flight", "Requests in flight in all shards",
                                value=totals.in_flight)
        yield GaugeMetricFamily("gshard_connections", "Open client connections in all shards",
                                value=totals.connections)
        yield GaugeMetricFamily("gshard_serving_generation",
                                "The generation serving now", value=machine.live)

        queue = GaugeMetricFamily("gshard_accept_queue",
                                  "Connections waiting in a slot's listen queue",
                                  labels=["slot"])
        limit = GaugeMetricFamily("gshard_accept_queue_limit",
                                  "Listen queue length of a slot (--backlog)", labels=["slot"])
        for slot, (depth, most) in sorted(view.queues.items()):
            queue.add_metric([str(slot)], depth)
            limit.add_metric([str(slot)], most)
        yield queue
        yield limit

        departures = CounterMetricFamily("gshard_shard_exits",
                                         "Shards that left, by reason", labels=["reason"])
        for reason in Reason:
            departures.add_metric([reason.value], registry.departures[reason])
        yield departures
        reloads = CounterMetricFamily("gshard_reloads", "Reloads by outcome", labels=["outcome"])
        reloads.add_metric(["ok"], registry.reloads[True])
        reloads.add_metric(["failed"], registry.reloads[False])
        yield reloads


def _histogram(name: str, documentation: str, snap: Snapshot) -> HistogramMetricFamily:
    cumulative, buckets = 0, []
    for bound, count in zip((*DURATION_BOUNDS, float("inf")), snap.buckets, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return HistogramMetricFamily(name, documentation, buckets=buckets,
                                 sum_value=snap.duration_sum)


@dataclass
class MetricsServer:
    """The ``/metrics`` listener, served from the manager's poll loop."""

    sock: socket.socket
    registry: CollectorRegistry
    observe: Callable[[], View]
    clients: dict[socket.socket, bytes] = field(default_factory=dict)

    @classmethod
    def open(cls, address: BindAddress, observe: Callable[[], View],
             shared: bool = False) -> MetricsServer:
        """Listen at ``address``. ``shared``: an upgrade's successor, whose
        predecessor still holds the port; both then answer until it leaves. The
        first manager sets SO_REUSEPORT only after binding, so a port another
        server holds is refused rather than shared (as listener.py does)."""
        try:
            infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            raise OSError(f"--metrics-bind {address.url()}: {exc}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.listen(16)
        except OSError as exc:
            sock.close()
            raise OSError(f"--metrics-bind {address.url()}: {exc.strerror}") from None
        sock.setblocking(False)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(GshardCollector(observe))
        return cls(sock, registry, observe)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/metrics"

    def descriptors(self) -> list[socket.socket]:
        if len(self.clients) >= MAX_CLIENTS:
            return list(self.clients)
        return [self.sock, *self.clients]

    def handle(self, readable: list) -> None:
        """Accept, read and answer whatever in ``readable`` is ours."""
        for sock in readable:
            if sock is self.sock:
                with contextlib.suppress(OSError):
                    client, _ = self.sock.accept()
                    client.setblocking(False)
                    self.clients[client] = b""
            elif sock in self.clients:
                self._read(sock)

    def _read(self, client: socket.socket) -> None:
        try:
            data = client.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        head = self.clients[client] + data
        if b"\r\n\r\n" not in head and b"\n\n" not in head:
            if len(head) > MAX_REQUEST:
                self._answer(client, "431 Request Header Fields Too Large", b"too large\n")
            else:
                self.clients[client] = head
            return
        method, _, rest = head.partition(b" ")
        target = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self._answer(client, "405 Method Not Allowed", b"GET /metrics, /livez or /readyz\n")
        elif target in _HEALTH_PATHS:
            verdict = health.check(_HEALTH_PATHS[target], self.observe())
            body = verdict.reason.encode() + b"\n"
            self._answer(client, "200 OK" if verdict.ok else "503 Service Unavailable",
                         b"" if method == b"HEAD" else body, length=len(body))
        elif target != b"/metrics":
            self._answer(client, "404 Not Found", b"see /metrics, /livez or /readyz\n")
        else:
            body = generate_latest(self.registry)
            self._answer(client, "200 OK", b"" if method == b"HEAD" else body,
                         CONTENT_TYPE_LATEST, len(body))

    def _answer(self, client: socket.socket, status: str, body: bytes,
                content_type: str = "text/plain; charset=utf-8",
                length: int | None = None) -> None:
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body) if length is None else length}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode("latin-1")
        with contextlib.suppress(OSError):
            client.setblocking(True)
            client.settimeout(SEND_TIMEOUT)
            client.sendall(head + body)
            # Closing with unread input would reset the connection and could
            # destroy the answer before the client read it.
            client.setblocking(False)
            client.recv(MAX_REQUEST * 4)
        self._drop(client)

    def _drop(self, client: socket.socket) -> None:
        self.clients.pop(client, None)
        client.close()

    def close(self) -> None:
        for client in list(self.clients):
            self._drop(client)
        self.sock.close()
