"""The compiled set in real processes: pure Python when asked for, and a compiled
checkout with one module edited still imports and serves, as pure Python, with one
warning saying what to rebuild.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from gshard.http import compiled
from tests.support.paths import FIXTURE_APPS, REPO

HTTP = REPO / "gshard" / "http"


def test_pure_python_can_be_asked_for_in_a_compiled_install():
    env = {**os.environ, "GSHARD_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-m", "gshard", "--version"], capture_output=True,
                         text=True, timeout=30, check=True, env=env).stdout
    assert "(pure Python; Python " in out


# --- a real compiled checkout, one module edited ------------------------------------------


@pytest.mark.timeout(60)
def test_editing_one_compiled_module_in_a_checkout_never_breaks_the_import(tmp_path, gshard_copy):
    """The regression: an edited protocol.py beside a compiled exchange.so used to fail
    every command with 'ServerConnection size changed'. Now the set runs from source."""
    source = gshard_copy / "gshard" / "http" / "protocol.py"
    source.write_text(source.read_text() + "\n# edited after the build\n")
    env = {**os.environ, "PYTHONPATH": str(gshard_copy)}
    env.pop("GSHARD_PURE_PYTHON", None)
    version = subprocess.run([sys.executable, "-m", "gshard", "--version"], capture_output=True,
                             text=True, timeout=30, env=env, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert "pure Python: gshard/http/protocol.py is newer than its compiled module" \
        in version.stdout
    warnings = [line for line in version.stderr.splitlines() if "StaleBuildWarning" in line]
    assert len(warnings) == 1, version.stderr

    server = subprocess.Popen(
        [sys.executable, "-m", "gshard", "hello:app", "--bind", "127.0.0.1:0", "--shards", "1",
         "--no-control-socket"],  # killed outright below: nothing left to clean
        cwd=FIXTURE_APPS, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = None
        for line in server.stderr:
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else port
            if "Ready:" in line:
                break
            assert "size changed" not in line, line
        assert port is not None
        response = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert response.status_code == 200
    finally:
        os.killpg(server.pid, 9)
        server.wait(timeout=10)


@pytest.fixture
def gshard_copy(tmp_path: Path) -> Path:
    """A copy of this checkout's package with its compiled modules, marked as a checkout."""
    if any(compiled.extension_path(module, str(HTTP)) is None for module in compiled.COMPILED):
        pytest.skip("this checkout has no compiled build (pip install -e . with a C compiler)")
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "gshard", root / "gshard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".git").mkdir()  # what tells a checkout from a wheel
    # The copy's files are as old as the build they were copied from.
    for path in (root / "gshard" / "http").iterdir():
        stamp = (HTTP / path.name).stat().st_mtime
        os.utime(path, (stamp, stamp))
    return root
