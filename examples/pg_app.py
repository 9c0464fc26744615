"""A Flask app on PostgreSQL, deployed with the gunicorn.conf.py beside it.

    cd examples
    DATABASE_URL=postgresql://app@127.0.0.1/app gshard pg_app:app   # or: gunicorn pg_app:app

gshard (like gunicorn) reads ``./gunicorn.conf.py`` by itself. Its hooks do
what a gevent deployment's do: ``post_fork`` makes psycopg2 cooperative with
psycogreen, so a query waiting on the database lets the shard's other
requests run; ``post_worker_init`` connects this shard's pool before it
takes traffic; ``worker_exit`` closes it. Without them every query blocks its
whole shard: 200 requests of 50 ms on 2 shards take 100 x 50 ms = 5 s, and
about 0.6 s with them (``tests/integration/test_postgres_app.py`` measures
both).

Each connection carries ``application_name`` = ``pg_app pid PID``, so
``pg_stat_activity`` tells which shard holds it.
"""

from __future__ import annotations

import contextlib
import os
import queue
from collections.abc import Iterator

import psycopg2
from flask import Flask, jsonify


class Pool:
    """A fixed number of connections shared by the requests of one process.

    Borrowing waits (a greenlet yields) while every connection is in use, where
    psycopg2's own pools raise instead. A slot holds None until it is first
    used, so the app also works when nothing warms the pool, and a connection
    found broken is replaced at its next use.
    """

    def __init__(self, dsn: str, size: int, wait: float = 10.0) -> None:
        self.dsn = dsn
        self.size = size
        self.wait = wait
        self._idle: queue.LifoQueue = queue.LifoQueue()
        for _ in range(size):
            self._idle.put(None)

    def _connect(self):
        return psycopg2.connect(self.dsn, application_name=f"pg_app pid {os.getpid()}")

    def _take_all(self) -> list:
        return [self._idle.get_nowait() for _ in range(self._idle.qsize())]

    def warm(self) -> None:
        """Connect every idle slot now, so the first requests do not wait for it."""
        slots = self._take_all()
        try:
            for index, conn in enumerate(slots):
                if conn is None:
                    slots[index] = self._connect()
        finally:
            for conn in slots:
                self._idle.put(conn)

    def close(self) -> None:
        """Disconnect the idle connections, so the server ends their sessions at once."""
        for conn in self._take_all():
            if conn is not None:
                conn.close()
            self._idle.put(None)

    @contextlib.contextmanager
    def connection(self) -> Iterator:
        """A connection inside a transaction: committed on success, rolled back on error."""
        conn = self._idle.get(timeout=self.wait)
        try:
            if conn is None or conn.closed:
                conn = None  # if connecting fails, the slot stays empty
                conn = self._connect()
            with conn:
                yield conn
        finally:
            self._idle.put(conn if conn is not None and not conn.closed else None)


pool = Pool(os.environ["DATABASE_URL"], size=int(os.environ.get("DATABASE_POOL_SIZE", "10")))
app = Flask(__name__)


@app.get("/")
def index():
    with pool.connection() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT version()")
        (version,) = cursor.fetchone()
    return jsonify(database=version, shard_pid=os.getpid())


@app.get("/slow")
def slow():
    """A 50 ms query: the database, not Python, does the waiting."""
    with pool.connection() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.05)")
    return jsonify(slept=0.05, shard_pid=os.getpid())
