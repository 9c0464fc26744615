"""Listening sockets the manager opens once and holds across generations.

``listener`` binds one ``SO_REUSEPORT`` socket per slot and address (or a
shared one for unix sockets), ``activation`` takes systemd's passed sockets,
``steering`` attaches the BPF program that chooses which slots get new
connections, and ``queues`` reads each listener's accept-queue depth.

May import: the top-level modules only (import-linter checks it, setup.cfg).
"""
