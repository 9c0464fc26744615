"""Total PSS of a gshard serving an application that allocates 200 MiB at import,
with and without --preload: ``python benchmarks/preload_memory.py [--shards 4]``.

PSS (proportional set size, ``/proc/PID/smaps_rollup``) charges each shared
page to its sharers in equal parts, so the sum over the manager, the
template and the shards is the memory the whole server really costs. Two
applications: one whose 200 MiB is a single bytearray (a buffer nothing
writes to again: it stays shared), one whose 200 MiB is a list of small
objects (each read touches a reference count, so pages a shard reads are
copied into it: only what no request touches stays shared).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

APPS = {
    "bytearray": 'BLOB = bytearray(b"\\x01") * (200 * 1024 * 1024)\n'
                 'def touch():\n    return BLOB[-1]\n',
    # ~200 MiB of small objects: 3.2 million 2-tuples of a fresh int and a float;
    # a request reads one tuple in a thousand, then a full collection runs.
    "objects": 'import gc\nBLOB = [(i * 7919, float(i)) for i in range(3_200_000)]\n'
               'def touch():\n    gc.collect()\n    return sum(x for x, _ in BLOB[::1000])\n',
}
APP_TAIL = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(touch()).encode()]
'''


def _tree(pid: int) -> list[int]:
    found = [pid]
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        for child in handle.read().split():
            found += _tree(int(child))
    return found


def _pss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        return int(re.search(r"^Pss:\s+(\d+) kB", handle.read(), re.M).group(1)) / 1024


def measure(directory: str, kind: str, shards: int, preload: bool) -> list[float]:
    args = [sys.executable, "-m", "gshard", f"app_{kind}:app", "--shards", str(shards),
            "--bind", "127.0.0.1:0", "--timeout", "120", "--boot-timeout", "120"]
    if preload:
        args.append("--preload")
    proc = subprocess.Popen(args, cwd=directory, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        port, lines = None, []
        for line in proc.stderr:
            lines.append(line)
            if match := re.search(r"Listening at: http://127.0.0.1:(\d+)", line):
                port = int(match.group(1))
            if "Ready:" in line:
                break
        else:
            raise RuntimeError("gshard exited before it was ready:\n" + "".join(lines))
        for _ in range(200):  # every shard answers a few requests (touching the data)
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read()
        time.sleep(1.0)
        return [_pss_mib(pid) for pid in _tree(proc.pid)]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for kind, source in APPS.items():
            with open(os.path.join(directory, f"app_{kind}.py"), "w") as handle:
                handle.write(source + APP_TAIL)
        for kind in APPS:
            for preload in (False, True):
                pss = measure(directory, kind, args.shards, preload)
                label = "--preload" if preload else "forked   "
                print(f"{kind:9} {label}: total PSS {sum(pss):7.1f} MiB over {len(pss)} "
                      f"processes ({', '.join(f'{p:.0f}' for p in pss)})", flush=True)


if __name__ == "__main__":
    main()
