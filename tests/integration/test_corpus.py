"""The shared HTTP/1.1 conformance corpus, replayed against a live gshard."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import corpus
from tests.support.paths import CORPUS_DIR

RUNNER = CORPUS_DIR / "run_corpus.py"
# The corpus was written for gunicorn's defaults. Its one case about the request
# line's length (4,122 bytes) assumes gunicorn's 4094, where gshard's default
# is 8190, so the corpus runs at gunicorn's limit; the case at gshard's own is
# tested apart, below.
AT_GUNICORNS_LIMIT = ("--limit-request-line", str(corpus.GUNICORN_REQUEST_LINE))


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
    server = gshard_proc("echo_app:app", "--shards", "2", *AT_GUNICORNS_LIMIT, cwd=CORPUS_DIR)
    report, failed, passed, failures = run_corpus(server.port, "-q", "--send-mode", send_mode)
    # Every case passes but the CONNECT ones, answered 501 on purpose (tests/support/corpus.py).
    assert failed == corpus.REFUSED, report
    assert failures == len(corpus.REFUSED), report
    assert passed >= 100, report  # the runner really ran the corpus
    assert server.stop() == 0
    # Each CONNECT was answered by the server, not the application, and logged once.
    connects = server.stderr.count(r"\[INFO\] Bad request from 127\.0\.0\.1: CONNECT not impl")
    assert connects == len(corpus.REFUSED), server.stderr.text


@pytest.mark.timeout(60)
def test_the_corpus_request_line_case_is_served_at_gshards_default_limit(gshard_proc):
    # Refused above at gunicorn's 4094, as gunicorn refuses it; at gshard's 8190
    # (gunicorn's maximum, where gunicorn serves it too) the runner sees it served.
    server = gshard_proc("echo_app:app", "--shards", "1", cwd=CORPUS_DIR)
    for name in corpus.SERVED_AT_GSHARDS_REQUEST_LINE:
        report, failed, passed, _ = run_corpus(server.port, "-k", name)
        assert (failed, passed) == ({name: 200}, 0), report
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
