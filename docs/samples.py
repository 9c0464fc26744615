"""Regenerate the status sample the Observing page shows: ``python docs/samples.py``.

Starts a real gshard on a loopback port, sends it some requests, reloads it
once, sends more, and saves ``gshard status --json`` to
``docs/samples/status.json``. The pages never show pasted output: the build
renders this document with the same code ``gshard status`` and ``gshard top``
use (docs/hooks.py), so the sample always looks as the current code prints it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "docs" / "samples" / "status.json"


def requests(port: int, count: int) -> None:
    """``count`` keep-alive GETs over eight connections (spread over the shards by the
    kernel, as any clients are), bounded in count."""
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(8)]
    for number in range(count):
        connection = connections[number % len(connections)]
        connection.request("GET", "/")
        connection.getresponse().read()
    for connection in connections:
        connection.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        pidfile = os.path.join(scratch, "gshard.pid")
        gshard = [sys.executable, "-m", "gshard"]
        server = subprocess.Popen(
            [*gshard, "--chdir", str(ROOT / "examples"), "hello_wsgi:app", "--shards", "2",
             "--bind", "127.0.0.1:0", "--pid", pidfile],
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            port = None
            for line in server.stderr:
                found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
                port = int(found.group(1)) if found else port
                if "Ready:" in line:
                    break
            assert port is not None, "gshard did not start"
            requests(port, 3000)
            subprocess.run([*gshard, "reload", "--pid", pidfile], check=True, timeout=60)
            requests(port, 2000)
            time.sleep(2.5)  # every shard's counts arrive with its next heartbeat
            status = subprocess.run([*gshard, "status", "--json", "--pid", pidfile],
                                    check=True, timeout=30, capture_output=True, text=True)
            SAMPLE.parent.mkdir(exist_ok=True)
            SAMPLE.write_text(json.dumps(json.loads(status.stdout), indent=2) + "\n")
            print(f"wrote {SAMPLE.relative_to(ROOT)}")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
