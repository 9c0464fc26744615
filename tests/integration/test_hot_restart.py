"""Hot restart under load: reloads lose no request, a broken deploy changes nothing.

The application is deployed into ``tmp_path`` (a module whose ``VERSION`` the
test rewrites before each ``gshard reload``), and three kinds of clients run
through the whole sequence (see ``loadgen``): fresh connections, keep-alive
connections and 1.5 s requests. Every request must succeed, and soon after
each reload only the new generation answers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.support.loadgen import (
    APP,
    Load,
    Result,
    deploy,
)
from tests.support.processes import process_title, wait_until

# After a reload returns, the old generation may still answer what it had in
# flight (a /slow request takes 1.5 s); from then on only the new one answers.
SWITCH_SECONDS = 3.0
RELOADS = 4

pytestmark = pytest.mark.usefixtures("no_request_migration")


def _reload(pidfile) -> tuple[subprocess.CompletedProcess, float, float]:
    """``gshard reload --pid FILE``: its result, and when it started and returned."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "gshard", "reload", "--pid", str(pidfile), "--timeout", "30"],
        capture_output=True, text=True, timeout=45,
    )
    return result, started, time.monotonic()


def _start(deployed_gshard, tmp_path):
    pidfile = tmp_path / "g.pid"
    server = deployed_gshard("--shards", "2", "--pid", str(pidfile), "--graceful-timeout", "10")
    return server, pidfile


def _version_index(result: Result) -> int:
    return int(result.version.lstrip("v"))


