"""CONNECT handling of a `ServerConnection` (MQTT 3.1.1 section 3.1-3.2; MQTT 5 the same).

Before the CONNECT leaves the table's AWAITING_CONNECT, `_check_connect` applies the
session's own policy, each refusal a `RemoteProtocolError` carrying the CONNACK to send:
- client identifier: 3.1.1 refuses an empty one with clean_session=0 (MQTT-3.1.3-8) and
  one longer than `max_client_id_length` (MQTT-3.1.3-9, 0x02); MQTT 5 refuses the long
  one with 0x85 and lets the application assign one for an empty id (MQTT-3.2.2-16);
- MQTT 5 Authentication Method: 0x8C bad authentication method (no enhanced
  authentication here, section 4.12);
- will topic over the topic limits: 3.1.1 closes, MQTT 5 answers 0x90.
`_on_connect` then records what an MQTT 5 client announced (Receive Maximum, Maximum
Packet Size, Topic Alias Maximum, Request Problem Information, Session Expiry Interval)
for the other parts to honour, and the application answers `accept` or `refuse`.
"""

from __future__ import annotations

from dataclasses import replace

from . import _state
from ._core import MAX_PACKET_ID, SessionCore
from ._state import Action
from .codec import encode_into
from .errors import LocalProtocolError, RemoteProtocolError
from .events import ConnectReceived, Event, ProtocolSessionState
from .packets import (
    PROTOCOL_LEVEL_5,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Publish,
    PubRel,
    QoS,
)
from .properties import NO_PROPERTIES, Properties
from .reason_codes import ConnAckCode, connack_reason, connect_return_code


