"""Run wrk with a bounded duration and turn its text output into numbers.

wrk is used rather than a Python load generator because a Python client on a
2-core machine would be slower than the servers it measures. ``--latency`` is
always passed so p50/p99 come from wrk's own histogram.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class WrkResult:
    """What one wrk run measured; latencies in milliseconds."""

    requests_per_sec: float
    requests: int
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int
    pids: dict[str, int] = field(default_factory=dict)  # from lua/count_pids.lua

    @property
    def errors(self) -> int:
        """Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses."""
        return self.socket_errors + self.non_2xx


def _millis(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
    return float(number) * _UNITS[unit]


def parse(output: str) -> WrkResult:
    """Parse wrk's report; raises ValueError if it has no Requests/sec line."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    percentiles = {
        int(p): _millis(value)
        for p, value in re.findall(r"^\s+(50|99)%\s+([\d.]+[a-z]+)", output, re.M)
    }
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests_per_sec=float(rps.group(1)),
        requests=int(total.group(1)) if total else 0,
        p50_ms=percentiles.get(50, float("nan")),
        p99_ms=percentiles.get(99, float("nan")),
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        pids={pid: int(n) for pid, n in re.findall(r"^PID (\S+) (\d+)$", output, re.M)},
    )


def run(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    headers: tuple[str, ...] = (),
    script: Path | None = None,
    timeout: float = 10.0,
    raw_path: Path | None = None,
) -> WrkResult:
    """One wrk run against ``url`` (127.0.0.1 only), killed if it overstays its duration."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load goes to 127.0.0.1 only, not {url}")
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s",
               f"--timeout={timeout:g}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=duration + timeout + 30)
    output = done.stdout + done.stderr
    if raw_path is not None:
        raw_path.write_text(" ".join(command) + "\n\n" + output)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {' '.join(command)}\n{output}")
    return parse(output)
