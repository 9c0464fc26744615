"""gunicorn's statsd metrics, sent by the manager once a second.

The names are gunicorn's, so a dashboard built for gunicorn keeps working:
``gunicorn.requests``, ``gunicorn.request.status.<code>``,
``gunicorn.request.duration`` (ms), ``gunicorn.workers``, ``gunicorn.backlog``
and ``gunicorn.log.<level>``, under ``--statsd-prefix``, with
``--dogstatsd-tags`` appended as DogStatsD tags.

gunicorn's workers send a datagram per request; gshard's shards count
in-process and the manager sends what changed since the last flush: a
counter with the increment, and the request durations as one timing per
histogram bucket that had requests, valued at the bucket's middle and
sampled at 1/count (so statsd counts every request and sees the spread
to the bucket's precision). Sending never blocks and never fails loudly:
statsd is fire and forget.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator

from gshard.addresses import parse_statsd_host
from gshard.manager.observe.status import View
from gshard.snapshot import DURATION_BOUNDS, Snapshot

FLUSH_INTERVAL = 1.0
# The duration (ms) each histogram bucket stands for: the middle of its bounds;
# the open-ended last bucket is valued at its lower bound.
_BUCKET_MS = (
    *(round((low + high) / 2 * 1000, 3)
      for low, high in zip((0.0, *DURATION_BOUNDS[:-1]), DURATION_BOUNDS, strict=True)),
    DURATION_BOUNDS[-1] * 1000,
)


def normalize_prefix(prefix: str) -> str:
    """``app`` and ``app.`` both mean names like ``app.gunicorn.requests``, as in gunicorn."""
    return re.sub(r"^(.+[^.]+)\.*$", r"\g<1>.", prefix)


class StatsdSender:
    """Sends the change in the totals since the previous flush."""

    def __init__(self, sock: socket.socket, prefix: str = "", tags: str = "") -> None:
        self.sock = sock
        self.prefix = normalize_prefix(prefix)
        self.suffix = f"|#{tags}" if tags else ""
        self.last = Snapshot()
        self.next_flush = 0.0

    @classmethod
    def open(cls, target: str, prefix: str = "", tags: str = "") -> StatsdSender:
        family, address = parse_statsd_host(target)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family != socket.AF_UNIX:
                # Resolved once, here, not per datagram.
                address = socket.getaddrinfo(*address, family, socket.SOCK_DGRAM)[0][4]
            sock.connect(address)
        except OSError as exc:
            sock.close()
            raise OSError(f"--statsd-host {target}: {exc.strerror or exc}") from None
        return cls(sock, prefix, tags)

    def due(self, now: float) -> bool:
        return now >= self.next_flush

    def flush(self, view: View) -> None:
        """Send what changed since the last flush, and the gauges."""
        self.next_flush = view.now + FLUSH_INTERVAL
        totals = view.registry.totals()
        for line in self.lines(totals, len(view.machine.shards),
                               sum(depth for depth, _ in view.queues.values())):
            with contextlib.suppress(OSError):
                self.sock.send((self.prefix + line + self.suffix).encode("ascii", "replace"))
        self.last = totals

    def lines(self, totals: Snapshot, workers: int, backlog: int) -> Iterator[str]:
        """The metric lines (without prefix and tags) for the change since the last flush."""
        last = self.last
        requests = totals.requests - last.requests
        if requests > 0:
            yield f"gunicorn.requests:{requests}|c|@1.0"
        for code, count in sorted(totals.statuses.items()):
            change = count - last.statuses.get(code, 0)
            if change > 0:
                yield f"gunicorn.request.status.{code}:{change}|c|@1.0"
        buckets = zip(_BUCKET_MS, totals.buckets, last.buckets, strict=True)
        for value_ms, now_count, then_count in buckets:
            change = now_count - then_count
            if change > 0:
                rate = "1.0" if change == 1 else f"{1 / change:.6g}"
                yield f"gunicorn.request.duration:{value_ms:g}|ms|@{rate}"
        for level, count in sorted(totals.logs.items()):
            change = count - last.logs.get(level, 0)
            if change > 0:
                yield f"gunicorn.log.{level}:{change}|c|@1.0"
        yield f"gunicorn.workers:{workers}|g"
        yield f"gunicorn.backlog:{backlog}|h"

    def close(self) -> None:
        self.sock.close()
