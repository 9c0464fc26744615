"""Errors shared across gshard, and the exit codes that carry them between processes.

A shard cannot raise into the manager, so the reason it died travels as its exit
status. The manager reads the status to tell "the new code is broken" (do not
respawn in a loop) from "a shard crashed" (respawn it).
"""

from __future__ import annotations

# Shard exit statuses the manager understands (same values as gunicorn's, so
# supervisors and scripts that already know them keep working).
EXIT_OK = 0
EXIT_BOOT_ERROR = 3
EXIT_APP_LOAD_ERROR = 4
# Exit status of the CLI for a bad flag or value, as argparse and gunicorn use.
EXIT_USAGE = 2


class ProtocolError(Exception):
    """The peer broke HTTP/1.1; ``status`` is the response it should get.

    ``status`` is ``None`` when no response makes sense (the peer is gone) and
    the connection should simply be closed.
    """

    def __init__(self, message: str, status: int | None = 400) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(Exception):
    """A setting is invalid; the message names the setting and the rule."""


class AppLoadError(Exception):
    """The WSGI application could not be imported or is not callable."""


class TLSError(Exception):
    """The TLS files or settings do not load; the shards cannot boot (``tls.py``)."""


class ClientDisconnected(ConnectionError):
    """Sending to or receiving from the client failed: it went away.

    Raised in place of the socket's own error, so that an ``OSError`` the
    application raises itself (an upstream timing out) is never mistaken
    for the client leaving. A ``ConnectionError``, so applications that catch
    ``OSError`` around ``wsgi.input`` keep working.
    """
