"""The systemd units and the nginx site in examples/deploy, checked by their own tools.

The units are verified by ``systemd-analyze verify`` (Debian's systemd),
with ExecStart pointing at this machine's gshard instead of /srv/app's, and
their sandbox rated by ``systemd-analyze security --offline``. The nginx
site runs in a real nginx in front of a real gshard on a unix socket, with
keep-alive connections upstream, while gshard is hot-reloaded four times
under load: no request may fail.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.loadgen import Load, deploy
from tests.support.nginx import Nginx, free_port
from tests.support.paths import REPO

UNITS = REPO / "examples" / "deploy" / "systemd"
SITE = REPO / "examples" / "deploy" / "nginx" / "gshard-app.conf"
WAIT = 20.0
RELOADS = 4


@pytest.fixture
def units(tmp_path) -> Path:
    """The units as installed on this machine: gshard is this test run's."""
    gshard = Path(sys.executable).with_name("gshard")
    assert gshard.exists(), gshard
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/srv/app/.venv/bin/gshard", str(gshard))
        (tmp_path / unit.name).write_text(text)
    return tmp_path


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing (.ci/run installs systemd)"
    return found


def test_the_units_pass_systemd_analyze_verify(units):
    names = sorted(p.name for p in units.iterdir())
    assert names == ["gshard-app.service", "gshard-app.socket"]
    done = subprocess.run([systemd_analyze(), "verify", "--man=no", *names], cwd=units,
                          capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values too, warning about them: a clean
    # run says nothing at all.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    (units / "broken.service").write_text(
        (units / "gshard-app.service").read_text().replace("Type=notify", "Type=notifyy"))
    done = subprocess.run([systemd_analyze(), "verify", "--man=no", "broken.service"],
                          cwd=units, capture_output=True, text=True, timeout=60)
    assert "Failed to parse service type" in done.stderr


def test_the_service_is_type_notify_and_sandboxed(units):
    service = (units / "gshard-app.service").read_text()
    assert re.search(r"^Type=notify$", service, re.M)
    assert re.search(r"^ExecReload=\S+gshard reload ", service, re.M)
    done = subprocess.run([systemd_analyze(), "security", "--offline=yes", "--no-pager",
                           "gshard-app.service"], cwd=units, capture_output=True, text=True,
                          timeout=60)
    found = re.search(r"Overall exposure level for gshard-app.service: ([\d.]+) (\w+)",
                      done.stdout)
    assert found, done.stdout + done.stderr
    print(f"\nsystemd-analyze security: {found.group(1)} {found.group(2)}")
    assert float(found.group(1)) < 4.0, done.stdout  # "OK" or better, by systemd's scale


def site_config(folder: Path, port: int, socket_path: str) -> str:
    """The site as shipped, on a loopback port and the test's socket, in an http block
    with the test's own temporary paths."""
    site = SITE.read_text()
    assert "listen 80;" in site and "unix:/run/gshard-app/gshard.sock" in site
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = site.replace("unix:/run/gshard-app/gshard.sock", f"unix:{socket_path}")
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"events {{ worker_connections 4096; }}\n"
            f"http {{\n    access_log off;\n{temp}\n{site}\n}}\n")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path (a unix socket's path must fit in 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="gshard-nginx-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_four_reloads_behind_the_nginx_site_fail_no_request(deployed_gshard, tmp_path,
                                                            short_dir):
    socket_path = str(short_dir / "gshard.sock")
    # The flags the site's comment asks for (--user aside: the test runs as one user).
    server = deployed_gshard("--bind", f"unix:{socket_path}", "--shards", "2",
                             "--keep-alive", "75", "--forwarded-allow-ips", "127.0.0.1")
    port = free_port()
    # Workers as root only to reach the test's socket in root's temporary folder;
    # in production --user hands the socket to nginx's user.
    nginx = Nginx(short_dir / "nginx", site_config(short_dir / "nginx", port, socket_path),
                  user="root")
    try:
        with Load(port, fresh=12, keepalive=8, slow=2, max_seconds=60) as load:
            time.sleep(1.0)
            for n in range(2, 2 + RELOADS):
                deploy(tmp_path, f"v{n}")
                mark = server.stderr.mark()
                server.signal(signal.SIGHUP)
                server.stderr.wait_for(rf"Generation {n} is serving", WAIT, start=mark)
                served_from = time.monotonic()
                time.sleep(1.5)
                assert {r.version for r in load.served(served_from + 0.5)} == {f"v{n}"}
    finally:
        nginx.stop()
    summary = f"{RELOADS} reloads behind nginx (unix socket, upstream keep-alive): " \
              f"{load.summary()}"
    print(f"\n{summary}")
    load.assert_no_failure(summary)
    assert {r.version for r in load.served()} == {f"v{n}" for n in range(1, 2 + RELOADS)}
    assert server.stderr.count("Traceback") == 0
