"""The simulator's MQTT 5 mode: its client (clean start 0, session expiry), and what it says
of the gateway's MQTT 5 answers (reason code and reason string of a refused report, CONNACK
or DISCONNECT), fed the paho objects paho hands its callbacks."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
import pytest
from firmware_sim.bundle import load_bundle
from firmware_sim.cli import _parser, main
from firmware_sim.device import SimDevice
from firmware_sim.loop import Loop
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


@pytest.fixture
def device(device_bundle):
    """`device(mqtt=...)`: a SimDevice on a loop that never runs, and the events it says."""
    loop = Loop()
    events: list[tuple[str, dict[str, Any]]] = []

    def make(**kw: Any) -> SimDevice:
        sim = SimDevice(load_bundle(device_bundle.dir), loop, "127.0.0.1", 1,
                        on_event=lambda d, k, f: events.append((k, f)), **kw)
        sim.said = events  # type: ignore[attr-defined]
        return sim

    yield make
    loop.close()


def _props(packet: int, reason: str | None) -> Properties:
    props = Properties(packet)
    if reason is not None:
        props.ReasonString = reason
    return props


def test_mqtt5_device_asks_for_a_persistent_session_with_an_expiry(device):
    sim = device(mqtt="5", session_expiry=600)
    assert sim.client.protocol == paho.MQTTv5
    assert sim.client._clean_start is False  # noqa: SLF001 - what CONNECT will carry
    assert sim.client._connect_properties.SessionExpiryInterval == 600  # noqa: SLF001
    assert device().client.protocol == paho.MQTTv311  # 3.1.1 stays the default


def test_an_unknown_mqtt_version_is_refused(device):
    with pytest.raises(ValueError, match="3.1.1, 5"):
        device(mqtt="4")


def test_a_refused_report_is_counted_and_said_with_its_reason(device):
    sim = device(mqtt="5")
    sim._inflight = {7: 3, 8: 1}  # noqa: SLF001 - two reports in flight (3 and 1 readings)
    rule = "value thermo/temp: 900 is above max 100"
    sim._on_publish(sim.client, None, 7, ReasonCode(PacketTypes.PUBACK, identifier=0x83),
                    _props(PacketTypes.PUBACK, rule))
    sim._on_publish(sim.client, None, 8, ReasonCode(PacketTypes.PUBACK, identifier=0x00),
                    _props(PacketTypes.PUBACK, None))
    assert (sim.stats.refused, sim.stats.acked) == (3, 1)
    kind, fields = sim.said[-1]
    assert kind == "report_refused"
    assert fields == {"mid": 7, "readings": 3, "reason_code": "0x83", "reason_string": rule}


def test_the_gateways_disconnect_is_said_with_its_reason(device):
    sim = device(mqtt="5")
    flags = paho.DisconnectFlags(is_disconnect_packet_from_server=True)
    sim._on_disconnect(sim.client, None, flags, ReasonCode(PacketTypes.DISCONNECT,
                                                            identifier=0x98),
                       _props(PacketTypes.DISCONNECT, "certificate revoked"))
    kind, fields = sim.said[0]
    assert kind == "disconnected"
    assert fields["reason_code"] == "0x98"
    assert fields["reason_string"] == "certificate revoked"
    assert fields["reason"] == "Administrative action"


def test_a_lost_connection_has_no_reason_code_to_say(device):
    sim = device(mqtt="5")
    flags = paho.DisconnectFlags(is_disconnect_packet_from_server=False)
    sim._on_disconnect(sim.client, None, flags, ReasonCode(PacketTypes.DISCONNECT,
                                                            identifier=0x80), None)
    assert "reason_code" not in sim.said[0][1]


def test_a_refused_connack_is_said_with_its_reason(device):
    sim = device(mqtt="5")
    sim._on_connect(sim.client, None, None, ReasonCode(PacketTypes.CONNACK, identifier=0x8A),
                    _props(PacketTypes.CONNACK, "network erased by an operator"))
    assert sim.said[0] == ("refused", {"reason": "Banned", "reason_code": "0x8A",
                                       "reason_string": "network erased by an operator"})
    assert sim.stats.connect_failures == 1


def test_run_and_fleet_take_mqtt_5_and_3_1_1_only(capsys):
    args = _parser().parse_args(["run", "--bundle", "b", "--mqtt", "5"])
    assert (args.mqtt, args.session_expiry) == ("5", 3600)
    args = _parser().parse_args(["fleet", "--bundles", "b"])
    assert args.mqtt == "3.1.1"
    assert main(["run", "--bundle", "b", "--mqtt", "4"]) == 2
    assert "invalid choice: '4'" in capsys.readouterr().err
    assert main(["run", "--bundle", "b", "--mqtt", "5", "--session-expiry", "-1"]) == 2
    assert "must be 0 to 4294967295" in capsys.readouterr().err


def test_help_shows_an_mqtt5_example(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--mqtt 5" in out
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--help"])
    assert "--mqtt {3.1.1,5}" in capsys.readouterr().out
