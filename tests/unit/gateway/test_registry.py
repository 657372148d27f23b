"""The connection registry: each question answered from its index, never by a full scan."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from gateway.registry import ConnectionRegistry


@dataclass(eq=False)
class Ident:
    network: str
    serial: int


@dataclass(eq=False)
class Conn:
    identity: Ident | None = None
    name: str = field(default="")


def _admit(registry, network, serial, name=""):
    conn = Conn(None, name)
    registry.add(conn)
    conn.identity = Ident(network, serial)
    registry.admitted(conn)
    return conn


def test_connections_are_found_by_network_and_by_serial_and_forgotten_on_remove():
    registry = ConnectionRegistry()
    net_a, net_b = str(uuid.uuid4()), str(uuid.uuid4())
    a1, a2 = _admit(registry, net_a, 1), _admit(registry, net_a, 2)
    b1 = _admit(registry, net_b, 3)
    pending = Conn()
    registry.add(pending)  # accepted, not admitted yet: counted, not indexed
    assert len(registry) == 4
    assert set(registry.of_network(net_a)) == {a1, a2}
    assert registry.with_serial_in(frozenset({2, 3, 99})) in ([a2, b1], [b1, a2])
    assert registry.remove(a2) and not registry.remove(a2)  # idempotent
    assert registry.of_network(net_a) == [a1] and registry.with_serial_in(frozenset({2})) == []
    assert registry.remove(pending) and len(registry) == 2
    assert set(registry) == {a1, b1}


class Unwalkable(frozenset):
    """A revoked set that may be asked about a serial but never walked."""

    def __iter__(self):
        raise AssertionError("the whole revoked set was walked")


def test_a_revocation_list_larger_than_the_live_set_is_walked_from_the_live_side():
    registry = ConnectionRegistry()
    conn = _admit(registry, str(uuid.uuid4()), 7)
    long_crl = Unwalkable(range(100_000))  # the answer comes from the one live serial
    assert registry.with_serial_in(long_crl) == [conn]


def test_iterating_is_a_snapshot_so_closing_while_iterating_is_safe():
    registry = ConnectionRegistry()
    conns = [_admit(registry, "n", i) for i in range(3)]
    for conn in registry:
        registry.remove(conn)
    assert len(registry) == 0 and not registry.of_network("n") and conns