def _check_switch(results: list[Result], version: str, served_from: float,
                  until: float | None) -> int:
    """From ``served_from`` on, nothing older than ``version`` answers; until ``until``, only it.

    Returns how many requests fell in the window, so a caller can insist it was busy.
    """
    index = int(version.lstrip("v"))
    late = [r for r in results if r.ok and r.started >= served_from]
    older = [r for r in late if _version_index(r) < index]
    assert not older, (
        f"{len(older)} requests started {SWITCH_SECONDS}s after {version} was serving got an "
        f"older version, e.g. {older[:3]}"
    )
    window = [r for r in late if until is None or r.ended < until]
    other = [r for r in window if r.version != version]
    assert not other, f"{len(other)} requests before the next reload got {other[:3]}"
    return len(window)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_four_reloads_under_load_lose_no_request(deployed_gshard, tmp_path):
    server, pidfile = _start(deployed_gshard, tmp_path)
    reloads = []
    with Load(server.port, fresh=24, keepalive=6, slow=4, max_seconds=60) as load:
        time.sleep(1.0)
        for n in range(2, 2 + RELOADS):
            deploy(tmp_path, f"v{n}")
            result, started, ended = _reload(pidfile)
            reloads.append((f"v{n}", result, started, ended))
            assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
            time.sleep(SWITCH_SECONDS + 1.0)
    results = load.snapshot()
    durations = [f"{ended - started:.2f}s" for _, _, started, ended in reloads]
    summary = f"{load.summary(results)}; reload durations {durations}"
    print(summary)

    load.assert_no_failure(summary)
    for kind in ("fresh", "keepalive", "slow"):
        last = max(r.started for r in results if r.kind == kind)
        assert last > reloads[-1][3] + SWITCH_SECONDS, f"the {kind} clients stopped early"
    for i, (version, result, started, ended) in enumerate(reloads):
        assert result.stdout.strip() == (
            f"Generation {i + 2} is serving; generation {i + 1} is draining"
        ), result.stdout
        until = reloads[i + 1][2] if i + 1 < len(reloads) else None
        served = _check_switch(results, version, ended + SWITCH_SECONDS, until)
        assert served >= 100, f"only {served} requests checked after the reload to {version}"
        # /slow requests in flight when the generations switched: all answered (no
        # failure above), some by the draining generation after the switch.
        previous = f"v{i + 1}"
        overlapping = [r for r in results if r.kind == "slow" and r.started < ended
                       and r.ended > started]
        drained = [r for r in overlapping if r.version == previous and r.ended > ended]
        assert drained, (
            f"reload to {version}: no /slow request was finished by the draining generation "
            f"({len(overlapping)} overlapped the reload)"
        )
    assert server.stderr.count(r"Traceback") == 0, server.stderr.text


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_broken_deploy_keeps_the_serving_generation(deployed_gshard, tmp_path):
    server, pidfile = _start(deployed_gshard, tmp_path)
    message = "deploy 3 broke: SETTINGS_URL is not set"
    with Load(server.port, fresh=24, keepalive=6, slow=4, max_seconds=60) as load:
        time.sleep(1.0)
        deploy(tmp_path, "v2")
        ok2, ok2_start, ok2_end = _reload(pidfile)
        assert ok2.returncode == 0, (ok2.stdout, ok2.stderr)
        time.sleep(SWITCH_SECONDS + 0.5)
        serving = sorted(server.shard_pids())

        deploy(tmp_path, "v-broken", broken=message)
        failed, failed_start, failed_end = _reload(pidfile)
        assert failed.returncode == 1, (failed.stdout, failed.stderr)
        assert failed.stdout == ""
        assert f"RuntimeError: {message}" in failed.stderr, failed.stderr
        assert "generation 2 keeps serving" in failed.stderr, failed.stderr
        time.sleep(2.0)
        # The broken generation is gone; the serving shards were left alone.
        wait_until(lambda: sorted(server.shard_pids()) == serving, 5,
                   f"the serving shards {serving} alone")

        deploy(tmp_path, "v3")
        ok3, ok3_start, ok3_end = _reload(pidfile)
        assert ok3.returncode == 0, (ok3.stdout, ok3.stderr)
        assert ok3.stdout.strip() == "Generation 4 is serving; generation 2 is draining"
        time.sleep(SWITCH_SECONDS + 1.0)
    results = load.snapshot()
    summary = (f"{load.summary(results)}; reload durations: v2 {ok2_end - ok2_start:.2f}s, "
               f"broken {failed_end - failed_start:.2f}s, v3 {ok3_end - ok3_start:.2f}s")
    print(summary)

    load.assert_no_failure(summary)
    # v2 answered everything from shortly after its reload until v3's reload began,
    # the broken deploy included.
    served = _check_switch(results, "v2", ok2_end + SWITCH_SECONDS, ok3_start)
    assert served >= 100, served
    assert any(r.started > failed_end for r in results if r.version == "v2")
    served = _check_switch(results, "v3", ok3_end + SWITCH_SECONDS, None)
    assert served >= 100, served
    # The traceback is logged once, though every shard of the generation failed.
    log = server.stderr.text
    assert log.count("Traceback (most recent call last)") == 1, log
    assert len(re.findall(rf"^RuntimeError: {re.escape(message)}$", log, re.M)) == 1, log
    assert server.stderr.count(r"Reload failed, generation 2 keeps serving: .*RuntimeError") \
        == 1


@pytest.mark.timeout(30)
def test_process_titles_name_role_slot_and_generation(deployed_gshard, tmp_path):
    server, pidfile = _start(deployed_gshard, tmp_path)
    assert process_title(server.pid) == f"gshard: manager {APP}"
    titles = sorted(process_title(pid) for pid in server.shard_pids())
    assert titles == [f"gshard: shard 0 gen 1 {APP}", f"gshard: shard 1 gen 1 {APP}"]
    ps = subprocess.run(["ps", "-o", "args=", "-p", str(server.pid)], capture_output=True,
                        text=True, timeout=10)
    assert ps.stdout.strip() == f"gshard: manager {APP}"

    result, _, _ = _reload(pidfile)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: len(server.shard_pids()) == 2, 10, "the first generation to drain")
    titles = sorted(process_title(pid) for pid in server.shard_pids())
    assert titles == [f"gshard: shard 0 gen 2 {APP}", f"gshard: shard 1 gen 2 {APP}"]
    assert process_title(server.pid) == f"gshard: manager {APP}"
