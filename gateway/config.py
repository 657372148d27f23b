"""The gateway's configuration: defaults, a TOML file, then command-line overrides.

`GatewayConfig` is one frozen value. `load_config(path, overrides)` reads the TOML file (its
tables are only for reading comfort: `[tls]`, `[mqtt]`, `[limits]`, `[console]`, `[signer]`,
`[cluster]`, `[log]`; every key maps to one field), applies the overrides (flags win over the
file) and validates the result. Unknown keys are errors: a typo must not silently fall back
to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .logs import LOG_LEVELS

DEFAULT_MQTT = "127.0.0.1:8883"
DEFAULT_HTTP = "127.0.0.1:8443"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Every option of `fleet-gateway serve`, with its default (see docs/operations.md)."""

    # [tls]
    ca_home: Path | None = None
    """Folder of the CA's public files: root.crt, crl.pem (and issuing.crt, ca-chain.pem)."""
    cert: Path | None = None
    """Server certificate (PEM, may hold the chain). Default <ca_home>/server/server.crt."""
    key: Path | None = None
    """Server private key (PEM, unencrypted, 0600). Default <ca_home>/server/server.key."""
    crl_poll_interval: float = 0.2
    """Seconds between stat() checks of crl.pem, root.crt and the server certificate."""
    # [mqtt]
    mqtt: str = DEFAULT_MQTT
    """MQTT over TLS listener, HOST:PORT (port 0: any free port, logged at start)."""
    http: str = DEFAULT_HTTP
    """HTTPS API listener, HOST:PORT or "off" (runs with a store: `data` or `store`)."""
    metrics: str = "off"
    """Plain-HTTP /metrics listener for Prometheus, HOST:PORT or "off" (keep it private)."""
    data: Path | None = None
    """Data folder of the SQLite store; unset: nothing stored, acknowledgements mean routed.
    With `store` set, it keeps only the erasure ledger and (by default) the data key."""
    store: str | None = None
    """PostgreSQL store URL, postgresql://USER@HOST:PORT/DB (env FLEETGATE_STORE); set, it
    replaces the SQLite store in `data`."""
    erasure_ledger: Path | None = None
    """Append-only record of erasures that a backup restore re-applies. Default
    <data>/erasures.jsonl; better on other storage than the backups."""
    handshake_timeout: float = 5.0
    """Seconds a TCP connection may take to finish the TLS handshake (MQTT and HTTPS)."""
    connect_timeout: float = 10.0
    """Seconds after the handshake within which CONNECT must arrive."""
    keepalive_factor: float = 1.5
    """A client silent for keepalive x this factor is disconnected (MQTT 3.1.1 3.1.2.10)."""
    # [limits]
    max_connections: int = 10_000
    """Live connections in total (TCP accepted, handshake included)."""
    max_connections_per_network: int = 100
    """Live MQTT sessions of one network (one certificate)."""
    connection_rate: float = 1_000.0
    """New TCP connections accepted per second (token bucket)."""
    connection_burst: int = 2_000
    """Connections accepted at once before the rate applies."""
    connection_rate_per_source: float = 100.0
    """New TCP connections per second from one source address (an IPv4 address or an IPv6
    /64), checked before `connection_rate`: one source's flood spends only its own share."""
    connection_burst_per_source: int = 500
    """The same, how many may arrive at once (a fleet behind one NAT reconnecting together)."""
    max_packet_size: int = 256 * 1024
    """Largest MQTT packet accepted, in bytes, fixed header included."""
    max_inflight: int = 20
    """Outbound QoS 1/2 messages awaiting acknowledgement, per connection."""
    max_queued: int = 1_000
    """Messages queued per session (offline persistent session or slow reader)."""
    max_queued_bytes_per_session: int = 8 * 1024 * 1024
    """Payload bytes queued for one offline persistent session; past it: not queued for it."""
    max_queued_bytes_per_network: int = 64 * 1024 * 1024
    """Payload bytes queued for one network's offline sessions (each copy counts)."""
    max_sessions_per_network: int = 1_000
    """Sessions (live, or persistent and offline) one network may hold."""
    max_retained_per_network: int = 10_000
    """Retained messages one network may hold; more are routed but not retained."""
    max_retained_bytes_per_network: int = 64 * 1024 * 1024
    """Retained bytes (payload + topic) one network may hold; past it: routed, not retained."""
    max_filters_per_subscribe: int = 64
    """Topic filters handled per SUBSCRIBE; the ones past it get SUBACK 0x80 unexamined."""
    max_subscriptions_per_session: int = 256
    """Topic filters one session may hold; a new one past it gets SUBACK 0x80."""
    # MQTT 5 (and the topic limits of both versions): docs/operations.md "MQTT 5 limits"
    max_session_expiry: int = 7 * 24 * 3600
    """Longest MQTT 5 session expiry interval granted, in seconds; a longer one (or "never")
    is granted this, and the CONNACK says so."""
    receive_maximum: int = 1_000
    """Unacknowledged QoS 1/2 PUBLISHes a client may have in flight toward the gateway
    (announced to MQTT 5 clients as the CONNACK's Receive Maximum); one more closes the
    connection (MQTT 5: DISCONNECT 0x93)."""
    topic_alias_maximum: int = 16
    """Topic aliases an MQTT 5 client may use toward the gateway (0: none); past it 0x94."""
    max_keepalive: int = 3600
    """Longest keepalive granted to an MQTT 5 client, in seconds (also for one asking 0);
    a longer one is answered with Server Keep Alive. 0: no cap. 3.1.1 keeps its own."""
    max_topic_levels: int = 32
    """Levels of a topic name or filter; past it: 3.1.1 closed, MQTT 5 0x90/0x8F/0x99."""
    max_mounted_topic_length: int = 1024
    """UTF-8 bytes of a topic once mounted in its jail; past it: as `max_topic_levels`."""
    max_commands_per_network: int = 100
    """Control commands with a correlation id remembered per network for their answer
    (an hour each); past it the oldest is forgotten."""
    publish_rate: float = 1_000.0
    """Inbound PUBLISH packets per second per connection (token bucket; over it: stop reading)."""
    publish_burst: int = 2_000
    """PUBLISH packets a connection may send at once before the rate applies."""
    filter_rate: float = 100.0
    """Topic filters per second per connection, counted in SUBSCRIBE and UNSUBSCRIBE packets
    (token bucket; over it: stop reading). Decoding a filter costs ~2 us of the event loop
    where a PUBLISH byte costs nanoseconds: one 256 KiB SUBSCRIBE holds ~17,000 filters."""
    filter_burst: int = 512
    """Topic filters a connection may send at once before the rate applies."""
    byte_rate: float = 4.0 * 1024 * 1024
    """Inbound bytes per second per connection (token bucket; over it: stop reading)."""
    byte_burst: int = 8 * 1024 * 1024
    """Bytes a connection may send at once before the rate applies."""
    max_pending: int = 1_024
    """Unauthenticated connections (MQTT: TLS handshake not finished; HTTPS: that, or no
    client certificate), per listener, in total; past it the oldest one is dropped."""
    max_pending_per_source: int = 32
    """The same, per source address; past it that source's oldest one is dropped."""
    max_handshakes_in_progress: int = 256
    """MQTT TLS handshakes worked on at once; the others wait their turn in arrival order (a
    reconnect storm then finishes each handshake in milliseconds instead of starting them all
    and timing most out). A handshake counts for one second at most."""
    http_unauthenticated_head_timeout: float = 5.0
    """Seconds an HTTPS connection without a client certificate may take per request head."""
    http_connection_rate: float = 200.0
    """New HTTPS connections accepted per second in total; past it (and past the burst) they
    are closed at accept, before TLS: a handshake flood can take a bounded share of the CPU
    the devices' traffic needs, about 200 x 1 ms of it per second."""
    http_connection_burst: int = 400
    """The same, how many may arrive at once."""
    http_connection_rate_per_source: float = 50.0
    """New HTTPS connections per second from one source address (an IPv4 address or an IPv6
    /64), checked before `http_connection_rate`: one source's flood spends only its share."""
    http_connection_burst_per_source: int = 200
    """The same, how many may arrive at once (a console page opens several)."""
    max_queued_operations_per_network: int = 1_000
    """Write operations one network may have waiting for the store's writer (one socket
    read's reports are one); past it that network's connections stop reading."""
    max_queued_reports_per_network: int = 20_000
    """Readings one network may have waiting for the writer; past it: the same."""
    max_queued_reports: int = 200_000
    """Readings waiting for the writer in total; past it only networks below their share of
    it may queue more (the others stop reading)."""
    max_readings_per_second_per_network: float = 10_000.0
    """Readings one network may store per second (a batch counts its readings; token bucket
    shared by its connections); over it the publishing connection stops reading."""
    readings_burst_per_network: int = 20_000
    """Readings one network may send at once before `max_readings_per_second_per_network`."""
    max_stored_bytes_per_network: int = 1024 * 1024 * 1024
    """Bytes one network's stored readings and commands may take (data + 48 per row); past
    it its reports are refused (`errors` topic, code QUOTA). 0: no limit."""
    history_retention_days: int = 0
    """Readings and commands older than this many days are deleted, hourly (PostgreSQL: by
    whole weeks, so up to 7 days later). 0: keep them until the network is erased."""
    # [console]
    console_login_failures: int = 5
    """Failed console logins per email, and per client address, within
    `console_login_window`; past it that email or address gets 429 until the window passes."""
    console_login_window: float = 900.0
    """Seconds of the login-failure window (also the sign-up window)."""
    console_login_tracked: int = 10_000
    """Emails and addresses whose failures are remembered; the oldest are forgotten first."""
    console_session_idle: float = 8 * 3600.0
    """Seconds a console session may stay unused before it ends."""
    console_event_streams: int = 64
    """Live-update streams open at once; past it 503."""
    console_event_streams_per_account: int = 4
    """Live-update streams one account may hold open; past it 503."""
    console_event_interval: float = 2.0
    """Seconds between live updates of the overview."""
    console_chart_buckets: int = 300
    """Buckets a chart is drawn from (min and max of each): at most twice as many points,
    however many reports the time range holds."""
    console_chart_reports: int = 100_000
    """Reports read for one chart at most (the newest of the range); older ones are left out."""
    console_page_size: int = 100
    """Networks listed per overview page."""
    console_scan_limit: int = 10_000
    """Networks one filtered overview page examines at most; past it a "more" link goes on."""
    console_signup: bool = True
    """Owners may create their own account (email and password) on /console/signup."""
    console_signups_per_address: int = 5
    """Accounts one client address may create within `console_login_window`; past it 429."""
    console_activity_networks: int = 10_000
    """Networks active in the last two minutes whose reports and refused connections per
    minute are kept; past it the least recently active is dropped (its figures read 0)."""
    data_key: Path | None = None
    """The data key file sealing people's personal data (0600). Default <data>/data.key;
    with `store` and no `data`, the console runs only when this is set (the same file on
    every node; never in the database)."""
    # [signer]: device enrolment by claim and renewal (docs/operations.md, "The gateway and
    # the signer"); the gateway relays CSRs and never reads a CA key.
    signer: str = "off"
    """The online signer (`fleet-ca serve`): "unix:/PATH", "https://HOST:PORT" or "off"
    (claim certificates are then refused and `cert/renew` is answered `no_signer`)."""
    signer_cert: Path | None = None
    """Registrar certificate (chain) for an HTTPS signer (`fleet-ca issue registrar`)."""
    signer_key: Path | None = None
    """Its private key."""
    signer_timeout: float = 10.0
    """Seconds one signing request may take; past it the device is answered signer_timeout."""
    signer_max_inflight: int = 16
    """Signing requests in flight from this gateway; past it: answered `busy`."""
    provision_inflight_per_claim: int = 4
    """Provisioning requests in flight per claim certificate (a batch); past it: `busy`."""
    max_connections_per_claim: int = 100
    """Live connections of one claim certificate; past it: CONNACK 3 (server unavailable)."""
    provision_session_timeout: float = 300.0
    """Seconds a claim connection may stay; then it is closed (THROTTLED)."""
    renewals_awaiting_use: int = 10_000
    """Renewed certificates remembered until their first connection, which tells the signer
    to revoke the old one at once; past it the oldest is forgotten (its old certificate is
    then revoked at the end of the signer's grace, as after a gateway restart)."""
    # [cluster]: nodes sharing one PostgreSQL store (docs/operations.md, "Cluster")
    node: str | None = None
    """This node's name, unique in the cluster (default: $FLEETGATE_NODE, else <host>-<pid>);
    a second live node with the same name is refused at start."""
    workers: int = 1
    """Gateway processes this `serve` runs, sharing the MQTT and HTTPS ports (SO_REUSEPORT),
    named <node>-1 .. <node>-N; more than 1 needs a PostgreSQL store."""
    reuse_port: bool = False
    """Bind the MQTT and HTTPS listeners with SO_REUSEPORT (set for each of --workers)."""
    node_heartbeat_interval: float = 1.0
    """Seconds between a node's heartbeats (its row in the cluster's node table)."""
    node_dead_after: float = 5.0
    """Seconds without a heartbeat after which a node is declared dead by one survivor, which
    publishes its devices' wills and takes over its sessions."""
    node_dead_retention: float = 900.0
    """Seconds a dead node stays listed (cluster status, /metrics) after it was reaped."""
    # [log]
    log_file: str = "-"
    """Where JSON log lines go: "-" for stderr, or a file path (appended)."""
    truncate_ip: bool = True
    """Log peer addresses truncated to /24 (IPv4) and /48 (IPv6): they are personal data."""
    log_max_bytes: int = 100 * 1024 * 1024
    """Rotate `log_file` past this size (0: never; leave it to an external tool and SIGHUP)."""
    log_backups: int = 30
    """Rotated log files kept at most (`log_file.1` ... `log_file.N`): with `log_max_bytes`,
    the disk the log may take, (N + 1) x log_max_bytes."""
    log_retention_days: int = 30
    """Rotated log files older than this are deleted, so the peer addresses in them go too
    (`log_file` itself is rotated at UTC midnight). 0: keep them (external rotation)."""
    log_level: str = "info"
    """Lines below this level are not written: debug, info, warning or error."""
    log_lines_per_connection: float = 10.0
    """Log lines one connection may write per second; past it they are counted and summed up
    in one `log_suppressed` line (connected/disconnected/refused/revoked always pass)."""
    log_lines_burst: int = 100
    """Lines one connection may write at once before `log_lines_per_connection` applies."""

    @property
    def root_path(self) -> Path:
        return self._home() / "root.crt"

    @property
    def crl_path(self) -> Path:
        return self._home() / "crl.pem"

    @property
    def cert_path(self) -> Path:
        return self.cert if self.cert is not None else self._home() / "server" / "server.crt"

    @property
    def key_path(self) -> Path:
        return self.key if self.key is not None else self._home() / "server" / "server.key"

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return None if self.metrics == "off" else parse_address(self.metrics)

    @property
    def erasure_ledger_path(self) -> Path:
        if self.erasure_ledger is not None:
            return self.erasure_ledger
        if self.data is None:
            raise ConfigError("no data folder: pass --data DIR or set data in [mqtt]")
        return self.data / "erasures.jsonl"

    @property
    def data_key_path(self) -> Path | None:
        """The console's data key file, or None (no console)."""
        if self.data_key is not None:
            return self.data_key
        return None if self.data is None else self.data / "data.key"

    @property
    def mqtt_address(self) -> tuple[str, int]:
        return parse_address(self.mqtt)

    @property
    def http_address(self) -> tuple[str, int] | None:
        return None if self.http == "off" else parse_address(self.http)

    def _home(self) -> Path:
        if self.ca_home is None:
            raise ConfigError("no CA home: pass --ca-home DIR or set ca_home in [tls]")
        return self.ca_home


