"""--reload: saving the application's source hot-reloads it; a syntax error keeps the old code."""

from __future__ import annotations

import time

import pytest

from tests.support.loadgen import APP_MODULE, Load, deploy, fresh_request
from tests.support.processes import wait_until


def _served(port: int) -> str | None:
    return fresh_request(port, "/").version


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("preload", [False, True], ids=["forked", "preloaded"])
def test_saved_source_is_served_and_a_syntax_error_keeps_the_old_code(
        deployed_gshard, tmp_path, preload):
    extra = tmp_path / "settings.txt"
    extra.write_text("a")
    server = deployed_gshard("--reload", "--reload-extra-file", str(extra), "--shards", "2",
                             "--graceful-timeout", "5", *(("--preload",) if preload else ()))
    source = tmp_path / f"{APP_MODULE}.py"
    with Load(server.port, fresh=4, keepalive=2, slow=1, max_seconds=60) as load:
        time.sleep(0.5)
        deploy(tmp_path, "v2")
        wait_until(lambda: _served(server.port) == "v2", 15, "v2 served after saving it")
        # A shard of a generation serves as soon as it is ready; the break below must
        # come once the whole generation is up, or its last shard could import it.
        server.stderr.wait_for(r"Generation 2 is serving", 15)

        good = source.read_text()
        source.write_text(good + "\ndef broken(:\n")
        server.stderr.wait_for(r"Reload failed, generation \d+ keeps serving: .*SyntaxError", 15)
        assert _served(server.port) == "v2"

        deploy(tmp_path, "v3")
        wait_until(lambda: _served(server.port) == "v3", 15, "v3 served after the fix")

        extra.write_text("b")  # a --reload-extra-file reloads too
        generation = server.stderr.count(r"Generation \d+ is serving")
        wait_until(lambda: server.stderr.count(r"Generation \d+ is serving") > generation, 15,
                   "a reload after the extra file changed")
        time.sleep(0.5)
    load.assert_no_failure()
    assert "invalid syntax" in server.stderr.text or "SyntaxError" in server.stderr.text
    assert server.stop() == 0
