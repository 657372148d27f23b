"""Queued-byte limits of offline persistent sessions: past one, the copy is not queued for
that session, the drop is counted with its reason, and the publisher is not harmed."""

from __future__ import annotations

import uuid

from gateway.broker import Broker
from gateway.broker_state import Message
from gateway.mqtt.packets import QoS
from gateway.reasons import DisconnectReason


class Outlet:
    def __init__(self) -> None:
        self.closed: list[DisconnectReason] = []

    def wake(self) -> None:
        pass

    def close(self, reason: DisconnectReason, detail: str | None = None) -> None:
        self.closed.append(reason)


def _offline(broker: Broker, net: str, client_id: str):
    outlet = Outlet()
    attached = broker.connect((net, client_id), False, outlet)
    broker.subscribe(attached.state, f"{net}/t/#", QoS.AT_LEAST_ONCE)
    broker.disconnect((net, client_id), outlet)
    return attached.state


def test_the_per_session_byte_limit_refuses_with_its_reason():
    net = str(uuid.uuid4())
    broker = Broker(max_queued_bytes_per_session=10, max_queued_bytes_per_network=1_000)
    state = _offline(broker, net, "s")
    assert broker.publish(Message(f"{net}/t/1", b"x" * 6, QoS.AT_LEAST_ONCE)) == 1
    assert broker.publish(Message(f"{net}/t/2", b"y" * 6, QoS.AT_LEAST_ONCE)) == 0
    assert [m.payload for m in state.outbox] == [b"x" * 6]
    assert broker.statistics()["dropped_max_queued_bytes_per_session"] == 1
    # A delivered copy frees its bytes: the next one fits again.
    outlet = Outlet()
    attached = broker.connect((net, "s"), False, outlet)
    broker.acknowledged(attached.state, state.outbox.popleft())
    assert state.queued_bytes == 0 and broker.queued_bytes(net) == 0
    broker.disconnect((net, "s"), outlet)
    assert broker.publish(Message(f"{net}/t/3", b"z" * 6, QoS.AT_LEAST_ONCE)) == 1


def test_the_per_network_byte_limit_counts_every_copy_and_spares_other_networks():
    net, other = str(uuid.uuid4()), str(uuid.uuid4())
    broker = Broker(max_queued_bytes_per_session=100, max_queued_bytes_per_network=25)
    states = [_offline(broker, net, f"s{i}") for i in range(3)]
    theirs = _offline(broker, other, "s")
    live = Outlet()
    attached = broker.connect((net, "live"), True, live)
    broker.subscribe(attached.state, f"{net}/t/#", QoS.AT_LEAST_ONCE)
    # Three offline copies of 10 bytes: the third passes 25 bytes and is refused; the live
    # subscriber still gets its copy and nobody is disconnected.
    assert broker.publish(Message(f"{net}/t/1", b"p" * 10, QoS.AT_LEAST_ONCE)) == 3
    assert sorted(len(s.outbox) for s in states) == [0, 1, 1]
    assert len(attached.state.outbox) == 1 and live.closed == []
    assert broker.statistics()["dropped_max_queued_bytes_per_network"] == 1
    assert broker.queued_bytes(net) == 20
    # Another network's sessions have their own budget.
    assert broker.publish(Message(f"{other}/t/1", b"p" * 20, QoS.AT_LEAST_ONCE)) == 1
    assert len(theirs.outbox) == 1
    # A session that ends gives its bytes back.
    broker.connect((net, next(s.key[1] for s in states if s.outbox)), True, Outlet())
    assert broker.queued_bytes(net) == 10
