"""Bounded HTTP load from client threads, recording every request's outcome.

Used by the tests that restart, upgrade, scale, recycle or kill shards under
load, to prove that nothing is lost while shards come and go. Three kinds of
client, all raw sockets (no library retries hide a failure):

* ``fresh``: a new TCP connection per request, ``Connection: close``; many of
  them at once keep every accept queue busy;
* ``keepalive``: one persistent connection, requests back to back; a response
  with ``Connection: close`` (a draining shard) makes it reconnect;
* ``slow``: a fresh connection per request to a path that takes its time, so
  requests are always in flight when a generation drains.

Each loop is bounded by a deadline and a request count; each socket operation
has a timeout. A request succeeds only with a complete ``200`` whose body is
``VERSION PID``; anything else (an exception, a reset, a close before the
response, a truncated body, another status) is a failure with its reason.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 10.0


@dataclass
class Result:
    kind: str
    started: float  # time.monotonic() before connecting (fresh) or sending (keep-alive)
    ended: float
    error: str | None = None  # None: a complete 200
    version: str | None = None
    pid: int | None = None
    reused: bool = False  # keep-alive: sent on a connection that had served a request

    @property
    def ok(self) -> bool:
        return self.error is None


class _Reply(Exception):
    """A request that got no usable response; the message says why."""


def _classify(exc: BaseException) -> str:
    if isinstance(exc, _Reply):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return f"{type(exc).__name__}: {exc}"


class _Reader:
    """Reads one response at a time from a socket, framed by Content-Length."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def response(self, deadline: float) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise _Reply("closed before a response" if not self.buf else
                             f"closed inside the head: {self.buf[:80]!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise _Reply(f"bad status line {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise _Reply(f"no Content-Length: {head[:200]!r}")
        length = int(headers["content-length"])
        while len(self.buf) < length:
            if not self._fill(deadline):
                raise _Reply(f"body cut short: {len(self.buf)} of {length} bytes")
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(parts[1]), headers, body


def _check(result: Result, status: int, body: bytes) -> None:
    if status != 200:
        raise _Reply(f"status {status}: {body[:80]!r}")
    version, _, pid = body.decode("latin-1").partition(" ")
    if not pid.isdigit():
        raise _Reply(f"unexpected body {body[:80]!r}")
    result.version, result.pid = version, int(pid)


def fresh_request(port: int, path: str, kind: str = "fresh",
                  timeout: float = REQUEST_TIMEOUT) -> Result:
    """One request on its own connection, ``Connection: close``."""
    started = time.monotonic()
    deadline = started + timeout
    result = Result(kind, started, started)
    sock = None
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n".encode())
        status, _, body = _Reader(sock).response(deadline)
        _check(result, status, body)
    except Exception as exc:
        result.error = _classify(exc)
    finally:
        if sock is not None:
            sock.close()
        result.ended = time.monotonic()
    return result


@dataclass
class Load:
    """Client threads hammering ``port`` until ``stop()`` (or their bounds)."""

    port: int
    fresh: int = 24
    keepalive: int = 6
    slow: int = 3
    fresh_path: str = "/"
    slow_path: str = "/slow"
    # The slow clients start spread over this long, so that at any moment some
    # /slow request is midway (all starting at once, they would run in lockstep).
    slow_spread: float = 1.5
    max_seconds: float = 60.0  # hard deadline of every loop
    max_requests: int = 200_000  # per thread
    request_timeout: float = REQUEST_TIMEOUT
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        deadline = time.monotonic() + self.max_seconds
        for kind, count in (("fresh", self.fresh), ("keepalive", self.keepalive),
                            ("slow", self.slow)):
            target = self._keepalive_loop if kind == "keepalive" else self._fresh_loop
            for i in range(count):
                delay = self.slow_spread * i / count if kind == "slow" else 0.0
                thread = threading.Thread(target=target, args=(kind, deadline, delay),
                                          daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.request_timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _running(self, deadline: float, done: int) -> bool:
        return not self._stop.is_set() and time.monotonic() < deadline \
            and done < self.max_requests

    def _fresh_loop(self, kind: str, deadline: float, delay: float) -> None:
        path = self.slow_path if kind == "slow" else self.fresh_path
        done = 0
        if self._stop.wait(delay):
            return
        while self._running(deadline, done):
            self.results.append(fresh_request(self.port, path, kind, self.request_timeout))
            done += 1

    def _keepalive_loop(self, kind: str, deadline: float, delay: float) -> None:
        sock: socket.socket | None = None
        reader: _Reader | None = None
        served = 0  # on the current connection
        done = 0
        request = f"GET {self.fresh_path} HTTP/1.1\r\nHost: load\r\n\r\n".encode()
        try:
            while self._running(deadline, done):
                started = time.monotonic()
                result = Result(kind, started, started, reused=served > 0)
                try:
                    if sock is None:
                        sock = socket.create_connection(("127.0.0.1", self.port),
                                                        timeout=self.request_timeout)
                        reader, served = _Reader(sock), 0
                    sock.settimeout(self.request_timeout)
                    sock.sendall(request)
                    status, headers, body = reader.response(started + self.request_timeout)
                    _check(result, status, body)
                    served += 1
                    if headers.get("connection", "").lower() == "close":
                        sock.close()
                        sock = None
                except Exception as exc:
                    result.error = _classify(exc)
                    if sock is not None:
                        sock.close()
                    sock = None
                result.ended = time.monotonic()
                self.results.append(result)
                done += 1
        finally:
            if sock is not None:
                sock.close()

    # --- reading the outcome ------------------------------------------------

    def snapshot(self) -> list[Result]:
        return list(self.results)

    def failures(self) -> list[Result]:
        return [r for r in self.snapshot() if not r.ok]

    def assert_no_failure(self, summary: str | None = None) -> None:
        """Fail the test if any request failed, saying ``summary`` (or the load's) and why."""
        failures = self.failures()
        assert not failures, f"{summary or self.summary()}; first failures: {failures[:5]}"

    def served(self, since: float = 0.0) -> list[Result]:
        """The complete 200s of requests started at ``since`` (time.monotonic()) or later."""
        return [r for r in self.snapshot() if r.ok and r.started >= since]

    def summary(self, results: list[Result] | None = None) -> str:
        results = self.snapshot() if results is None else results
        kinds = Counter(r.kind for r in results)
        failed = [r for r in results if not r.ok]
        reasons = Counter(f"{r.kind}: {r.error}" for r in failed)
        versions = Counter(r.version for r in results if r.ok)
        slowest = {kind: f"{max(r.ended - r.started for r in results if r.kind == kind):.2f}s"
                   for kind in kinds}
        return (f"{len(results)} requests {dict(kinds)}, {len(failed)} failed "
                f"{dict(reasons)}, versions {dict(versions)}, slowest {slowest}")


# --- a deployable application ---------------------------------------------------

APP_MODULE = "deployed_app"
APP = f"{APP_MODULE}:app"

_APP_SOURCE = '''\
"""Written by the hot-restart tests: answers "VERSION PID"; /slow takes 1.5 s."""
import os
import time

VERSION = {version!r}
{slow_import}{broken}

def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(1.5)  # gevent's (the shard is monkey-patched): other requests go on
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def deploy(directory: os.PathLike | str, version: str, broken: str | None = None,
           import_seconds: float = 0.0) -> None:
    """Write the application module as a deploy would: a new file renamed into place.

    ``broken``: a message the module raises (RuntimeError) while it is imported,
    after ``import_seconds`` of importing.
    """
    code = f"raise RuntimeError({broken!r})\n" if broken else ""
    slow = f"time.sleep({import_seconds!r})\n" if import_seconds else ""
    path = os.path.join(directory, f"{APP_MODULE}.py")
    temp = path + ".new"
    with open(temp, "w") as handle:
        handle.write(_APP_SOURCE.format(version=version, broken=code, slow_import=slow))
    os.replace(temp, path)


# The servers run with this in their environment: CPython validates a cached .pyc
# by the source's mtime in whole seconds and its size, so a module rewritten
# twice within a second at the same size could be imported stale from
# __pycache__. Deploys seconds apart are safe anyway; this rules it out.
SERVER_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}
