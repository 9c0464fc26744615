"""``--user`` and ``--group``: who the shards run as.

As in gunicorn, the manager keeps the identity it was started with (root, to
bind port 80 and to add listeners on it later) and each shard switches to the
configured user and group right after the fork, before the application is
imported, so no application code ever runs as root.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from gshard.errors import ConfigError


@dataclass(frozen=True)
class Identity:
    """The user and group shards switch to; None keeps the manager's."""

    uid: int | None = None
    gid: int | None = None
    name: str | None = None  # for initgroups: set only with --initgroups and a named user

    def differs(self) -> bool:
        """Whether becoming this identity changes anything for this process."""
        return (self.uid is not None and self.uid != os.geteuid()) or (
            self.gid is not None and self.gid != os.getegid()
        )


def resolve(user: str | None, group: str | None, initgroups: bool = False) -> Identity:
    """Look the names up (digits are ids); ConfigError if that fails or cannot work.

    Without ``initgroups`` the shards keep only their one group. (gunicorn
    then keeps whatever supplementary groups it was started with, root's.)
    """
    uid = gid = None
    name = None
    if user is not None:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            if not user.isdigit():
                raise ConfigError(f"--user: no such user {user!r}") from None
            uid = int(user)  # a bare uid with no passwd entry, as gunicorn allows
        else:
            uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"--group: no such group {group!r}") from None
    identity = Identity(uid, gid, name if initgroups else None)
    if identity.differs() and os.geteuid() != 0:
        raise ConfigError("--user/--group: switching identity needs gshard to start as root")
    return identity


def drop(identity: Identity) -> None:
    """Become ``identity`` for good: groups first, while still allowed to change them."""
    if identity.gid is not None and identity.gid != os.getegid():
        if identity.name is not None:
            os.initgroups(identity.name, identity.gid)
        else:
            os.setgroups([identity.gid])
        os.setgid(identity.gid)
    if identity.uid is not None and identity.uid != os.geteuid():
        os.setuid(identity.uid)
