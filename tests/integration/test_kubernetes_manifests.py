"""The Kubernetes kit (examples/deploy/kubernetes) is valid, and agrees with gshard.

No cluster runs here: the core manifests are validated offline against
Kubernetes' own schemas (``kubernetes-validate --strict``), and what they say
about gshard is checked against gshard itself: the container's arguments pass
``gshard --check-config`` and are what a real gshard started with them
listens on, the probes' port is ``--metrics-bind``'s and their paths answer
there, the grace period covers the shutdown delay and the drain, and the
autoscaler's metrics are series gshard exports, through the adapter's rules
and the PodMonitor's port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gshard.cli.arguments import parse_config
from tests.support import dockerfile
from tests.support.paths import REPO
from tests.support.rawhttp import fetch

KIT = REPO / "examples" / "deploy" / "kubernetes"
CORE = ["deployment.yaml", "service.yaml", "poddisruptionbudget.yaml",
        "horizontalpodautoscaler.yaml", "monitoring/prometheus-adapter.yaml"]
WAIT = 15.0


@pytest.fixture
def app_dir(tmp_path) -> Path:
    """The image's application directory (what the Dockerfile copies there), the
    directory the container starts in."""
    _, stages = dockerfile.parse(REPO / "examples" / "deploy" / "Dockerfile")
    (copy,) = stages[-1].all("COPY")
    source, _ = copy.words()
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(REPO / source, app)
    return app


def load(name: str) -> dict:
    return yaml.safe_load((KIT / name).read_text())


def kubernetes_validate() -> str:
    found = shutil.which("kubernetes-validate", path=os.path.dirname(sys.executable)) \
        or shutil.which("kubernetes-validate")
    assert found, "kubernetes-validate is missing: pip install -e '.[test]' installs it"
    return found


def container() -> dict:
    (app,) = load("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return app


def arguments() -> list[str]:
    app = container()
    assert app["command"] == ["gshard"]
    return app["args"]


def test_every_core_manifest_passes_kubernetes_validate_strict(tmp_path):
    validate = kubernetes_validate()
    done = subprocess.run([validate, "--strict", *CORE], cwd=KIT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == len(CORE), done.stdout
    # Strict means strict: a field Kubernetes does not know fails.
    wrong = load("deployment.yaml")
    wrong["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["pathh"] = "/x"
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(wrong))
    done = subprocess.run([validate, "--strict", "wrong.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "pathh" in done.stdout + done.stderr


def test_the_kustomization_lists_the_core_manifests_and_labels_them():
    kustomization = load("kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(
        name for name in CORE if "/" not in name)


def test_the_rollout_and_the_pod_are_shaped_for_a_lossless_rolling_update():
    deployment = load("deployment.yaml")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    app = container()
    assert "lifecycle" not in app  # no preStop hook: --shutdown-delay does its job
    config = parse_config(arguments(), environ={})
    assert config.shutdown_delay > 0
    # The grace period covers the lame duck, the drain and a margin for the exit.
    margin = pod["terminationGracePeriodSeconds"] - config.shutdown_delay \
        - config.graceful_timeout
    assert margin >= 5, margin
    # Shards from the CPU limit, through WEB_CONCURRENCY and the downward API.
    assert "--shards" not in arguments() and "-w" not in arguments()
    (concurrency,) = [e for e in app["env"] if e["name"] == "WEB_CONCURRENCY"]
    assert concurrency["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    limit = int(app["resources"]["limits"]["cpu"])
    assert parse_config(arguments(), environ={"WEB_CONCURRENCY": str(limit)}).shards == limit
    # Non-root, read-only, no capabilities; /tmp the one writable place.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    context = app["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert [m["mountPath"] for m in app["volumeMounts"]] == ["/tmp"]


def test_service_budget_and_autoscaler_select_the_deployments_pods():
    labels = load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in container()["ports"]}
    service = load("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    budget = load("poddisruptionbudget.yaml")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    scaler = load("horizontalpodautoscaler.yaml")
    assert scaler["apiVersion"] == "autoscaling/v2"
    assert scaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": load("deployment.yaml")["metadata"]
                                                ["name"]}
    monitor = load("monitoring/podmonitor.yaml")
    assert monitor["kind"] == "PodMonitor"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert [e["path"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["/metrics"]


def test_the_container_arguments_pass_check_config(app_dir):
    done = subprocess.run([sys.executable, "-m", "gshard", *arguments(), "--check-config"],
                          cwd=app_dir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(60)
def test_probes_and_autoscaler_metrics_are_what_gshard_serves(gshard_proc, app_dir):
    app = container()
    config = parse_config(arguments(), environ={})
    ports = {p["name"]: p["containerPort"] for p in app["ports"]}
    probes = [app[name]["httpGet"] for name in ("startupProbe", "readinessProbe",
                                                "livenessProbe")]
    # Every probe asks the manager's listener, not the application's.
    assert {ports[probe["port"]] for probe in probes} == {config.metrics_bind.port}
    assert config.metrics_bind.port != config.bind[0].port
    assert ports["http"] == config.bind[0].port
    assert [probe["path"] for probe in probes] == ["/readyz", "/readyz", "/livez"]

    # The container's arguments, on loopback ports of this test's own.
    args = list(arguments())
    for flag in ("--bind", "--metrics-bind"):
        args[args.index(flag) + 1] = "127.0.0.1:0"
    server = gshard_proc(*args, cwd=app_dir)
    metrics = int(server.stderr.wait_for(r"Metrics at: http://127\.0\.0\.1:(\d+)/", WAIT)
                  .group(1))
    for probe in probes:
        response = fetch(metrics, probe["path"])
        assert response.status == 200, (probe, response.body)
    response = fetch(metrics, "/metrics")
    assert response.status == 200
    exposition = response.body.decode()
    series = {line.split("{")[0].split(" ")[0] for line in exposition.splitlines()
              if line and not line.startswith("#")}

    # The autoscaler's metrics are the adapter's names for series gshard exports.
    rules = yaml.safe_load(load("monitoring/prometheus-adapter.yaml")["data"]["config.yaml"])
    served = {}
    for rule in rules["rules"]:
        name = rule["seriesQuery"].split("{")[0].strip("'")
        assert name in series, (name, sorted(series))
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        served[rule["name"]["as"]] = name
    scaled_on = [m["pods"]["metric"]["name"]
                 for m in load("horizontalpodautoscaler.yaml")["spec"]["metrics"]]
    assert scaled_on and set(scaled_on) <= set(served), (scaled_on, served)
    assert "gshard_accept_queue" in scaled_on


def test_the_kit_has_no_manifest_the_tests_do_not_know():
    on_disk = sorted(str(p.relative_to(KIT)) for p in Path(KIT).rglob("*.yaml"))
    assert on_disk == sorted([*CORE, "kustomization.yaml", "monitoring/podmonitor.yaml"])
