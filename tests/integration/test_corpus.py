"""The shared HTTP/1.1 conformance corpus, replayed against a live gshard."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import CORPUS_DIR

RUNNER = CORPUS_DIR / "run_corpus.py"


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("send_mode", ["all", "random"])
def test_conformance_corpus(gshard_proc, send_mode):
    assert RUNNER.is_file(), f"the conformance corpus is missing at {CORPUS_DIR}"
    server = gshard_proc("echo_app:app", "--shards", "2", cwd=CORPUS_DIR)
    result = subprocess.run(
        [sys.executable, str(RUNNER), "127.0.0.1", str(server.port), "-q",
         "--send-mode", send_mode],
        cwd=CORPUS_DIR, capture_output=True, text=True, timeout=45,
    )
    report = result.stdout + result.stderr
    summary = re.search(r"^(\d+) passed, (\d+) failed$", result.stdout, re.MULTILINE)
    assert summary, report
    passed, failed = int(summary.group(1)), int(summary.group(2))
    assert failed == 0, report
    assert result.returncode == 0, report
    assert passed >= 100, report  # the runner really ran the corpus
    assert server.stop() == 0
