"""Hypothesis strategies for valid MQTT 3.1.1 values and packets (shared by the codec and
session tests).

Every strategy here yields only what the standard allows on the wire, so `encode` accepts it
and `PacketReader` decodes it back to an equal value. Sizes are kept small so that hundreds
of examples run in well under a second.
"""

from __future__ import annotations

from hypothesis import strategies as st

from gateway.mqtt import (
    SUBACK_FAILURE,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    QoS,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)

# Any code point MQTT allows in a UTF-8 string (section 1.5.3): no surrogates, no U+0000.
# U+FEFF and the other non-characters are allowed and must survive unchanged.
mqtt_characters = st.characters(
    exclude_categories=("Cs",), exclude_characters="\x00", max_codepoint=0x10FFFF
)


def mqtt_text(*, min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    """Strings an MQTT UTF-8 field may carry."""
    return st.text(mqtt_characters, min_size=min_size, max_size=max_size) | st.sampled_from(
        ["", "\ufeff", "A\U0002a6d4", "\u00e9t\u00e9", "\uffff"]
    ).filter(lambda s: len(s) >= min_size)


# Characters of topics, client identifiers and user names: no control characters
# (U+0001-U+001F, U+007F-U+009F are category Cc), which the server refuses there.
identifier_characters = st.characters(
    exclude_categories=("Cs", "Cc"), max_codepoint=0x10FFFF
)


def identifier_text(*, max_size: int = 20) -> st.SearchStrategy[str]:
    """Strings a client identifier or user name may carry."""
    return st.text(identifier_characters, max_size=max_size) | st.sampled_from(
        ["", "\ufeff", "A\U0002a6d4", "\u00e9t\u00e9", "\uffff"])


# A level of a topic: any MQTT character but controls, the separator and the wildcards.
_level_characters = st.characters(
    exclude_categories=("Cs", "Cc"), exclude_characters="/+#", max_codepoint=0x10FFFF
)
topic_levels = st.text(_level_characters, max_size=8) | st.sampled_from(
    ["a", "b", "sensors", "temp", "", "$SYS", "\ufeff"]
)

packet_ids = st.integers(min_value=1, max_value=0xFFFF)
qos_levels = st.sampled_from(list(QoS))
payloads = st.binary(max_size=64)


@st.composite
def topic_names(draw: st.DrawFn) -> str:
    """Valid topic names (4.7): 1..6 levels, no wildcard, at least one character."""
    levels = draw(st.lists(topic_levels, min_size=1, max_size=6))
    name = "/".join(levels)
    return name if name else draw(st.sampled_from(["/", "a", "$SYS/x"]))


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    """Valid topic filters (4.7.1): levels that are literal or "+", maybe a final "#"."""
    levels = draw(st.lists(topic_levels | st.just("+"), min_size=0, max_size=5))
    if not levels or draw(st.booleans()):
        levels.append("#")
    result = "/".join(levels)
    # A single empty level would be the empty filter, which is invalid (MQTT-4.7.3-1).
    return result or draw(st.sampled_from(["/", "+", "#"]))


wills = st.builds(Will, topic=topic_names(), payload=payloads, qos=qos_levels, retain=st.booleans())


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    username = draw(st.none() | identifier_text())
    password = draw(st.none() | payloads) if username is not None else None
    return Connect(
        client_id=draw(identifier_text(max_size=23)),
        clean_session=draw(st.booleans()),
        keepalive=draw(st.integers(0, 0xFFFF)),
        will=draw(st.none() | wills),
        username=username,
        password=password,
    )


@st.composite
def connacks(draw: st.DrawFn) -> ConnAck:
    code = draw(st.sampled_from(list(ConnectReturnCode)))
    # A refusing CONNACK never says a session is present (MQTT-3.2.2-4).
    present = draw(st.booleans()) if code == ConnectReturnCode.ACCEPTED else False
    return ConnAck(code, present)


@st.composite
def publishes(draw: st.DrawFn, *, qos: st.SearchStrategy[QoS] = qos_levels) -> Publish:
    level = draw(qos)
    return Publish(
        topic=draw(topic_names()),
        payload=draw(payloads),
        qos=level,
        retain=draw(st.booleans()),
        dup=draw(st.booleans()) if level else False,  # MQTT-3.3.1-2
        packet_id=draw(packet_ids) if level else None,
    )


subscribes = st.builds(
    Subscribe,
    packet_id=packet_ids,
    subscriptions=st.lists(st.tuples(topic_filters(), qos_levels), min_size=1, max_size=5).map(
        tuple
    ),
)
subacks = st.builds(
    SubAck,
    packet_id=packet_ids,
    return_codes=st.lists(st.sampled_from([0, 1, 2, SUBACK_FAILURE]), min_size=1, max_size=5).map(
        tuple
    ),
)
unsubscribes = st.builds(
    Unsubscribe,
    packet_id=packet_ids,
    topic_filters=st.lists(topic_filters(), min_size=1, max_size=5).map(tuple),
)

client_packets = st.one_of(
    connects(),
    publishes(),
    st.builds(PubAck, packet_ids),
    st.builds(PubRec, packet_ids),
    st.builds(PubRel, packet_ids),
    st.builds(PubComp, packet_ids),
    subscribes,
    unsubscribes,
    st.just(PingReq()),
    st.just(Disconnect()),
)
"""Every packet type a client may send to a server."""

server_packets = st.one_of(
    connacks(),
    publishes(),
    st.builds(PubAck, packet_ids),
    st.builds(PubRec, packet_ids),
    st.builds(PubRel, packet_ids),
    st.builds(PubComp, packet_ids),
    subacks,
    st.builds(UnsubAck, packet_ids),
    st.just(PingResp()),
)
"""Every packet type a server may send to a client."""

packets = st.one_of(client_packets, server_packets)
"""Any valid MQTT 3.1.1 packet of any of the 14 types."""
