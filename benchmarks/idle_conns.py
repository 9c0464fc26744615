"""Hold N idle keep-alive connections to a server while something else loads it.

Run by run.py as a separate process (so its file descriptors do not count
against wrk's or the orchestrator's). Each connection makes one GET request
and reads the response, so the server has really served it and now waits for
the next request on it: the state of a keep-alive client between requests.

Protocol on stdin/stdout: prints ``OPEN <ok> <failed>`` once opened; each
``check`` line read is answered with ``ALIVE <n>`` (connections the server
has not closed); EOF on stdin closes everything. SIGALRM after
``--max-seconds`` bounds its life even if the parent vanishes.
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import sys

BATCH = 200


def _read_response(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed inside the response")
        body += chunk


def open_connections(port: int, count: int) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections in batches: connect all, send all, then read all."""
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    held: list[socket.socket] = []
    failed = 0
    for start in range(0, count, BATCH):
        batch = []
        for _ in range(min(BATCH, count - start)):
            sock = socket.socket()
            sock.settimeout(10)
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(request)
                batch.append(sock)
            except OSError:
                sock.close()
                failed += 1
        for sock in batch:
            try:
                _read_response(sock)
                held.append(sock)
            except (OSError, ValueError):
                sock.close()
                failed += 1
    return held, failed


def alive(held: list[socket.socket]) -> int:
    """How many connections are still open: a closed one polls readable with EOF."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in held}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed = 0
    for fd, _ in poller.poll(0):
        try:
            if by_fd[fd].recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return len(held) - closed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="server port on 127.0.0.1")
    parser.add_argument("--count", type=int, default=10_000, help="connections to hold")
    parser.add_argument("--max-seconds", type=int, default=300, help="hard limit on lifetime")
    args = parser.parse_args()
    signal.alarm(args.max_seconds)
    held, failed = open_connections(args.port, args.count)
    print(f"OPEN {len(held)} {failed}", flush=True)
    for line in sys.stdin:
        if line.strip() == "check":
            print(f"ALIVE {alive(held)}", flush=True)
    for sock in held:
        sock.close()


if __name__ == "__main__":
    main()
