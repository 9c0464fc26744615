"""Reading systemd's LISTEN_* variables, as sd_listen_fds_with_names reads them."""

from __future__ import annotations

import pytest

from gshard.sockets.activation import Activation, PassedSocket, take

PID = 4242


def test_no_variables_pass_nothing():
    environ = {"PATH": "/usr/bin"}
    assert take(environ, PID) == Activation()
    assert environ == {"PATH": "/usr/bin"}


def test_sockets_start_at_descriptor_3_with_their_names():
    environ = {"LISTEN_PID": str(PID), "LISTEN_FDS": "3",
               "LISTEN_FDNAMES": "web:admin:web", "HOME": "/root"}
    assert take(environ, PID) == Activation((
        PassedSocket(3, "web"), PassedSocket(4, "admin"), PassedSocket(5, "web")))
    assert environ == {"HOME": "/root"}  # removed: no shard or successor sees them


def test_sockets_without_names_are_unknown():
    activation = take({"LISTEN_PID": str(PID), "LISTEN_FDS": "2"}, PID)
    assert activation.sockets == (PassedSocket(3, "unknown"), PassedSocket(4, "unknown"))


def test_an_empty_name_is_unknown():
    activation = take({"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": ":b"}, PID)
    assert [s.name for s in activation.sockets] == ["unknown", "b"]


def test_zero_descriptors_pass_nothing():
    environ = {"LISTEN_PID": str(PID), "LISTEN_FDS": "0"}
    assert take(environ, PID).sockets == ()
    assert environ == {}


def test_variables_meant_for_another_process_are_removed_and_ignored():
    environ = {"LISTEN_PID": "17", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
    activation = take(environ, PID)
    assert activation.sockets == ()
    assert "process 17" in activation.ignored and str(PID) in activation.ignored
    assert environ == {}


def test_fds_without_a_pid_are_ignored():
    environ = {"LISTEN_FDS": "1"}
    activation = take(environ, PID)
    assert activation.sockets == ()
    assert "without LISTEN_PID" in activation.ignored
    assert environ == {}


def test_a_pid_without_fds_is_removed_and_passes_nothing():
    environ = {"LISTEN_PID": str(PID)}
    assert take(environ, PID) == Activation()
    assert environ == {}


@pytest.mark.parametrize(("variables", "message"), [
    ({"LISTEN_PID": "x1", "LISTEN_FDS": "1"}, "LISTEN_PID='x1'"),
    ({"LISTEN_PID": "0", "LISTEN_FDS": "1"}, "LISTEN_PID='0'"),
    ({"LISTEN_PID": "-5", "LISTEN_FDS": "1"}, "LISTEN_PID='-5'"),
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": "-1"}, "LISTEN_FDS='-1'"),
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": "two"}, "LISTEN_FDS='two'"),
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": ""}, "LISTEN_FDS=''"),
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web"},
     "names 1 sockets, LISTEN_FDS passes 2"),
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"},
     "names 2 sockets, LISTEN_FDS passes 1"),
])
def test_unreadable_variables_are_refused_and_still_removed(variables, message):
    environ = dict(variables)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        take(environ, PID)
    assert environ == {}
