"""Helpers the tests share: plain modules, no fixtures and no test cases.

Tests import helpers from here (``from tests.support.rawhttp import Conn``),
never from another test package's ``conftest.py``: a conftest is pytest's,
holding the fixtures for the tests beside it, and a helper imported out of one
ties a folder's tests to another folder's setup (h11 keeps its
``ConnectionPair`` in ``tests/helpers.py`` for the same reason).

* ``paths``: where the fixture apps, the repository and the shared HTTP corpus are;
* ``processes``: starting real ``gshard`` processes and watching them (log
  lines, children, process titles, listening sockets, /proc states);
* ``transports``: the ways a client reaches a server (TCP, a unix socket, TLS,
  the PROXY protocol), for the behaviour suites that run once per transport;
* ``rawhttp``: a strict raw-socket HTTP/1.x client for tests that must see the bytes;
* ``loadgen``: bounded load from client threads, and the application it expects;
* ``postgres``: a throwaway PostgreSQL server;
* ``protocol_checks``: the parser's invariants and hypothesis strategies, for
  the property tests and the fuzz run;
* ``fsm_driver``: the manager's state machine driven as its loop drives it,
  without processes, for the unit tests.
"""
