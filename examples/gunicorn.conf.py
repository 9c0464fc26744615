"""The deployment configuration of pg_app, written for gunicorn's gevent worker.

gshard reads it unchanged (from the current folder, or with ``-c``):

    cd examples && DATABASE_URL=postgresql://app@127.0.0.1/app gshard pg_app:app

The hooks import the database driver inside their bodies: the config file is
also read by the process that forks the workers (gunicorn's arbiter,
gshard's manager), which must hold no connection and load no driver, since
anything it opened would be shared by every child it forks.
"""

import multiprocessing
import os
import sys

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gevent"
worker_connections = 1000
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 100_000
max_requests_jitter = 10_000
proc_name = "pg_app"
loglevel = "info"
errorlog = "-"
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def post_fork(server, worker):
    """Make psycopg2 wait for the database through gevent, before the app is imported.

    psycopg2 is a C extension: gevent's monkey-patching cannot reach its
    sockets, so without this every query blocks the whole worker.
    """
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    server.log.info("Worker %s: psycopg2 is cooperative", worker.pid)


def post_worker_init(worker):
    """Connect this worker's pool before it takes its first request."""
    from pg_app import pool

    pool.warm()
    worker.log.info("Worker %s: %d database connections ready", worker.pid, pool.size)


def worker_exit(server, worker):
    """Say goodbye to the database, so it ends this worker's sessions at once.

    Only if the app was imported: a worker that failed to boot has no pool.
    """
    app_module = sys.modules.get("pg_app")
    if app_module is not None:
        app_module.pool.close()
