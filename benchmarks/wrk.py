"""Run wrk with a bounded duration and turn its text output into numbers.

wrk is used rather than a Python load generator because a Python client on a
2-core machine would be slower than the servers it measures. ``--latency`` is
always passed, and lua/percentiles.lua is appended to every run's script so
p50/p99/p99.9 come from wrk's own histogram (its text report stops at p99).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PERCENTILES_LUA = Path(__file__).resolve().parent / "lua" / "percentiles.lua"


@dataclass
class WrkResult:
    """What one wrk run measured; latencies in milliseconds."""

    requests_per_sec: float
    requests: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    socket_errors: int
    non_2xx: int
    pids: dict[str, int] = field(default_factory=dict)  # from lua/count_pids.lua

    @property
    def errors(self) -> int:
        """Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses."""
        return self.socket_errors + self.non_2xx


def parse(output: str) -> WrkResult:
    """Parse wrk's report; raises ValueError if it has no Requests/sec line."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    requests = int(total.group(1)) if total else 0
    # An empty histogram reports 0 for every percentile: no latency was measured.
    percentiles = {p: int(us) / 1000 for p, us in re.findall(r"^PERCENTILE (\S+) (\d+)$",
                                                            output, re.M) if requests}
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests_per_sec=float(rps.group(1)),
        requests=requests,
        p50_ms=percentiles.get("50", float("nan")),
        p99_ms=percentiles.get("99", float("nan")),
        p999_ms=percentiles.get("99.9", float("nan")),
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
    cpus: str | None = None,
) -> WrkResult:
    """One wrk run against ``url`` (127.0.0.1 only), killed if it overstays its duration;
    with ``cpus``, pinned there by taskset."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load goes to 127.0.0.1 only, not {url}")
    command = ["taskset", "-c", cpus] if cpus else []
    command += ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s",
               f"--timeout={timeout:g}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    lua = (script.read_text() + "\n" if script is not None else "") + PERCENTILES_LUA.read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as combined:
        combined.write(lua)
        combined.flush()
        command += ["-s", combined.name, url]
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=duration + timeout + 30)
    output = done.stdout + done.stderr
    if raw_path is not None:
        raw_path.write_text(" ".join(command) + "\n\n" + output)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {' '.join(command)}\n{output}")
    return parse(output)
