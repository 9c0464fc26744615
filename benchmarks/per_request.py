"""What one keep-alive request costs gshard, counted instead of timed.

Runs N plain-hello requests through a ``Connection`` over a socket pair in
one process (client and server greenlets, no network), under valgrind:
callgrind counts instructions and memcheck counts heap allocations (with
``PYTHONMALLOC=malloc``, so every Python allocation is a malloc). The
difference between a run of 2N and a run of N requests, divided by N, is
the cost of one request round trip, start-up excluded. Counts repeat
exactly whatever else the machine is doing, so builds and revisions can be
compared on a busy machine:

    python benchmarks/per_request.py                     # this checkout, compiled and pure
    python benchmarks/per_request.py --tree /path/to/other/checkout
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"


def serve(count: int) -> None:
    """The measured program: ``count`` round trips after a warm-up of 200."""
    import gevent
    from gevent import socket as gsocket

    import gshard
    from gshard.connection import Connection
    from gshard.protocol import Limits
    from gshard.wsgi import base_environ

    if (Path(gshard.__file__).parent / "context.py").exists():
        from gshard.context import Lifecycle, ServeContext
        extra = {}
    else:  # revisions before the connection was split (eebd8c7 and older)
        from gshard.connection import Lifecycle, ServeContext
        from gshard.log import AccessLogger
        extra = {"access": AccessLogger()}

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, World!"]

    server, client = gsocket.socketpair()
    ctx = ServeContext(app=app, base_environ=base_environ("localhost", "80", "http", True),
                       limits=Limits(), keepalive=2.0, header_timeout=2.0, body_timeout=2.0,
                       lifecycle=Lifecycle(), **extra)
    gevent.spawn(Connection(server, ("127.0.0.1", "1"), ctx).serve)
    for _ in range(200 + count):
        client.sendall(REQUEST)
        client.recv(65536)


def _valgrind(tool: str, count: int, env: dict[str, str]) -> int:
    """The total the tool reports for a run of ``count`` requests."""
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "out")
        args = ["valgrind", f"--tool={tool}"]
        args += [f"--callgrind-out-file={out}"] if tool == "callgrind" else ["--leak-check=no"]
        done = subprocess.run([*args, sys.executable, __file__, "--serve", str(count)],
                              capture_output=True, text=True, env=env, cwd=scratch, check=True)
        if tool == "callgrind":
            return int(re.search(r"Collected : (\d+)", done.stderr).group(1))
        return int(re.search(r"total heap usage: ([\d,]+) allocs", done.stderr)
                   .group(1).replace(",", ""))


def measure(tree: Path, pure: bool, count: int) -> tuple[float, float]:
    """(instructions, allocations) per request for the gshard in ``tree``."""
    # A fixed hash seed: dict layouts, and so the counts, repeat from run to run.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"}
    env.pop("GSHARD_PURE_PYTHON", None)
    if pure:
        env["GSHARD_PURE_PYTHON"] = "1"
    instructions = (_valgrind("callgrind", 2 * count, env) - _valgrind("callgrind", count, env))
    allocations = (_valgrind("memcheck", 2 * count, env) - _valgrind("memcheck", count, env))
    return instructions / count, allocations / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, action="append",
                        help="a gshard checkout to measure (default: this one); repeatable")
    parser.add_argument("--requests", type=int, default=1000, metavar="N")
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    print("| gshard | build | instructions per request | allocations per request |")
    print("| --- | --- | ---: | ---: |")
    for tree in args.tree or [HERE.parent]:
        for pure in (False, True):
            instructions, allocations = measure(tree, pure, args.requests)
            build = subprocess.run(
                [sys.executable, "-m", "gshard", "--version"], capture_output=True, text=True,
                env={**os.environ, "PYTHONPATH": str(tree),
                     **({"GSHARD_PURE_PYTHON": "1"} if pure else {})}, cwd=tempfile.gettempdir(),
            ).stdout.strip()
            print(f"| {tree} | {build} | {instructions:,.0f} | {allocations:,.1f} |", flush=True)


if __name__ == "__main__":
    main()
