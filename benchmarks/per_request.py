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
    python benchmarks/per_request.py --breakdown         # where a compiled request's go
    python benchmarks/per_request.py --clients 8 --builds compiled   # responses held in batches

``--breakdown`` counts the compiled build's steps of a request one by one,
each run in a loop without a socket (parsing, the environ, the exchange, the
response head, the application's run), against the whole round trip: what
is left is the I/O, the event loop, greenlet switches and the client.
(Callgrind's per-function totals cannot be read across greenlet switches,
so the steps are measured apart instead.)

``--clients C`` runs C clients at once, each on its own connection: every
pass of the loop then finds C connections ready, as a loaded shard does, and
their responses are held and sent by one flush of the outbox (in revisions
that have it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"


def _hot_path() -> SimpleNamespace:
    """The per-request classes, wherever the measured revision keeps them
    (``gshard/http/`` since the layout split; flat before)."""
    import gshard

    root = Path(gshard.__file__).parent
    prefix = "gshard.http." if (root / "http").is_dir() else "gshard."
    found = {module: importlib.import_module(prefix + module)
             for module in ("connection", "exchange", "protocol", "response", "wsgi")}
    extra = {}
    if (root / "http" / "context.py").exists() or (root / "context.py").exists():
        found["context"] = importlib.import_module(prefix + "context")
    else:  # revisions before the connection was split (eebd8c7 and older)
        found["context"] = found["connection"]
        extra = {"access": importlib.import_module("gshard.log").AccessLogger()}
    return SimpleNamespace(extra=extra, **found)


def serve(count: int, clients: int = 1) -> None:
    """The measured program: ``count`` round trips after a warm-up of 200, from
    ``clients`` clients at once (each on its own connection, in turn)."""
    import gevent
    from gevent import socket as gsocket

    hot = _hot_path()
    Lifecycle, ServeContext = hot.context.Lifecycle, hot.context.ServeContext

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, World!"]

    extra = dict(hot.extra)
    if clients > 1 and hasattr(hot.connection, "Outbox"):  # batching, where the tree has it
        extra["outbox"] = hot.connection.Outbox(gevent.get_hub().loop)
    ctx = ServeContext(app=app, base_environ=hot.wsgi.base_environ("localhost", "80", "http", True),
                       limits=hot.protocol.Limits(), keepalive=2.0, header_timeout=2.0,
                       body_timeout=2.0, lifecycle=Lifecycle(), **extra)

    def client(sock: gsocket.socket, rounds: int) -> None:
        for _ in range(rounds):
            sock.sendall(REQUEST)
            sock.recv(65536)

    talking = []
    for _ in range(clients):
        server, near = gsocket.socketpair()
        gevent.spawn(hot.connection.Connection(server, ("127.0.0.1", "1"), ctx).serve)
        talking.append(gevent.spawn(client, near, (200 + count) // clients))
    gevent.joinall(talking)


def _valgrind(tool: str, env: dict[str, str], *program: str) -> int:
    """The total the tool reports for this script run with ``program``'s arguments."""
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "out")
        args = ["valgrind", f"--tool={tool}"]
        args += [f"--callgrind-out-file={out}"] if tool == "callgrind" else ["--leak-check=no"]
        done = subprocess.run([*args, sys.executable, __file__, *program],
                              capture_output=True, text=True, env=env, cwd=scratch, check=True)
        if tool == "callgrind":
            return int(re.search(r"Collected : (\d+)", done.stderr).group(1))
        return int(re.search(r"total heap usage: ([\d,]+) allocs", done.stderr)
                   .group(1).replace(",", ""))


def _per_run(tool: str, env: dict[str, str], count: int, *program: str) -> float:
    """The tool's count for one run of the loop ``program`` repeats ``count`` times:
    the difference of 2N and N runs over N, so start-up is left out."""
    return (_valgrind(tool, env, *program, str(2 * count))
            - _valgrind(tool, env, *program, str(count))) / count


# The steps of one request, run on their own without a socket (``--step``),
# in the order a request meets them; indented ones are part of the one above.
STEPS = {
    "parse": "parsing the request head (ServerConnection: receive_data, next_event)",
    "exchange": "Exchange(): the per-request record, environ included",
    "environ": "  of which the environ",
    "run": "Exchange.run(): application, start_response, head, body (send discarded)",
    "head": "  of which the response head and its framing (ResponseWriter.head)",
    "cycle": "all of the above, and freeing them: one request without I/O",
}
# What a step needs run before each of its runs; its count is taken out of the step's.
SETUP = {"head": ("parse",), "run": ("parse", "exchange")}


def step(name: str, count: int) -> None:
    """The measured program for ``--step NAME --serve N``: N runs of one step after 200."""
    hot = _hot_path()
    Lifecycle, ServeContext = hot.context.Lifecycle, hot.context.ServeContext
    Exchange, ResponseWriter = hot.exchange.Exchange, hot.response.ResponseWriter
    Limits, ServerConnection, State = (hot.protocol.Limits, hot.protocol.ServerConnection,
                                       hot.protocol.State)
    EMPTY_INPUT, base_environ, make_environ = (hot.wsgi.EMPTY_INPUT, hot.wsgi.base_environ,
                                               hot.wsgi.make_environ)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, World!"]

    class Discard:
        sends_files = False

        def send(self, data: bytes) -> None:
            pass

        send_response = send  # a whole response (held for a batch by the real connection)

    ctx = ServeContext(app=app, base_environ=base_environ("localhost", "80", "http", True),
                       limits=Limits(), keepalive=2.0, header_timeout=2.0, body_timeout=2.0,
                       lifecycle=Lifecycle())
    remote, transport = ("127.0.0.1", "1"), Discard()
    proto = ServerConnection(ctx.limits)

    def parse():
        if proto.state is State.DONE:
            proto.start_next_cycle()
        proto.receive_data(REQUEST)
        return proto.next_event()

    request = parse()
    steps = {
        "parse": parse,
        "environ": lambda: make_environ(request, ctx.base_environ, EMPTY_INPUT, remote),
        "exchange": lambda: Exchange(ctx, proto, request, remote, None, transport),
        "head": lambda: ResponseWriter(proto).head(
            "200 OK", [("Content-Type", "text/plain")], None, body_length=13),
        "run": lambda: Exchange(ctx, proto, request, remote, None, transport).run(),
        "cycle": lambda: Exchange(ctx, proto, parse(), remote, None, transport).run(),
    }
    # The parser keeps its state between runs: the steps that answer a request
    # (head, run) get a freshly parsed one each time, as their first response.
    fresh = "parse" in SETUP.get(name, ())
    run = steps[name]
    for _ in range(200 + count):
        if fresh:
            parse()
        run()


def breakdown(tree: Path, count: int) -> None:
    """Print the compiled build's instructions per request, by step."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    env.pop("GSHARD_PURE_PYTHON", None)
    whole = _per_run("callgrind", env, count, "--serve")
    counted = {name: _per_run("callgrind", env, count, "--step", name, "--serve")
               for name in STEPS}
    print(f"| step, compiled build ({tree}) | instructions | share of the round trip |")
    print("| --- | ---: | ---: |")
    for name, label in STEPS.items():
        value = counted[name] - sum(counted[before] for before in SETUP.get(name, ()))
        print(f"| {label} | {value:,.0f} | {value / whole:.0%} |")
    io = whole - counted["cycle"]
    print(f"| the rest: recv, send, waiting through the loop, switching greenlets, "
          f"the connection loop, the client's side | {io:,.0f} | {io / whole:.0%} |")
    print(f"| one keep-alive round trip (the default measurement) | {whole:,.0f} | 100% |")


def measure(tree: Path, pure: bool, count: int, clients: int = 1) -> tuple[float, float]:
    """(instructions, allocations) per request for the gshard in ``tree``."""
    # A fixed hash seed: dict layouts, and so the counts, repeat from run to run.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"}
    env.pop("GSHARD_PURE_PYTHON", None)
    if pure:
        env["GSHARD_PURE_PYTHON"] = "1"
    program = ("--clients", str(clients), "--serve")
    return _per_run("callgrind", env, count, *program), _per_run("memcheck", env, count, *program)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=1, metavar="C",
                        help="clients at once, each on its own connection (default: 1); "
                             "with more than one, a pass of the loop finds several "
                             "connections ready and their responses are held for one flush")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, action="append",
                        help="a gshard checkout to measure (default: this one); repeatable")
    parser.add_argument("--requests", type=int, default=1000, metavar="N")
    parser.add_argument("--builds", default="compiled,pure",
                        help="which builds to count, comma-separated (default: %(default)s)")
    parser.add_argument("--breakdown", action="store_true",
                        help="instructions per request by step, compiled build")
    args = parser.parse_args()
    if args.step is not None:
        step(args.step, args.serve)
        return
    if args.serve is not None:
        serve(args.serve, args.clients)
        return
    if args.breakdown:
        for tree in args.tree or [HERE.parent]:
            breakdown(tree, args.requests)
        return
    print("| gshard | build | instructions per request | allocations per request |")
    print("| --- | --- | ---: | ---: |")
    for tree in args.tree or [HERE.parent]:
        for pure in [b == "pure" for b in args.builds.split(",") if b in ("compiled", "pure")]:
            instructions, allocations = measure(tree, pure, args.requests, args.clients)
            build = subprocess.run(
                [sys.executable, "-m", "gshard", "--version"], capture_output=True, text=True,
                env={**os.environ, "PYTHONPATH": str(tree),
                     **({"GSHARD_PURE_PYTHON": "1"} if pure else {})}, cwd=tempfile.gettempdir(),
            ).stdout.strip()
            print(f"| {tree} | {build} | {instructions:,.0f} | {allocations:,.1f} |", flush=True)


if __name__ == "__main__":
    main()
