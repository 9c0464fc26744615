"""The whole session's setting: gshard's default control sockets go to a directory of its own.

Every gshard opens a control socket by default, at a name of its own under
``$XDG_RUNTIME_DIR/gshard/`` (``gshard.manager.discovery``), so the many
servers the tests run at once never collide. Pointing ``XDG_RUNTIME_DIR`` at
a fresh directory for the session keeps them out of the real user's, and
lets the session check at its end that its processes left no socket behind:
servers stopped by a test remove their own, and the fixtures that kill a
server outright (``processes.kill_group``) remove what it could not.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_RUN_DIR = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    run_dir = tempfile.mkdtemp(prefix="gshard-tests-run-")
    config.stash[_RUN_DIR] = run_dir
    os.environ["XDG_RUNTIME_DIR"] = run_dir


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run_dir = session.config.stash.get(_RUN_DIR, None)
    if run_dir is None:
        return
    sockets = os.path.join(run_dir, "gshard")
    left = sorted(os.listdir(sockets)) if os.path.isdir(sockets) else []
    shutil.rmtree(run_dir, ignore_errors=True)
    if left and exitstatus == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"control sockets left behind by the tests: {left}", red=True)
        session.exitstatus = 1
