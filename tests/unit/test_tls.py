"""The shard's TLS context, and the rule that keeps ``ssl`` out of the manager."""

from __future__ import annotations

import ssl
import subprocess
import sys

import pytest

from gshard.config import Config
from gshard.errors import TLSError

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    where = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = {name: str(where / f"{name}.pem") for name in ("ca", "cert", "key", "both")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    cert.private_key_and_cert_chain_pem.write_to_path(paths["both"])
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    paths["encrypted"] = str(where / "encrypted.pem")
    with open(paths["encrypted"], "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(b"secret")))
    return paths


def context(**values):
    from gshard.shard.tls import server_context

    return server_context(Config.from_values({"app": "a:b", **values}))


def test_context_as_gunicorn_builds_it(files):
    ctx = context(certfile=files["cert"], keyfile=files["key"])
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    ctx = context(certfile=files["both"], ca_certs=files["ca"], cert_reqs=2,
                  ciphers="ECDHE+AESGCM")
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.cert_store_stats()["x509_ca"] >= 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"keyfile": "encrypted"}, "encrypted with a passphrase"),  # and no prompt hangs
        ({"keyfile": "ca"}, "cannot load a certificate and its key"),
        ({"ca_certs": "key"}, "--ca-certs"),
        ({"ciphers": "NO-SUCH-CIPHER"}, "--ciphers"),
    ],
)
def test_what_does_not_load_is_named(files, values, message):
    values = {k: files.get(v, v) for k, v in values.items()}
    with pytest.raises(TLSError, match=message):
        context(certfile=files["cert"], **{"keyfile": files["key"], **values})


def test_the_manager_side_never_imports_ssl():
    # gevent must patch ssl before anything imports it, and only shards patch.
    code = ("import sys, gshard.cli.main, gshard.manager.loop, gshard.shard.boot, "
            "gshard.http.proxy; "
            "bad = {'ssl', '_ssl', 'gevent'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
