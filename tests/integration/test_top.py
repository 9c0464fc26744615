"""``gshard top`` in a real terminal (tmux), watching a reload happen."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.support.paths import REPO

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="needs tmux (.ci/run installs it)")
WAIT = 15.0


class Terminal:
    """A 120x30 tmux pane on a private tmux server, read with capture-pane."""

    def __init__(self, command: list[str]) -> None:
        self.socket = f"gshard-top-test-{os.getpid()}"
        self.tmux("new-session", "-d", "-x", "120", "-y", "30", "-c", str(REPO),
                  " ".join(command))

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, check=True, timeout=10).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait_for(self, pattern: str, count: int = 1) -> str:
        """The screen once ``pattern`` appears ``count`` times on it."""
        deadline = time.monotonic() + WAIT
        while True:
            screen = self.screen()
            if len(re.findall(pattern, screen, re.M)) >= count:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} x{count} not on screen; it shows:\n{screen}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return subprocess.run(["tmux", "-L", self.socket, "has-session"], capture_output=True,
                              timeout=10).returncode == 0

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)


def row(state: str, generation: int) -> str:
    """A shard row of top's table: SLOT PID GEN STATE."""
    return rf"^\d+\s+\d+\s+{generation}\s+{state}\s"


@pytest.mark.timeout(90)
def test_top_shows_a_reload_booting_then_draining(gshard_proc, tmp_path):
    pidfile = str(tmp_path / "gshard.pid")
    gate = tmp_path / "gate"
    server = gshard_proc("gated_app:app", "--shards", "2", "--pid", pidfile,
                         env={"GATED_APP_GATE": str(gate)})
    terminal = Terminal([sys.executable, "-m", "gshard", "top", "--pid", pidfile])
    slow = threading.Thread(
        target=lambda: requests.get(server.url + "/slow?s=6", timeout=20), daemon=True)
    try:
        screen = terminal.wait_for(row("serving", 1), count=2)
        assert "gen 1 serving (2)" in screen
        assert re.search(r"QUEUE", screen) and re.search(r"0/2048", screen)

        gate.touch()  # the new generation will wait in its boot
        server.signal(signal.SIGHUP)
        screen = terminal.wait_for(row("booting", 2), count=2)
        assert "gen 2 booting (2)" in screen and "gen 1 serving (2)" in screen
        assert len(re.findall(row("serving", 1), screen, re.M)) == 2

        slow.start()  # in flight on generation 1, so one of its shards drains a while
        terminal.wait_for(rf"{row('serving', 1)}.* 0/2048\s+1\s+1\s")  # IN-FLIGHT, CONNS
        gate.unlink()
        screen = terminal.wait_for(row("draining", 1))
        assert "gen 2 serving (2)" in screen
        assert len(re.findall(row("serving", 2), screen, re.M)) == 2

        terminal.tmux("send-keys", "C-c")  # top exits, and with it the only pane
        deadline = time.monotonic() + WAIT
        while terminal.alive():
            assert time.monotonic() < deadline, "top did not quit on Ctrl-C"
            time.sleep(0.2)
    finally:
        terminal.close()
        if slow.ident is not None:
            slow.join(timeout=20)
