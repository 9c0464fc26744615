"""A Kubernetes rolling update, played on real parts: gshard pods behind a TCP balancer.

Three gshard processes ("pods") serve behind Debian's nginx with its stream
module, a layer-4 balancer that, like kube-proxy, does not retry a
connection its upstream dropped (``proxy_next_upstream off``). Load runs
through it the whole time: fresh connections, keep-alive connections and
slow requests. Each pod is replaced the way a Deployment with maxSurge 1 and
maxUnavailable 0 replaces it: a new pod starts and joins the balancer only
once its /readyz answers 200; then the old pod is deleted as Kubernetes
deletes one, SIGTERM at once while its endpoint leaves the balancer only
after a propagation delay (a reload of nginx one second later), and no
preStop hook.

With ``--shutdown-delay`` the old pod keeps accepting and serving through
that second (responses with Connection: close move keep-alive clients to the
remaining pods) and drains afterwards: no request fails. Without it the pod
stops accepting at SIGTERM while the balancer still sends it connections,
which wait in its queue until the pod exits and then fail: the test sees
them, so it can fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.loadgen import APP, SERVER_ENV, Load, deploy
from tests.support.nginx import Nginx, free_port, stream_module
from tests.support.processes import Server, wait_until
from tests.support.rawhttp import Closed, fetch

PROPAGATION = 1.0  # from the pod's deletion to the balancer dropping it
SHUTDOWN_DELAY = 3.0  # past the propagation and nginx's reload, with room to spare
REPLACEMENTS = 3
WAIT = 20.0


def stream_config(port: int, pods: list[Server]) -> str:
    servers = "\n".join(f"        server 127.0.0.1:{pod.port};" for pod in pods)
    return f"""
events {{ worker_connections 4096; }}
stream {{
    upstream pods {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_pass pods;
        proxy_next_upstream off;
        proxy_connect_timeout 2s;
    }}
}}
"""


def ready(pod: Server) -> bool:
    """The pod's /readyz answers 200 (what the readiness probe waits for)."""
    try:
        return fetch(pod.metrics_port, "/readyz", timeout=2).status == 200
    except (OSError, Closed):
        return False


@pytest.fixture
def balancer(tmp_path) -> Iterator[Callable[[list[Server]], tuple[Nginx, int]]]:
    started: list[Nginx] = []

    def start(pods: list[Server]) -> tuple[Nginx, int]:
        port = free_port()
        nginx = Nginx(tmp_path / "nginx", stream_config(port, pods), stream_module())
        started.append(nginx)
        return nginx, port

    yield start
    for nginx in started:
        nginx.stop()


def rolling_update(gshard_proc, balancer, app_dir: Path, delay: float) -> Load:
    """Replace three pods under load as Kubernetes does; the load's record."""
    deploy(app_dir, "v1")

    def start_pod() -> Server:
        pod = gshard_proc(APP, "--shards", "1", "--metrics-bind", "127.0.0.1:0",
                          "--shutdown-delay", str(delay), "--graceful-timeout", "10",
                          cwd=app_dir, env=SERVER_ENV, ready=False)
        pod.metrics_port = int(pod.stderr.wait_for(
            r"Metrics at: http://127\.0\.0\.1:(\d+)/", WAIT).group(1))
        pod.wait_ready()
        return pod

    pods = [start_pod() for _ in range(3)]
    nginx, port = balancer(pods)
    old = list(pods)
    load = Load(port, fresh=8, keepalive=8, slow=2, max_seconds=60).start()
    try:
        wait_until(lambda: len(load.served()) >= 200, WAIT, "load through the balancer")
        deploy(app_dir, "v2")
        for _ in range(REPLACEMENTS):
            new = start_pod()
            wait_until(lambda pod=new: ready(pod), WAIT, "the new pod's readiness")
            pods.append(new)
            nginx.reload(stream_config(port, pods))
            leaving = old.pop(0)
            leaving.signal(15)  # SIGTERM at once...
            time.sleep(PROPAGATION)  # ...the endpoint leaves the balancer later
            pods.remove(leaving)
            nginx.reload(stream_config(port, pods))
        for pod in pods[-REPLACEMENTS:]:
            assert ready(pod)
        after = time.monotonic()
        wait_until(lambda: len(load.served(after)) >= 200, WAIT, "load after the update")
    finally:
        load.stop()
    return load


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_rolling_update_without_prestop_loses_nothing_with_a_shutdown_delay(
        gshard_proc, balancer, tmp_path):
    load = rolling_update(gshard_proc, balancer, tmp_path, SHUTDOWN_DELAY)
    print(f"\nrolling update, {REPLACEMENTS} pods replaced, --shutdown-delay "
          f"{SHUTDOWN_DELAY:g}: {load.summary()}")
    load.assert_no_failure()
    versions = {r.version for r in load.served()}
    assert versions == {"v1", "v2"}, load.summary()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_without_a_shutdown_delay_the_same_update_fails_requests(gshard_proc, balancer,
                                                                  tmp_path):
    load = rolling_update(gshard_proc, balancer, tmp_path, 0.0)
    print(f"\nrolling update, {REPLACEMENTS} pods replaced, --shutdown-delay 0: "
          f"{load.summary()}")
    assert load.failures(), load.summary()
