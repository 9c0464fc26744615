"""curl as the client: connection reuse, 100-continue and chunked uploads as curl does them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args],
                          capture_output=True, text=True, timeout=20)


@pytest.fixture
def echo(gshard_proc):
    return gshard_proc("echo:app", "--shards", "2")


def test_curl_reuses_the_connection(echo):
    result = _curl("-v", "--http1.1", f"{echo.url}/one", "-o", "/dev/null",
                   f"{echo.url}/two?x=2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == "/two"
    assert result.stderr.count("< HTTP/1.1 200 OK") == 2
    assert "Re-using existing connection" in result.stderr or "Reusing existing" in \
        result.stderr, result.stderr


@pytest.mark.parametrize("mode", ["expect-100", "chunked"])
def test_curl_upload(echo, tmp_path, mode):
    payload = os.urandom(2 * 1024 * 1024)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    extra = (["-H", "Expect: 100-continue"] if mode == "expect-100"
             else ["-H", "Transfer-Encoding: chunked"])
    result = _curl("-v", "--http1.1", *extra, "--data-binary", f"@{upload}",
                   f"{echo.url}/upload")
    assert result.returncode == 0, result.stderr
    echoed = json.loads(result.stdout)
    assert echoed["body_len"] == len(payload)
    assert echoed["body_sha256"] == hashlib.sha256(payload).hexdigest()
    if mode == "expect-100":
        assert "< HTTP/1.1 100 Continue" in result.stderr, result.stderr
    else:
        assert echoed["headers"]["HTTP_TRANSFER_ENCODING"] == "chunked"
