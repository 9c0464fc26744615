"""Choose which sockets of a SO_REUSEPORT group receive new connections.

A listener whose shard does not serve (it crashed and waits out a respawn
backoff, was just added and boots, or is being removed) should get no new
connection: it would wait in a queue nobody accepts from, and closing a
listener resets what is queued in it. A classic BPF program
(``SO_ATTACH_REUSEPORT_CBPF``, no privilege needed) tells the kernel to pick
only among the sockets of the serving slots. Measured here with 3 sockets and
300 connections: kernel hash [109, 98, 93]; steered to slots 0 and 1
[148, 152, 0].

The program hashes on the packet's receive hash (set on loopback and by NICs
with RSS); where that is 0 it hashes the TCP source port instead. The port is
mixed by a multiplication first, because Linux gives ``connect()`` even
ephemeral ports: ``port % 2`` would send every connection to one socket.

The kernel indexes a group's sockets in the order they started listening and,
when one closes, moves the last into its place; gshard only ever removes the
last socket, so index i stays slot i.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence

SO_ATTACH_REUSEPORT_CBPF = 51
_SKF_AD_RXHASH = (-0x1000 + 32) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_RXHASH
_SKF_NET_OFF = -0x100000 & 0xFFFFFFFF  # loads relative to the network header
_GOLDEN = 0x9E3779B1

# Classic BPF opcodes used below.
_LD_W_ABS, _LD_H_ABS, _LD_B_ABS, _LD_H_IND = 0x20, 0x28, 0x30, 0x48
_JEQ_K, _TAX, _RET_A, _RET_K = 0x15, 0x07, 0x16, 0x06
_AND_K, _LSH_K, _MUL_K, _RSH_K, _MOD_K = 0x54, 0x64, 0x24, 0x74, 0x94


def _source_port(family: int) -> list[tuple[int, int, int, int]]:
    """Instructions leaving the TCP source port in A."""
    if family == socket.AF_INET6:
        return [(_LD_H_ABS, 0, 0, (_SKF_NET_OFF + 40) & 0xFFFFFFFF)]  # fixed 40-byte header
    return [
        (_LD_B_ABS, 0, 0, _SKF_NET_OFF),  # version and IHL
        (_AND_K, 0, 0, 0x0F),
        (_LSH_K, 0, 0, 2),
        (_TAX, 0, 0, 0),  # X = IPv4 header length
        (_LD_H_IND, 0, 0, _SKF_NET_OFF),  # the first field of the TCP header
    ]


def program(
    slots: Sequence[int], family: int, use_rxhash: bool = True
) -> list[tuple[int, int, int, int]]:
    """The instructions: socket index = slots[hash % len(slots)]."""
    if not slots:
        raise ValueError("steering needs at least one slot")
    port_hash = [*_source_port(family), (_MUL_K, 0, 0, _GOLDEN), (_RSH_K, 0, 0, 16)]
    pick = [(_MOD_K, 0, 0, len(slots))]
    if list(slots) != list(range(len(slots))):
        # A table: if A == k return slots[k]. Each test skips its own return.
        for k, slot in enumerate(slots):
            pick += [(_JEQ_K, 0, 1, k), (_RET_K, 0, 0, slot)]
    pick.append((_RET_A, 0, 0, 0))
    if not use_rxhash:
        return port_hash + pick
    # if rxhash != 0 jump straight to the choice, else hash the port.
    return [(_LD_W_ABS, 0, 0, _SKF_AD_RXHASH), (_JEQ_K, 0, len(port_hash), 0), *port_hash, *pick]


def steer(sock: socket.socket, slots: Sequence[int], use_rxhash: bool = True) -> None:
    """Send new connections of ``sock``'s group only to the sockets at these indexes."""
    instructions = program(slots, sock.family, use_rxhash)
    raw = b"".join(struct.pack("HBBI", *ins) for ins in instructions)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("@HP", len(instructions), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
