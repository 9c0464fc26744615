"""A real deployment end to end: examples/pg_app.py on PostgreSQL with examples/gunicorn.conf.py.

gshard runs in the examples folder with no ``-c``, so it finds the config
file as gunicorn would, and the config's hooks do the work: ``post_fork``
makes psycopg2 cooperative (psycogreen), ``post_worker_init`` connects each
shard's pool, ``worker_exit`` closes it. The database is a real PostgreSQL
server (``tests/integration/postgres.py``); each pooled connection's
``application_name`` names its shard's pid, so ``pg_stat_activity`` shows
which shard holds what.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest

from tests.support.postgres import Postgres, running_postgres

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APP = "pg_app:app"
SHARDS = 2
POOL_SIZE = 10
BURST = 200  # concurrent requests, each a 50 ms query
RELOADS = 4
LOAD_CLIENTS = BURST  # looping, during the reloads
REQUEST_TIMEOUT = 20.0
SESSIONS_SETTLE = 5.0  # a closed session leaves pg_stat_activity when its backend has exited


@pytest.fixture(scope="module")
def database() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


def _env(database: Postgres) -> dict[str, str]:
    return {"DATABASE_URL": database.dsn, "DATABASE_POOL_SIZE": str(POOL_SIZE),
            "PYTHONDONTWRITEBYTECODE": "1"}


def _query(database: Postgres, sql: str) -> list[tuple]:
    conn = psycopg2.connect(database.dsn, application_name="test observer")
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        conn.close()


def _app_sessions(database: Postgres) -> dict[int, int]:
    """Sessions of pg_app per shard pid, from pg_stat_activity."""
    rows = _query(database, "SELECT application_name, count(*) FROM pg_stat_activity"
                            " WHERE application_name LIKE 'pg_app pid %' GROUP BY 1")
    return {int(name.rsplit(" ", 1)[1]): count for name, count in rows}


def _wait_sessions(database: Postgres, expected: dict[int, int]) -> None:
    """Until pg_app's sessions are exactly ``expected``; fails with what they were."""
    deadline = time.monotonic() + SESSIONS_SETTLE
    while (sessions := _app_sessions(database)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"pg_app sessions per pid {sessions}, expected {expected}")
        time.sleep(0.05)


@dataclass
class Outcome:
    error: str | None = None
    pid: int | None = None


