"""A shard's TLS context, built once, after gevent has patched ``ssl``.

Only a shard imports this module, after ``monkey.patch_all()``: gevent
replaces ``ssl``'s socket classes with cooperative ones, and an ``ssl``
imported before the patch could hand out sockets that block the whole event
loop. The manager therefore never imports ``ssl``; it only checks that the
files exist (``cli.serve.check_paths``). Loading them happens here, in every
shard, so a reload (``gshard reload``) also picks up a renewed certificate.

The context is gunicorn's: ``ssl.create_default_context(Purpose.CLIENT_AUTH)``
(TLS 1.2 or later, Python's cipher choice), the certificate chain, the client
certificate requirement and, if given, the cipher list.
"""

from __future__ import annotations

import ssl

from gshard.config import Config
from gshard.errors import TLSError


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, and a shard
    # would hang at boot waiting for a passphrase nobody is asked for.
    raise TLSError("--keyfile is encrypted with a passphrase; gshard needs an unencrypted key")


def server_context(config: Config) -> ssl.SSLContext:
    """The server-side ``SSLContext`` for ``config``'s TLS settings.

    Raises ``TLSError`` naming the setting whose file or value is wrong.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=config.ca_certs)
    except (OSError, ValueError) as exc:
        raise TLSError(f"--ca-certs {config.ca_certs!r} does not load: {exc}") from None
    try:
        context.load_cert_chain(config.certfile, config.keyfile, password=_no_passphrase)
    except TLSError:
        raise
    except (OSError, ValueError) as exc:
        key = f" and --keyfile {config.keyfile!r}" if config.keyfile else ""
        raise TLSError(f"cannot load a certificate and its key from --certfile "
                       f"{config.certfile!r}{key}: {exc}") from None
    context.verify_mode = ssl.VerifyMode(config.cert_reqs)
    if config.ciphers:
        try:
            context.set_ciphers(config.ciphers)
        except ssl.SSLError:
            raise TLSError(f"--ciphers {config.ciphers!r} selects no cipher this OpenSSL "
                           "offers") from None
    return context
