"""Shard-to-manager datagrams."""

from __future__ import annotations

import os
import socket

import pytest

from gshard.ipc import MAX_DATAGRAM, Kind, Message, decode, encode, send


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("detail", ["", "one line", "Traceback:\n  line 1\n\nKeyError: 'é ☃'"])
def test_round_trip(kind, detail):
    message = Message(kind, 12345, detail)
    data = encode(message)
    assert isinstance(data, bytes)
    assert decode(data) == message


def test_wire_format():
    assert encode(Message(Kind.READY, 42)) == b"ready 42\n"
    assert encode(Message(Kind.BOOT_FAILED, 7, "x\ny")) == b"boot-failed 7\nx\ny"


@pytest.mark.parametrize("detail", ["x" * (MAX_DATAGRAM * 3), "é☃" * MAX_DATAGRAM])
def test_huge_detail_is_truncated_to_fit(detail):
    data = encode(Message(Kind.BOOT_FAILED, 99, detail))
    assert len(data) <= MAX_DATAGRAM
    decoded = decode(data)
    assert decoded.kind is Kind.BOOT_FAILED
    assert decoded.pid == 99
    assert decoded.detail.endswith("[... truncated]")
    # The start of the detail survives (a cut multi-byte character aside).
    assert decoded.detail.startswith(detail[:1000])


def test_detail_that_just_fits_is_kept_whole():
    head = len(b"boot-failed 1\n")
    detail = "y" * (MAX_DATAGRAM - head)
    data = encode(Message(Kind.BOOT_FAILED, 1, detail))
    assert len(data) == MAX_DATAGRAM
    assert decode(data).detail == detail
    assert "truncated" in decode(encode(Message(Kind.BOOT_FAILED, 1, detail + "y"))).detail


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", b"ready", b"ready notapid\n", b"unknown 12\n", b"\xff\xfe 1\n", b"ready 1x"],
)
def test_garbage_raises_value_error(data):
    with pytest.raises(ValueError):
        decode(data)


def test_send_carries_the_senders_pid_and_reports_a_gone_manager():
    inbox, channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with channel:
        with inbox:
            assert send(channel, Kind.BOOT_FAILED, "ImportError")
            assert decode(inbox.recv(MAX_DATAGRAM)) == Message(
                Kind.BOOT_FAILED, os.getpid(), "ImportError")
        assert not send(channel, Kind.READY)  # the manager's end is closed
