"""What a person types: the ``gshard`` command, its subcommands, and ``gshard.run``.

``main`` parses the command line, config files and ``$GUNICORN_CMD_ARGS``
into a ``Config`` and hands it to ``serve``, which ``gshard.run`` calls too:
it applies the environment (``process_env``), binds the listeners, detaches
(``daemon``) and runs the manager. ``app_check`` is ``--check-config``.
``status``, ``top`` and ``ctl`` talk to a running gshard over its control
socket.

May import: everything below it (import-linter checks that nothing below
imports it, setup.cfg).
"""