def _get(port: int, path: str) -> Outcome:
    """One request on its own connection; a 200 with the shard's JSON, or why not."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return Outcome(f"status {response.status}: {body[:200]!r}")
        return Outcome(pid=json.loads(body)["shard_pid"])
    except Exception as exc:
        return Outcome(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


class PeakQueries:
    """Samples pg_stat_activity while it runs: the most pg_sleep queries seen at once."""

    def __init__(self, database: Postgres) -> None:
        self.database = database
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        conn = psycopg2.connect(self.database.dsn, application_name="test observer")
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                while not self._stop.wait(0.005):
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                                   " AND query = 'SELECT pg_sleep(0.05)'")
                    self.peak = max(self.peak, cursor.fetchone()[0])
        finally:
            conn.close()

    def __enter__(self) -> PeakQueries:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _burst(port: int, database: Postgres) -> tuple[float, int, list[Outcome]]:
    """BURST requests to /slow at once: seconds until all answered, peak queries, outcomes."""
    outcomes: list[Outcome] = []
    start = threading.Barrier(BURST + 1)

    def client() -> None:
        start.wait(timeout=30)
        outcomes.append(_get(port, "/slow"))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(BURST)]
    for thread in threads:
        thread.start()
    with PeakQueries(database) as peak:
        start.wait(timeout=30)
        began = time.monotonic()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT + 10)
        elapsed = time.monotonic() - began
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"
    return elapsed, peak.peak, outcomes


def _failures(outcomes: list[Outcome]) -> Counter:
    return Counter(o.error for o in outcomes if o.error is not None)


@pytest.mark.timeout(120)
def test_psycogreen_hook_lets_a_shard_wait_on_many_queries(database, gshard_proc, tmp_path,
                                                           capsys):
    # Without the config file (so without its hooks, as under a server that
    # ignores them), each query blocks its whole shard.
    plain = gshard_proc(APP, "--shards", str(SHARDS), "--chdir", str(EXAMPLES),
                        cwd=tmp_path, env=_env(database))
    blocking_seconds, blocking_peak, outcomes = _burst(plain.port, database)
    assert not _failures(outcomes), _failures(outcomes)
    assert plain.stop() == 0

    hooked = gshard_proc(APP, "--shards", str(SHARDS), cwd=EXAMPLES, env=_env(database))
    # post_worker_init connected each shard's whole pool before it served.
    _wait_sessions(database, {pid: POOL_SIZE for pid in hooked.shard_pids()})
    hooked_seconds, hooked_peak, outcomes = _burst(hooked.port, database)
    assert not _failures(outcomes), _failures(outcomes)
    assert len({o.pid for o in outcomes}) == SHARDS

    with capsys.disabled():
        print(f"\n{BURST} concurrent 50 ms queries on {SHARDS} shards: "
              f"{blocking_seconds:.2f}s without the hooks (at most {blocking_peak} at once), "
              f"{hooked_seconds:.2f}s with them (up to {hooked_peak} at once)")
    # A blocked shard runs one query at a time; a cooperative one fills its pool.
    assert blocking_peak <= SHARDS
    assert hooked_peak > SHARDS
    assert hooked_seconds * 3 < blocking_seconds, (hooked_seconds, blocking_seconds)


@dataclass
class Clients:
    """Client threads requesting /slow in a loop, each bounded in time and count."""

    port: int
    count: int = LOAD_CLIENTS
    max_seconds: float = 90.0
    max_requests: int = 5_000  # per thread
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self.outcomes.append(_get(self.port, "/slow"))

    def wait_for_more(self, count: int, timeout: float = 20.0) -> None:
        """Until ``count`` more requests have been answered (or failed)."""
        target = len(self.outcomes) + count
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < target:
            assert time.monotonic() < deadline, f"fewer than {count} requests in {timeout}s"
            time.sleep(0.05)

    def __enter__(self) -> Clients:
        self._threads = [threading.Thread(target=self._loop, daemon=True)
                         for _ in range(self.count)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)
        assert not any(t.is_alive() for t in self._threads), "a client thread did not stop"


def _wait_drained(server, old: list[int], timeout: float = 30.0) -> list[int]:
    """Until the manager has reaped every shard in ``old``; its shards then."""
    deadline = time.monotonic() + timeout
    while set(current := server.shard_pids()) & set(old):
        assert time.monotonic() < deadline, f"old shards {old} still there: {current}"
        time.sleep(0.02)
    return current


@pytest.mark.timeout(180)
def test_reloads_under_load_lose_nothing_and_leave_no_session(database, gshard_proc, capsys):
    server = gshard_proc(APP, "--shards", str(SHARDS), cwd=EXAMPLES, env=_env(database))
    generations = [server.shard_pids()]
    _wait_sessions(database, {pid: POOL_SIZE for pid in generations[0]})
    with Clients(server.port) as clients:
        for _ in range(RELOADS):
            old = generations[-1]
            mark = len(server.stderr.lines)
            server.signal(signal.SIGHUP)
            server.stderr.wait_for(r"Generation \d+ is serving", 30, start=mark)
            current = _wait_drained(server, old)
            generations.append(current)
            # Only the serving generation holds sessions, each shard its whole pool.
            _wait_sessions(database, {pid: POOL_SIZE for pid in current})
            clients.wait_for_more(200)  # the new generation serves before the next reload
    outcomes = clients.outcomes
    assert not _failures(outcomes), _failures(outcomes)
    served_by = Counter(o.pid for o in outcomes)
    with capsys.disabled():
        print(f"\n{RELOADS} reloads under {LOAD_CLIENTS} looping clients: {len(outcomes)} "
              f"requests, {sum(_failures(outcomes).values())} failed; per generation "
              f"{[sum(served_by[pid] for pid in pids) for pids in generations]}")
    for number, pids in enumerate(generations, start=1):
        assert any(served_by[pid] for pid in pids), f"generation {number} served nothing"
    assert server.stop() == 0
    # worker_exit closed the last generation's pools.
    _wait_sessions(database, {})