_PATH_FIELDS = {"ca_home", "cert", "key", "data", "erasure_ledger", "signer_cert", "signer_key",
                "data_key"}
_FIELDS = {f.name: f for f in dataclasses.fields(GatewayConfig)}
_SECTIONS = ("tls", "mqtt", "limits", "console", "signer", "cluster", "log")


def check_store(url: str) -> str:
    """Check a store URL (`store`, `--store`, FLEETGATE_STORE) before anything connects.

    Raises:
        gateway.storage.BadStoreURL: a ConfigError with its own exit code (cli.py).
    """
    from .storage.postgres.url import check_store_url  # psycopg only when a URL is given

    return check_store_url(url)


def parse_address(text: str) -> tuple[str, int]:
    """Split "HOST:PORT" (IPv6 as "[::1]:PORT") and check the port.

    Raises:
        ConfigError: not HOST:PORT, or the port is not 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"bad listener address {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _coerce(name: str, value: Any) -> Any:
    field = _FIELDS.get(name)
    if field is None:
        raise ConfigError(f"unknown option {name!r}")
    if value is None:
        return None
    if name in _PATH_FIELDS:
        if not isinstance(value, str | Path):
            raise ConfigError(f"option {name!r} must be a path string")
        return Path(value).expanduser()
    kind = field.type  # a string: annotations are postponed in this module
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"option {name!r} must be true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"option {name!r} must be an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"option {name!r} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"option {name!r} must be a string")
    return value


def _flatten(doc: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _SECTIONS and isinstance(value, dict):
            for inner, inner_value in value.items():
                flat[inner] = inner_value
        else:
            flat[key] = value
    return flat


def _validate(config: GatewayConfig) -> GatewayConfig:
    config.mqtt_address  # noqa: B018 - raises ConfigError on a bad address
    config.http_address  # noqa: B018
    config.metrics_address  # noqa: B018
    if config.store is not None:
        check_store(config.store)
    positive = (
        "crl_poll_interval", "handshake_timeout", "connect_timeout", "keepalive_factor",
        "max_connections", "max_connections_per_network", "connection_rate",
        "connection_burst", "connection_rate_per_source", "connection_burst_per_source",
        "max_packet_size", "max_inflight", "max_queued",
        "max_queued_bytes_per_session", "max_queued_bytes_per_network",
        "max_sessions_per_network", "max_retained_per_network", "publish_rate",
        "publish_burst", "filter_rate", "filter_burst", "byte_rate", "byte_burst",
        "max_retained_bytes_per_network",
        "max_filters_per_subscribe", "max_subscriptions_per_session", "max_pending",
        "max_pending_per_source", "max_handshakes_in_progress",
        "http_unauthenticated_head_timeout", "http_connection_rate", "http_connection_burst",
        "http_connection_rate_per_source", "http_connection_burst_per_source",
        "max_queued_operations_per_network", "max_queued_reports_per_network",
        "max_queued_reports", "max_readings_per_second_per_network",
        "readings_burst_per_network",
        "console_login_failures", "console_login_window", "console_login_tracked",
        "console_session_idle", "console_event_streams", "console_event_streams_per_account",
        "console_event_interval", "console_chart_buckets", "console_chart_reports",
        "console_page_size", "console_scan_limit", "console_signups_per_address",
        "console_activity_networks",
        "signer_timeout", "signer_max_inflight",
        "provision_inflight_per_claim", "max_connections_per_claim",
        "provision_session_timeout", "renewals_awaiting_use",
    )
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"option {name!r} must be greater than 0")
    for name in ("log_lines_per_connection", "log_lines_burst"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"option {name!r} must be greater than 0")
    _validate_cluster(config)
    if config.signer != "off" and not config.signer.startswith(("unix:", "https://")):
        raise ConfigError(f"option 'signer' must be unix:/PATH, https://HOST:PORT or off, "
                          f"not {config.signer!r}")
    for name in ("max_stored_bytes_per_network", "history_retention_days"):
        if getattr(config, name) < 0:
            raise ConfigError(f"option {name!r} must not be negative")
    if config.log_max_bytes < 0 or config.log_backups < 0 or config.log_retention_days < 0:
        raise ConfigError("options 'log_max_bytes', 'log_backups' and 'log_retention_days' "
                          "must not be negative")
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"option 'log_level' must be one of {', '.join(LOG_LEVELS)}, "
                          f"not {config.log_level!r}")
    for name, low, top in (("max_session_expiry", 0, 0xFFFF_FFFE),
                           ("receive_maximum", 1, 0xFFFF), ("topic_alias_maximum", 0, 0xFFFF),
                           ("max_keepalive", 0, 0xFFFF), ("max_topic_levels", 1, 0xFFFF),
                           ("max_mounted_topic_length", 1, 0xFFFF),
                           ("max_commands_per_network", 1, 100_000)):
        if not low <= getattr(config, name) <= top:
            raise ConfigError(f"option {name!r} must be in {low}..{top}")
    if config.max_packet_size > 268_435_455:
        raise ConfigError("option 'max_packet_size' exceeds MQTT's 256 MiB limit")
    if config.byte_burst < config.max_packet_size:
        raise ConfigError("option 'byte_burst' must be at least max_packet_size")
    return config


NODE_NAME_MAX = 64


def _validate_cluster(config: GatewayConfig) -> None:
    node = config.node
    if node is not None and (not node or len(node) > NODE_NAME_MAX or not all(
            c.isascii() and (c.isalnum() or c in "-_.") for c in node)):
        raise ConfigError(f"option 'node' must be 1 to {NODE_NAME_MAX} letters, digits, "
                          f"'-', '_' or '.', not {node!r}")
    if not 1 <= config.workers <= 256:
        raise ConfigError("option 'workers' must be 1 to 256")
    for name in ("node_heartbeat_interval", "node_dead_after", "node_dead_retention"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"option {name!r} must be greater than 0")
    if config.node_dead_after < 2 * config.node_heartbeat_interval:
        raise ConfigError("option 'node_dead_after' must be at least twice "
                          "'node_heartbeat_interval' (one late beat must not kill a node)")


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> GatewayConfig:
    """Build the configuration: defaults, then the TOML file at `path`, then `overrides`.

    `overrides` maps field names to values; a value of None means "not given" and is skipped.

    Raises:
        ConfigError: unreadable or invalid TOML, unknown option, wrong type, bad value.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
        for name, value in _flatten(doc).items():
            values[name] = _coerce(name, value)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
    return _validate(GatewayConfig(**values))