class ConnectHandling(SessionCore):
    """The CONNECT side of `ServerConnection`."""

    def _check_connect(self, connect: Connect) -> None:
        v5 = connect.protocol_level == PROTOCOL_LEVEL_5
        if v5:  # a refusal below must fit the client's Maximum Packet Size too
            self._client_max_packet = connect.properties.maximum_packet_size or 0
        if connect.client_id == "" and not connect.clean_session and not v5:
            raise RemoteProtocolError(
                "empty client identifier with clean_session=0",
                rule="MQTT-3.1.3-8",
                connack_code=ConnectReturnCode.IDENTIFIER_REJECTED,
            )
        if len(connect.client_id.encode("utf-8")) > self._max_client_id_length:
            raise RemoteProtocolError(
                f"client identifier longer than {self._max_client_id_length} bytes",
                rule="MQTT-3.1.3-9" if not v5 else "MQTT-3.1.3-8",
                connack_code=ConnAckCode.CLIENT_IDENTIFIER_NOT_VALID if v5
                else ConnectReturnCode.IDENTIFIER_REJECTED,
            )
        if v5 and connect.properties.authentication_method is not None:
            raise RemoteProtocolError(
                "enhanced authentication is not supported (Authentication Method "
                f"{connect.properties.authentication_method!r})",
                connack_code=ConnAckCode.BAD_AUTHENTICATION_METHOD,
            )
        if connect.will is not None:
            why = self._over_limits(connect.will.topic)
            if why is not None:
                raise RemoteProtocolError(
                    f"will topic: {why}", reason_code=ConnAckCode.TOPIC_NAME_INVALID,
                    connack_code=ConnAckCode.TOPIC_NAME_INVALID if v5 else None,
                )

    def _on_connect(self, packet: Connect) -> Event:
        self._connect = packet
        self._client_id = packet.client_id
        self._keepalive = packet.keepalive
        if packet.protocol_level == PROTOCOL_LEVEL_5:
            self._level = PROTOCOL_LEVEL_5
            self._v5 = True
            props = packet.properties
            if props.receive_maximum is not None:
                self._window = min(self._max_inflight, props.receive_maximum)
            self._client_max_packet = props.maximum_packet_size or 0
            self._client_alias_max = props.topic_alias_maximum or 0
            self._problem_info = props.request_problem_information != 0
            self._connect_session_expiry = props.session_expiry_interval or 0
        return ConnectReceived(packet)

    # ---------------------------------------------------------------- the CONNECT answer

    def accept(self, *, session_present: bool = False,
               resume: ProtocolSessionState | None = None,
               assigned_client_id: str | None = None,
               server_keep_alive: int | None = None,
               session_expiry_interval: int | None = None,
               properties: Properties = NO_PROPERTIES) -> None:
        """Queue CONNACK 0 (section 3.2); the state becomes CONNECTED.

        Args:
            session_present: the server holds a session for this client id
                (MQTT-3.2.2-2); must be False for clean_session=1 (MQTT-3.2.2-1).
            resume: that session's `ProtocolSessionState`: its unfinished outbound messages are
                re-sent right after the CONNACK with their original identifiers, PUBLISH
                with DUP=1, and PUBREL as is (MQTT-4.4.0-1, MQTT-3.3.1-1).

        MQTT 5 only (ignored for 3.1.1): the CONNACK also carries the session's own
        limits (Receive Maximum, Topic Alias Maximum, Maximum Packet Size, from the
        constructor, when they differ from the standard's defaults) and:
            assigned_client_id: required when the CONNECT's client id was empty, refused
                otherwise (MQTT-3.2.2-16); `client_id` then returns it.
            server_keep_alive: replaces the client's keep alive (MQTT-3.2.2-21); the
                keepalive deadline follows it.
            session_expiry_interval: when the server grants another one than asked.
            properties: any other CONNACK property the application announces (maximum
                QoS, retain available, wildcard / subscription identifier / shared
                subscription available, response information, server reference, reason
                string, user properties). Properties the session sets itself win. The
                session enforces what it announces: a PUBLISH above Maximum QoS is
                DISCONNECT 0x9B, a retained one when Retain Available is 0 is 0x9A, a
                subscription identifier when they are unavailable 0xA1; wildcard and
                shared filters when unavailable get 0xA2 / 0x9E in the SUBACK. (A will
                breaking these is the application's to refuse: it sees the CONNECT.)

        Raises:
            LocalProtocolError: not in CONNECT_RECEIVED, or the arguments contradict.
        """
        new_state = _state.act(self._state, Action.ACCEPT)
        connect = self._connect
        assert connect is not None
        if connect.clean_session and (session_present or resume is not None):
            raise LocalProtocolError(
                "clean_session=1: session_present must be 0 and nothing resumed (MQTT-3.2.2-1)"
            )
        if resume is not None and not session_present:
            raise LocalProtocolError("resuming a session requires session_present (MQTT-3.2.2-2)")
        connack = ConnAck(ConnectReturnCode.ACCEPTED, session_present)
        if self._v5:
            connack = ConnAck(0, session_present, self._connack_properties(
                connect, assigned_client_id, server_keep_alive, session_expiry_interval,
                properties))
            self._announced = connack.properties
        resumed = self._check_resume(resume)
        self._state = new_state
        if self._v5:
            if assigned_client_id is not None:
                self._client_id = assigned_client_id
            if server_keep_alive is not None:
                self._keepalive = server_keep_alive
            # Our own limits apply from the CONNACK on: inbound packets are checked
            # against the Maximum Packet Size we announce (MQTT-3.2.2-15 is the client's).
        # Never dropped: too large for the client, it loses its reason string and user
        # properties (MQTT-3.1.2-24) and what is left is small.
        self._send_optional(connack)
        if resume is None:
            return
        self._next_id = resume.next_packet_id
        self._awaiting_pubrel = set(resume.inbound_awaiting_pubrel)
        self._outbound = resumed
        # At most the client's Receive Maximum in flight (MQTT 5, 4.9): the rest wait.
        self._held = list(resumed)
        self._release_held()

    def _connack_properties(self, connect: Connect, assigned: str | None,
                            keep_alive: int | None, expiry: int | None,
                            properties: Properties) -> Properties:
        if (connect.client_id == "") != (assigned is not None):
            raise LocalProtocolError(
                "assigned_client_id is given exactly when the client id was empty "
                "(MQTT-3.2.2-16)")
        if keep_alive is not None and not 0 <= keep_alive <= 0xFFFF:
            raise LocalProtocolError(f"server_keep_alive {keep_alive} is not 0..65535")
        reason = properties.reason_string if self._problem_info else None
        users = properties.user_properties if self._problem_info else ()
        return replace(
            properties,
            assigned_client_identifier=assigned,
            server_keep_alive=keep_alive,
            session_expiry_interval=(expiry if expiry is not None
                                     else properties.session_expiry_interval),
            receive_maximum=self.receive_maximum if self.receive_maximum < 0xFFFF else None,
            topic_alias_maximum=self._topic_alias_maximum or None,
            maximum_packet_size=self._max_packet_size,
            reason_string=reason,
            user_properties=users,
            # Only to a client that asked for it (MQTT-3.1.2-28).
            response_information=(properties.response_information
                                  if connect.properties.request_response_information
                                  else None),
        )

    def _check_resume(self, resume: ProtocolSessionState | None) -> dict[int, Publish | PubRel]:
        resumed: dict[int, Publish | PubRel] = {}
        if resume is None:
            return resumed
        if not 1 <= resume.next_packet_id <= MAX_PACKET_ID:
            raise LocalProtocolError("resume.next_packet_id out of range")
        for entry in resume.outbound:
            # Encode now: a bad entry must fail before anything is queued.
            if isinstance(entry, Publish):
                entry = replace(entry, dup=True)  # a re-delivery (MQTT-3.3.1-1)
                if entry.qos == QoS.AT_MOST_ONCE:
                    raise LocalProtocolError("a resumed session holds no QoS 0 message")
                if entry.properties.topic_alias is not None:
                    entry = replace(entry, properties=replace(entry.properties,
                                                              topic_alias=None))
            elif not isinstance(entry, PubRel):
                raise LocalProtocolError(f"not a resumable packet: {entry!r}")
            if entry.packet_id in resumed:
                raise LocalProtocolError(f"packet id {entry.packet_id} resumed twice")
            if not self._v5 and (entry.properties is not NO_PROPERTIES
                                 or getattr(entry, "reason_code", 0)):
                entry = (replace(entry, properties=NO_PROPERTIES) if isinstance(entry, Publish)
                         else PubRel(entry.packet_id))
            encode_into(entry, bytearray(), self._level)
            resumed[entry.packet_id] = entry
        return resumed

    def refuse(self, code: int, *, reason_string: str | None = None,
               properties: Properties = NO_PROPERTIES) -> None:
        """Queue CONNACK `code` with session present 0 (MQTT-3.2.2-4); state CLOSED.

        `code` may be a 3.1.1 `ConnectReturnCode` or an MQTT 5 `reason_codes.ConnAckCode`:
        the session translates it for the client's version (`reason_codes.connack_reason`,
        `reason_codes.connect_return_code`: 0x8A banned is 0x05 in 3.1.1, 0x97 quota exceeded
        is 0x03). MQTT 5 only: `reason_string` and `properties` (server reference, user
        properties) ride on the CONNACK, reason string and user properties only if the
        client did not ask for no problem information (MQTT-3.1.2-29).

        Raises:
            LocalProtocolError: not in CONNECT_RECEIVED, or `code` means success.
        """
        try:
            v5_code = connack_reason(code)
            v4_code = connect_return_code(code)
        except ValueError:
            raise LocalProtocolError(f"{code!r} is not a CONNACK code") from None
        if v5_code is ConnAckCode.SUCCESS:
            raise LocalProtocolError("refuse() needs a refusing code; use accept()")
        self._state = _state.act(self._state, Action.REFUSE)
        if not self._v5:
            encode_into(ConnAck(v4_code, False), self._out)
            return
        if reason_string is not None:
            properties = replace(properties, reason_string=reason_string)
        if not self._problem_info:
            properties = replace(properties, reason_string=None, user_properties=())
        self._send_optional(ConnAck(v5_code, False, properties))
