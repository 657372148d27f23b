"""Hypothesis strategies for valid MQTT 5.0 packets (OASIS MQTT 5.0, chapters 2 and 3).

Every strategy yields only what the standard allows on the wire, so `encode(..., 5)`
accepts it and a level-5 `PacketReader` decodes it back to an equal value. Properties are
drawn per packet kind from the table the codec enforces (`properties.ALLOWED`).
"""

from __future__ import annotations

from hypothesis import strategies as st
from strategies import (
    identifier_text,
    mqtt_text,
    packet_ids,
    payloads,
    qos_levels,
    topic_filters,
    topic_levels,
    topic_names,
)

from gateway.mqtt.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RetainHandling,
    SubAck,
    Subscribe,
    SubscriptionOptions,
    UnsubAck,
    Unsubscribe,
    Will,
)
from gateway.mqtt.properties import (
    ALLOWED,
    BINARY,
    BYTE,
    NO_PROPERTIES,
    PAIR,
    SPEC,
    U16,
    U32,
    UTF8,
    VARINT,
    Properties,
    PropertyId,
)
from gateway.mqtt.reason_codes import (
    AuthCode,
    ConnAckCode,
    DisconnectCode,
    PubAckCode,
    PubRelCode,
    SubAckCode,
    UnsubAckCode,
)

_NON_ZERO = {PropertyId.RECEIVE_MAXIMUM, PropertyId.TOPIC_ALIAS, PropertyId.MAXIMUM_PACKET_SIZE}


def _value(pid: int, dtype: int) -> st.SearchStrategy[object]:
    low = 1 if pid in _NON_ZERO else 0
    if dtype == BYTE:
        return st.integers(0, 1)
    if dtype == U16:
        return st.integers(low, 0xFFFF)
    if dtype == U32:
        return st.integers(low, 0xFFFF_FFFF)
    if pid == PropertyId.RESPONSE_TOPIC:
        return topic_names()  # no wildcards (MQTT-3.3.2-14)
    if dtype == UTF8:
        return mqtt_text(max_size=8)
    if dtype == BINARY:
        return st.binary(max_size=8)
    if dtype == PAIR:
        return st.lists(st.tuples(mqtt_text(max_size=4), mqtt_text(max_size=4)),
                        min_size=1, max_size=3).map(tuple)
    assert dtype == VARINT
    return st.integers(1, 268_435_455)


@st.composite
def properties(draw: st.DrawFn, kind: str, *, exclude: frozenset[int] = frozenset()
               ) -> Properties:
    """Any valid property list of a `kind` packet (often none)."""
    if draw(st.booleans()):
        return NO_PROPERTIES
    values: dict[str, object] = {}
    for pid in sorted(ALLOWED[kind] - exclude):
        if not draw(st.booleans()):
            continue
        name, dtype, _ = SPEC[pid]
        if pid == PropertyId.RESPONSE_TOPIC:
            values[name] = draw(topic_names())  # a topic name (MQTT-3.3.2-14)
        elif pid == PropertyId.SUBSCRIPTION_IDENTIFIER:
            count = 3 if kind == "PUBLISH" else 1
            values[name] = tuple(draw(st.lists(_value(pid, dtype), min_size=1,
                                               max_size=count)))
        else:
            values[name] = draw(_value(pid, dtype))
    return Properties(**values) if values else NO_PROPERTIES  # type: ignore[arg-type]


def _codes(enum: type) -> st.SearchStrategy[int]:
    return st.sampled_from([int(c) for c in enum])


@st.composite
def connects5(draw: st.DrawFn) -> Connect:
    will = None
    if draw(st.booleans()):
        will = Will(draw(topic_names()), draw(payloads), draw(qos_levels), draw(st.booleans()),
                    draw(properties("WILL")))
    return Connect(
        client_id=draw(identifier_text(max_size=23)),
        clean_session=draw(st.booleans()),
        keepalive=draw(st.integers(0, 0xFFFF)),
        will=will,
        username=draw(st.none() | identifier_text()),
        password=draw(st.none() | payloads),  # MQTT 5: a password needs no user name
        protocol_level=5,
        properties=draw(properties("CONNECT")),
    )


@st.composite
def connacks5(draw: st.DrawFn) -> ConnAck:
    code = draw(_codes(ConnAckCode))
    return ConnAck(code, draw(st.booleans()) if code == 0 else False,
                   draw(properties("CONNACK")))


@st.composite
def publishes5(draw: st.DrawFn) -> Publish:
    qos = draw(qos_levels)
    props = draw(properties("PUBLISH"))
    topic = draw(topic_names())
    if props.topic_alias is not None and draw(st.booleans()):
        topic = ""
    return Publish(topic, draw(payloads), qos, draw(st.booleans()),
                   draw(st.booleans()) if qos else False,
                   draw(packet_ids) if qos else None, props)


def acks(cls: type, codes: type, kind: str) -> st.SearchStrategy:
    return st.builds(cls, packet_ids, _codes(codes), properties(kind))


@st.composite
def shared_or_plain_filters(draw: st.DrawFn) -> str:
    topic_filter = draw(topic_filters())
    if draw(st.booleans()):
        name = draw(topic_levels.filter(lambda level: level != ""))
        return f"$share/{name}/{topic_filter}"
    return topic_filter


@st.composite
def subscribes5(draw: st.DrawFn) -> Subscribe:
    filters = draw(st.lists(shared_or_plain_filters(), min_size=1, max_size=4))
    subscriptions = tuple((f, draw(qos_levels)) for f in filters)
    options = tuple(
        SubscriptionOptions(
            draw(st.booleans()) if not f.startswith("$share/") else False,
            draw(st.booleans()),
            draw(st.sampled_from(list(RetainHandling))),
        )
        for f in filters
    )
    if all(o == SubscriptionOptions() for o in options):
        options = ()
    return Subscribe(draw(packet_ids), subscriptions, options, draw(properties("SUBSCRIBE")))


def _code_lists(codes: type) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(_codes(codes), min_size=1, max_size=4).map(tuple)


client_packets5 = st.one_of(
    connects5(),
    publishes5(),
    acks(PubAck, PubAckCode, "PUBACK"),
    acks(PubRec, PubAckCode, "PUBREC"),
    acks(PubRel, PubRelCode, "PUBREL"),
    acks(PubComp, PubRelCode, "PUBCOMP"),
    subscribes5(),
    st.builds(Unsubscribe, packet_ids,
              st.lists(shared_or_plain_filters(), min_size=1, max_size=4).map(tuple),
              properties("UNSUBSCRIBE")),
    st.just(PingReq()),
    st.builds(Disconnect, _codes(DisconnectCode), properties("DISCONNECT")),
    st.builds(Auth, _codes(AuthCode), properties("AUTH")),
)
"""Every MQTT 5 packet type a client may send (AUTH included)."""

server_packets5 = st.one_of(
    connacks5(),
    publishes5(),
    acks(PubAck, PubAckCode, "PUBACK"),
    acks(PubRec, PubAckCode, "PUBREC"),
    acks(PubRel, PubRelCode, "PUBREL"),
    acks(PubComp, PubRelCode, "PUBCOMP"),
    st.builds(SubAck, packet_ids, _code_lists(SubAckCode), properties("SUBACK")),
    st.builds(UnsubAck, packet_ids, _code_lists(UnsubAckCode), properties("UNSUBACK")),
    st.just(PingResp()),
    st.builds(Disconnect, _codes(DisconnectCode), properties("DISCONNECT")),
)
"""Every MQTT 5 packet type a server may send."""

packets5 = st.one_of(client_packets5, server_packets5)
