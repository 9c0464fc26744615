"""What a person types: the ``gshard`` command, its subcommands, and ``gshard.run``.

``main`` hands ``serve`` how to layer the command line, config files and
``$GUNICORN_CMD_ARGS`` into a ``Config`` (``gshard.run`` hands it its
settings over their file): ``serve`` reads it, applies the environment,
binds the listeners, detaches (``daemon``) and runs the manager, which reads
it again on every reload. ``app_check`` is ``--check-config``.
``status``, ``top`` and ``ctl`` talk to a running gshard over its control
socket.

May import: everything below it (import-linter checks that nothing below
imports it, setup.cfg).
"""
