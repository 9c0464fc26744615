"""The shared HTTP/1.1 conformance corpus, replayed against a live gshard."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.paths import CORPUS_DIR

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


@pytest.mark.timeout(60)
def test_proxy_protocol_cases_of_the_corpus(gshard_proc):
    # The PROXY cases need the protocol on. All pass but valid/pp_03, which
    # expects gunicorn's leniency (a connection without a header is served);
    # gshard requires the header, as the protocol does (see gshard/proxy.py).
    server = gshard_proc("echo_app:app", "--shards", "2", "--proxy-protocol", cwd=CORPUS_DIR)
    result = subprocess.run(
        [sys.executable, str(RUNNER), "127.0.0.1", str(server.port), "-k", "pp_",
         "--include-config-dependent"],
        cwd=CORPUS_DIR, capture_output=True, text=True, timeout=45,
    )
    report = result.stdout + result.stderr
    failed = re.findall(r"^FAIL (\S+)", result.stdout, re.MULTILINE)
    assert failed == ["valid/pp_03"], report
    assert re.search(r"^7 passed, 1 failed$", result.stdout, re.MULTILINE), report
    assert server.stop() == 0
