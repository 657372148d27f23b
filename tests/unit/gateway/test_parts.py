"""The gateway's small parts: config, identity, logs, token buckets, TLS policy."""

from __future__ import annotations

import datetime as dt
import io
import json
import ssl
import uuid
from pathlib import Path

import pytest

from ca.keys import generate_key
from ca.profiles import build_device, build_hierarchy, build_operator, build_server
from gateway.config import GatewayConfig, load_config, parse_address
from gateway.errors import AdmissionRefused, ConfigError
from gateway.identity import identity_from_certificate, identity_from_der
from gateway.limits import ConnectionLimits, SourceRates, TokenBucket
from gateway.logs import EventLog, truncate_ip
from gateway.tls import TLS12_CIPHERS, build_server_context, classify_handshake_error

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def hierarchy():
    return build_hierarchy(name="unit", now=NOW)


def _device(hierarchy, network):
    return build_device(generate_key().public_key(), issuer=hierarchy.issuing, network=network,
                        now=NOW)


# -- config -----------------------------------------------------------------------------


def test_flags_override_the_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('[mqtt]\nmqtt = "0.0.0.0:1883"\nconnect_timeout = 3\n'
                    '[limits]\nmax_inflight = 5\n')
    config = load_config(path, {"max_inflight": 7, "ca_home": str(tmp_path)})
    assert (config.mqtt, config.connect_timeout, config.max_inflight) == ("0.0.0.0:1883", 3.0, 7)
    assert config.max_queued == GatewayConfig().max_queued
    assert config.cert_path == tmp_path / "server" / "server.crt"
    assert config.crl_path == tmp_path / "crl.pem"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("max_inflight = 0", "greater than 0"),
        ("max_inflight = true", "integer"),
        ("truncate_ip = 1", "true or false"),
        ("handshake_timeout = 'soon'", "number"),
        ("mqtt = 'x'", "HOST:PORT"),
        ("nonsense = 1", "unknown option"),
        ("max_packet_size = 300000000", "256 MiB"),
        ("max_packet_size = 100000000", "byte_burst"),
    ],
)
def test_bad_config_values_raise_config_error(tmp_path, doc, message):
    path = tmp_path / "g.toml"
    path.write_text(doc + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_parse_address_accepts_ipv6_brackets_and_port_zero():
    assert parse_address("[::1]:0") == ("::1", 0)
    with pytest.raises(ConfigError):
        parse_address("127.0.0.1:70000")


def test_paths_without_ca_home_raise_a_clear_error():
    with pytest.raises(ConfigError, match="--ca-home"):
        GatewayConfig().root_path  # noqa: B018


# -- identity ---------------------------------------------------------------------------


def test_device_certificate_yields_its_network_serial_and_expiry(hierarchy):
    network = uuid.uuid4()
    cert = _device(hierarchy, network)
    identity = identity_from_certificate(cert)
    assert identity.network_uuid == network and identity.network == str(network)
    assert identity.serial == cert.serial_number
    assert identity.not_after == cert.not_valid_after_utc


def test_operator_and_server_certificates_are_refused_with_their_reason(hierarchy):
    operator = build_operator(generate_key().public_key(), issuer=hierarchy.issuing,
                              name="alice", now=NOW)
    server = build_server(generate_key().public_key(), issuer=hierarchy.issuing,
                          dns=["gw"], now=NOW)
    for cert, reason in ((operator, "OPERATOR_CERTIFICATE"), (server, "SERVER_CERTIFICATE"),
                         (hierarchy.issuing.cert, "CA_CERTIFICATE")):
        with pytest.raises(AdmissionRefused) as info:
            identity_from_certificate(cert)
        assert info.value.reason == reason


def test_a_reconnecting_certificate_is_parsed_once_and_a_refused_one_every_time(hierarchy):
    from cryptography.hazmat.primitives.serialization import Encoding

    device = _device(hierarchy, uuid.uuid4()).public_bytes(Encoding.DER)
    first = identity_from_der(device)
    assert identity_from_der(bytes(device)) is first  # equal bytes: the parsed identity
    server = build_server(generate_key().public_key(), issuer=hierarchy.issuing,
                          dns=["gw"], now=NOW).public_bytes(Encoding.DER)
    for _ in range(2):
        with pytest.raises(AdmissionRefused, match="SERVER_CERTIFICATE"):
            identity_from_der(server)


def test_missing_or_garbage_der_is_refused():
    with pytest.raises(AdmissionRefused, match="NO_CERTIFICATE"):
        identity_from_der(None)
    with pytest.raises(AdmissionRefused, match="BAD_CERTIFICATE"):
        identity_from_der(b"\x30\x03\x02\x01\x01")


# -- logs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "truncated"),
    [
        ("192.0.2.77", "192.0.2.0/24"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_peer_addresses_truncate_to_24_and_48(address, truncated):
    assert truncate_ip(address) == truncated


def test_log_lines_are_json_with_time_event_and_hex_serial():
    stream = io.StringIO()
    log = EventLog(stream, truncate_ips=False)
    log.emit("connected", network="n", client_id="c", serial=255, reason=None,
             peer=log.peer("192.0.2.77"))
    record = json.loads(stream.getvalue())
    assert record["event"] == "connected" and record["serial"] == "ff"
    assert record["peer"] == "192.0.2.77" and "reason" not in record
    assert dt.datetime.fromisoformat(record["time"]).tzinfo is not None


# -- limits -----------------------------------------------------------------------------


def test_token_bucket_gives_the_burst_then_asks_to_wait_for_the_rate():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.debit(1, 0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.debit(1, 0.0) == pytest.approx(0.1)
    assert bucket.debit(1, 1.0) == 0.0  # refilled (capped at the burst)
    assert bucket.try_take(5, 1.0) is False and bucket.try_take(4, 1.0) is True


def test_connection_limits_count_per_network_and_release():
    limits = ConnectionLimits(2, 1, TokenBucket(100, 100, 0.0))
    assert limits.open_socket(0.0) is None and limits.open_socket(0.0) is None
    assert limits.open_socket(0.0) == "max_connections"
    assert limits.open_network("n") is None and limits.open_network("n") is not None
    limits.close_network("n")
    assert limits.open_network("n") is None
    assert limits.statistics()["refused"] == {
        "max_connections": 1, "max_connections_per_network": 1,
    }


def test_source_rates_keep_one_bucket_per_source_and_forget_the_least_recent():
    rates = SourceRates(rate=1, burst=1, max_sources=2)
    assert rates.try_take("a", 0.0) and not rates.try_take("a", 0.0)
    assert rates.try_take("b", 0.0)  # another source: its own bucket
    assert rates.try_take("a", 1.0)  # refilled at the rate
    assert rates.try_take("c", 1.0) and len(rates) == 2  # "b" was the least recent
    assert rates.try_take("b", 1.0)  # forgotten, so full again: memory stays bounded


def test_connection_limits_check_the_source_before_the_total():
    limits = ConnectionLimits(10, 1, TokenBucket(100, 2, 0.0), SourceRates(100, 1))
    assert limits.open_socket(0.0, "a") is None
    assert limits.open_socket(0.0, "a") == "connection_rate_per_source"
    assert limits.open_socket(0.0, "b") is None  # the refusal spent none of the total
    assert limits.open_socket(0.0, "c") == "connection_rate"


# -- TLS policy -------------------------------------------------------------------------


def test_server_context_allows_only_tls12_and_13_with_aead_forward_secret_ciphers(tmp_path):
    from ca.store import CAHome

    home = CAHome.init(tmp_path / "h", passphrase=None)
    files = home.issue_server(tmp_path / "h" / "server", ips=["127.0.0.1"])
    ctx = build_server_context(Path(home.path / "root.crt"), home.path / "crl.pem",
                               files.cert_path, files.key_path)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    for cipher in ctx.get_ciphers():
        if cipher["protocol"] == "TLSv1.2":
            assert cipher["kea"] == "kx-ecdhe" and cipher["aead"], cipher["name"]
    assert TLS12_CIPHERS == "ECDHE+AESGCM:ECDHE+CHACHA20"


def test_handshake_errors_are_classified():
    err = ssl.SSLCertVerificationError(1, "verify failed")
    err.verify_code, err.verify_message = 10, "certificate has expired"
    assert classify_handshake_error(err)[0] == "CERT_EXPIRED"
    assert classify_handshake_error(OSError("reset"))[0] == "CONNECTION_LOST"


def test_log_file_is_private_and_reopened_after_rotation(tmp_path):
    from gateway.logs import open_log_file

    path = tmp_path / "gateway.log"
    log = EventLog(open_log_file(str(path)), path=str(path))
    log.emit("before")
    assert path.stat().st_mode & 0o777 == 0o640
    path.rename(tmp_path / "gateway.log.1")
    log.reopen()
    log.emit("after")
    old = [json.loads(line)["event"] for line in (tmp_path / "gateway.log.1").open()]
    new = [json.loads(line)["event"] for line in path.open()]
    assert old == ["before"] and new == ["log_reopened", "after"]
