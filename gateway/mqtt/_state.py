"""The one transition table of a server-side MQTT 3.1.1 or 5.0 connection.

Rules this table keeps (OASIS MQTT 3.1.1):

- The first packet from the client must be CONNECT (MQTT-3.1.0-1); anything else is a
  protocol violation and the connection closes.
- A second CONNECT on the same connection is a violation (MQTT-3.1.0-2).
- After CONNECT the session waits for the application's decision (accept or refuse) and
  reads nothing more until then: if the CONNECT is refused, no data the client sent after
  it may be processed (MQTT-3.1.4-5).
- A server never receives CONNACK, SUBACK, UNSUBACK or PINGRESP: they flow server to
  client only (section 2.2.1), so receiving one is a protocol violation (MQTT-4.8.0-1).
- DISCONNECT ends the connection gracefully (section 3.14); the end of the byte stream ends
  it without grace. Either way the state is CLOSED and nothing more is read.
- Any protocol violation by the peer moves to ERROR, from which nothing leaves: the server
  must close the network connection (MQTT-4.8.0-1).

Two kinds of input drive the table: packets received (`receive`) and what the application
does (`act`). A pair missing from the tables is illegal: a received packet raises
`RemoteProtocolError` naming the rule; an application action raises `LocalProtocolError`.
Both name the state found and the states that would have allowed the input.
"""

from __future__ import annotations

from enum import Enum, IntEnum

from .errors import PROTOCOL_ERROR, LocalProtocolError, RemoteProtocolError
from .packets import PacketType


class ConnectionState(IntEnum):
    """Where a server-side connection stands."""

    AWAITING_CONNECT = 0
    """Nothing accepted yet; the next packet must be CONNECT."""
    CONNECT_RECEIVED = 1
    """CONNECT emitted as an event; waiting for `accept()` or `refuse()`."""
    CONNECTED = 2
    """CONNACK 0 queued; application messages flow both ways."""
    CLOSED = 3
    """Ended by DISCONNECT, EOF, refusal or `close()`; nothing more is read."""
    ERROR = 4
    """The peer broke the protocol; the connection must be closed."""


class Action(Enum):
    """What the application (or the byte stream's end) does to the connection."""

    ACCEPT = "accept"
    REFUSE = "refuse"
    PUBLISH = "publish"
    ACKNOWLEDGE = "acknowledge"
    GRANT = "grant"
    UNSUBSCRIBED = "unsubscribed"
    CLOSE = "close"
    EOF = "eof"


_S = ConnectionState
_P = PacketType
_A = Action

# Packets a client may send once connected, all keeping the state CONNECTED.
_CONNECTED_INBOUND = (
    _P.PUBLISH,
    _P.PUBACK,
    _P.PUBREC,
    _P.PUBREL,
    _P.PUBCOMP,
    _P.SUBSCRIBE,
    _P.UNSUBSCRIBE,
    _P.PINGREQ,
)

RECEIVE: dict[tuple[ConnectionState, PacketType], ConnectionState] = {
    (_S.AWAITING_CONNECT, _P.CONNECT): _S.CONNECT_RECEIVED,
    **{(_S.CONNECTED, p): _S.CONNECTED for p in _CONNECTED_INBOUND},
    (_S.CONNECTED, _P.DISCONNECT): _S.CLOSED,
}
"""(state, packet type received) -> next state. Absent: a protocol violation."""

ACT: dict[tuple[ConnectionState, Action], ConnectionState] = {
    (_S.CONNECT_RECEIVED, _A.ACCEPT): _S.CONNECTED,
    (_S.CONNECT_RECEIVED, _A.REFUSE): _S.CLOSED,
    (_S.CONNECTED, _A.PUBLISH): _S.CONNECTED,
    (_S.CONNECTED, _A.GRANT): _S.CONNECTED,
    (_S.CONNECTED, _A.UNSUBSCRIBED): _S.CONNECTED,
    # Acknowledging after the connection ended still records the message as taken over
    # (QoS 2: its id awaits PUBREL in the persistent session); nothing is sent.
    (_S.CONNECTED, _A.ACKNOWLEDGE): _S.CONNECTED,
    (_S.CLOSED, _A.ACKNOWLEDGE): _S.CLOSED,
    (_S.ERROR, _A.ACKNOWLEDGE): _S.ERROR,
    (_S.AWAITING_CONNECT, _A.CLOSE): _S.CLOSED,
    (_S.CONNECT_RECEIVED, _A.CLOSE): _S.CLOSED,
    (_S.CONNECTED, _A.CLOSE): _S.CLOSED,
    (_S.CLOSED, _A.CLOSE): _S.CLOSED,
    (_S.ERROR, _A.CLOSE): _S.ERROR,
    (_S.AWAITING_CONNECT, _A.EOF): _S.CLOSED,
    (_S.CONNECTED, _A.EOF): _S.CLOSED,
}
"""(state, application action) -> next state. Absent: our own misuse."""


SERVER_NEVER_RECEIVES = frozenset({_P.CONNACK, _P.SUBACK, _P.UNSUBACK, _P.PINGRESP})
# AUTH (MQTT 5) is in no state's row: this server offers no enhanced authentication, so
# a client never has an Authentication Method in force and AUTH is a protocol error
# (section 4.12).


def _allowed(table: dict, kind: object) -> str:
    states = sorted({s for (s, k) in table if k == kind})
    return ", ".join(s.name for s in states) or "no state"


def violation_rule(state: ConnectionState, packet_type: PacketType) -> str:
    """The normative statement a packet of `packet_type` breaks in `state`."""
    if state is _S.AWAITING_CONNECT:
        return "MQTT-3.1.0-1"
    if packet_type is _P.CONNECT:
        return "MQTT-3.1.0-2"
    return "MQTT-4.8.0-1"


def receive(state: ConnectionState, packet_type: PacketType) -> ConnectionState:
    """The state after receiving `packet_type` in `state`.

    Raises:
        RemoteProtocolError: the packet is illegal in `state` (rule attached).
    """
    try:
        return RECEIVE[state, packet_type]
    except KeyError:
        rule = violation_rule(state, packet_type)
        why = " (server-bound never)" if packet_type in SERVER_NEVER_RECEIVES else ""
        raise RemoteProtocolError(
            f"{packet_type.name}{why} received in state {state.name}; allowed in: "
            f"{_allowed(RECEIVE, packet_type)}",
            rule=rule,
            reason_code=PROTOCOL_ERROR,
        ) from None


def act(state: ConnectionState, action: Action) -> ConnectionState:
    """The state after the application's `action` in `state`.

    Raises:
        LocalProtocolError: the action is not allowed in `state`.
    """
    try:
        return ACT[state, action]
    except KeyError:
        raise LocalProtocolError(
            f"cannot {action.value} in state {state.name}; allowed in: {_allowed(ACT, action)}"
        ) from None
