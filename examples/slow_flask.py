"""What greenlets buy: a slow route does not hold a process hostage.

``/slow`` waits 500 ms the way real apps wait (on a database, an API, a sleep).
gshard monkey-patches the standard library before importing this module, so
``time.sleep`` and socket reads yield to other requests instead of blocking.

    gshard --chdir examples slow_flask:app --shards 2 --bind 127.0.0.1:8000
    # 200 requests at once, 500 ms each, 2 processes: about 0.5 s in total
    python examples/slow_flask.py http://127.0.0.1:8000/slow 200

With gunicorn's sync worker and 2 workers the same load takes 100 x 0.5 s = 50 s.
"""

import sys
import time

from flask import Flask

app = Flask(__name__)


@app.get("/slow")
def slow():
    time.sleep(0.5)  # a cooperative wait under gevent
    return "done waiting\n"


@app.get("/")
def fast():
    return "fast\n"


def _measure(url: str, count: int) -> None:
    """Fire ``count`` concurrent requests and report the wall time."""
    from concurrent.futures import ThreadPoolExecutor
    from urllib.request import urlopen

    def fetch(_):
        with urlopen(url, timeout=30) as response:
            return response.status

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        statuses = list(pool.map(fetch, range(count)))
    elapsed = time.perf_counter() - started
    print(f"{statuses.count(200)}/{count} answered 200 in {elapsed:.2f}s")


if __name__ == "__main__":
    _measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100)
