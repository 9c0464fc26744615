"""The shared HTTP/1.1 conformance corpus, replayed against a live gshard."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import corpus
from tests.support.paths import CORPUS_DIR

RUNNER = CORPUS_DIR / "run_corpus.py"
# What the runner reports for gshard's departures from the corpus (see
# tests/support/corpus.py): the status each case gets, and nothing else failing.
DEPARTURES = {**corpus.REFUSED, **{name: 200 for name in corpus.SERVED_AT_GSHARDS_REQUEST_LINE}}


def run_corpus(port: int, *args: str) -> tuple[str, dict[str, int], int, int]:
    """The runner against ``port``: its report, failed cases with the status each
    got, and the passed and failed counts."""
    result = subprocess.run(
        [sys.executable, str(RUNNER), "127.0.0.1", str(port), *args],
        cwd=CORPUS_DIR, capture_output=True, text=True, timeout=45,
    )
    report = result.stdout + result.stderr
    summary = re.search(r"^(\d+) passed, (\d+) failed$", result.stdout, re.MULTILINE)
    assert summary, report
    assert result.returncode == (1 if int(summary.group(2)) else 0), report
    failed = {name: int(status) for name, status
              in re.findall(r"^FAIL (\S+) .*?\[(\d+)\]", result.stdout, re.MULTILINE)}
    return report, failed, int(summary.group(1)), int(summary.group(2))


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("send_mode", ["all", "random"])
def test_conformance_corpus(gshard_proc, send_mode):
    assert RUNNER.is_file(), f"the conformance corpus is missing at {CORPUS_DIR}"
    server = gshard_proc("echo_app:app", "--shards", "2", cwd=CORPUS_DIR)
    report, failed, passed, failures = run_corpus(server.port, "-q", "--send-mode", send_mode)
    assert failed == DEPARTURES, report
    assert failures == len(DEPARTURES), report
    assert passed >= 100, report  # the runner really ran the corpus
    assert server.stop() == 0
    # Each CONNECT was answered by the server, not the application, and logged once.
    connects = server.stderr.count(r"\[INFO\] Bad request from 127\.0\.0\.1: CONNECT not impl")
    assert connects == len(corpus.REFUSED), server.stderr.text


@pytest.mark.timeout(60)
def test_corpus_cases_of_gunicorns_request_line_limit_refused_at_that_limit(gshard_proc):
    # At gshard's default (8190) they are served, as gunicorn serves them at
    # its maximum; at gunicorn's default they are refused, as gunicorn does.
    server = gshard_proc("echo_app:app", "--shards", "1", "--limit-request-line",
                         str(corpus.GUNICORN_REQUEST_LINE), cwd=CORPUS_DIR)
    for name in corpus.SERVED_AT_GSHARDS_REQUEST_LINE:
        report, failed, passed, _ = run_corpus(server.port, "-k", name)
        assert (failed, passed) == ({}, 1), report
    assert server.stop() == 0


@pytest.mark.timeout(60)
def test_proxy_protocol_cases_of_the_corpus(gshard_proc):
    # The PROXY cases need the protocol on. All pass but valid/pp_03, which
    # expects gunicorn's leniency (a connection without a header is served);
    # gshard requires the header, as the protocol does (see gshard/proxy.py).
    server = gshard_proc("echo_app:app", "--shards", "2", "--proxy-protocol", cwd=CORPUS_DIR)
    report, failed, passed, failures = run_corpus(server.port, "-k", "pp_",
                                                  "--include-config-dependent")
    assert list(failed) == ["valid/pp_03"], report
    assert (passed, failures) == (7, 1), report
    assert server.stop() == 0
