"""Device enrolment by claim and renewal over MQTT, relayed to the online signer.

Theory of operation (docs/protocol.md, "Provisioning and renewal"):

- A *claim* certificate (SAN URI `urn:fleetgate:claim:<batch>`) opens no device jail. It is
  admitted into a provisioning jail (`serve_claim`): it may subscribe to
  `provision/accepted` and `provision/rejected` (SUBACK 0x80 for anything else) and publish
  a CSR to `provision/request`; a publish anywhere else closes the connection. The gateway
  relays the CSR with the claim (`SignerClient.enroll`) and answers on the topic: the new
  chain and network UUID, or the signer's reason. One request at a time per connection and
  one certificate per connection; `provision_inflight_per_claim` per claim,
  `signer_max_inflight` in all, each request under `signer_timeout`.
- A device publishing a CSR to `cert/renew` in its own jail gets `cert/renewed` (same
  network, new chain) or `cert/rejected` in its jail (`Provisioning.renew`), the request
  made on behalf of the certificate it connected with; one in flight per network. When the
  new certificate first connects here (or, in a cluster, on any node: the renewal is
  announced to every node), the signer is told (`first_use`) and revokes the old
  one as superseded at once; otherwise the signer does at the end of its grace period.
- A claim revoked while its provisioning session is live: the session is closed as soon as
  the gateway loads the CRL that lists it (`close_claims`), as a revoked device's is.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import trio
from cryptography import x509

from .broker_state import Message
from .device_session import describe
from .errors import ConnectionEnds
from .identity import DeviceIdentity, identity_from_certificate
from .jail import RENEW_REJECTED, RENEWED, Jail
from .metrics import sign_outcome
from .mqtt.errors import RemoteProtocolError
from .mqtt.events import Disconnected, PublishReceived, SubscribeReceived, UnsubscribeReceived
from .mqtt.packets import ConnectReturnCode, QoS
from .mqtt.session import ServerConnection
from .reasons import DisconnectReason, ThrottleLimit
from .signer_client import Refused, SignerClient, SignerUnavailable

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .logs import ConnectionLog, EventLog
    from .metrics import GatewayMetrics

CLAIM_URI_PREFIX = "urn:fleetgate:claim:"
REQUEST, ACCEPTED, REJECTED = "provision/request", "provision/accepted", "provision/rejected"
ANSWER_FILTERS = {ACCEPTED, REJECTED, "provision/+", "provision/#"}
CLAIM_MAX_PACKET = 65536  # bytes: a claim connection's largest packet
MAX_CSR_BYTES = 16 * 1024  # a CSR is ~1 KiB; the signer takes at most 64 KiB


@dataclass(frozen=True, slots=True)
class ClaimIdentity:
    """What a verified claim certificate proves: its batch, which certificate, and its DER
    (presented to the signer on the device's behalf)."""

    batch: str
    serial: int
    not_after: datetime
    der: bytes


def claim_of(der: bytes | None) -> ClaimIdentity | None:
    """The claim a TLS-verified certificate is, or None when it is no claim certificate."""
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        return None
    batches = [u[len(CLAIM_URI_PREFIX):] for u in uris if u.startswith(CLAIM_URI_PREFIX)]
    if len(batches) != 1 or any(u.lower().startswith("urn:uuid:") for u in uris):
        return None
    return ClaimIdentity(batches[0], cert.serial_number, cert.not_valid_after_utc, der)


def csr_der(payload: bytes) -> bytes | None:
    """A CSR payload (PEM or DER) as DER; None when it is neither (the signer judges the
    rest: proof of possession, key strength, requested profile)."""
    if len(payload) > MAX_CSR_BYTES or not payload:
        return None
    if payload.lstrip().startswith(b"-----BEGIN"):
        lines = [line.strip() for line in payload.splitlines()]
        try:
            start = next(i for i, line in enumerate(lines) if line.startswith(b"-----BEGIN"))
            end = next(i for i, line in enumerate(lines) if line.startswith(b"-----END"))
            return base64.b64decode(b"".join(lines[start + 1:end]), validate=True)
        except (StopIteration, binascii.Error, ValueError):
            return None
    return payload if payload[:1] == b"\x30" else None


class Provisioning:
    """The gateway's side of enrolment and renewal: bounds, metrics, the signer client."""

    def __init__(self, config: GatewayConfig, log: EventLog, metrics: GatewayMetrics, *,
                 announce: Callable[[int, str], object] | None = None) -> None:
        """`announce(serial, network)`: told of each renewal this gateway relayed, so the
        other nodes of a cluster expect its first use too (None: a single gateway)."""
        self.config, self.log, self.metrics = config, log, metrics
        self._announce = announce
        self.client: SignerClient | None = None
        if config.signer != "off":
            self.client = SignerClient(config.signer, root=config.root_path,
                                       cert=config.signer_cert, key=config.signer_key)
        self._inflight = 0
        self._per_claim: Counter[int] = Counter()
        self._networks: set[str] = set()
        self.claim_connections: Counter[int] = Counter()
        # Certificates this gateway relayed a renewal for, until first admitted (oldest
        # forgotten past `renewals_awaiting_use`): serial -> network.
        self._awaiting_use: OrderedDict[int, str] = OrderedDict()
        # Live claim connections by claim serial: a revoked claim's are closed (`close_claims`).
        # Live claim connections by claim serial (a revoked claim's are cut): link -> the
        # ids its log lines carry (batch, claim serial, client id).
        self.claim_sessions: dict[int, dict[ClaimLink, dict[str, Any]]] = {}
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run renewal requests (they outlive the connection that asked) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def statistics(self) -> dict[str, Any]:
        return {"inflight": self._inflight, "claims": len(self._per_claim),
                "claim_connections": sum(self.claim_connections.values()),
                "renewals_awaiting_use": len(self._awaiting_use)}

    def close_claims(self, revoked: frozenset[int] | set[int]) -> int:
        """Close the provisioning sessions of the claims in `revoked` (a new CRL's serials);
        walks the smaller of the two sets. Returns how many were closed."""
        live = self.claim_sessions
        serials = ([s for s in revoked if s in live] if len(revoked) < len(live)
                   else [s for s in live if s in revoked])
        closed = 0
        for serial in serials:
            for link, log_ids in list(live.get(serial, {}).items()):
                self.log.emit("revoked", **log_ids, reason="REVOKED")
                link.close(DisconnectReason.REVOKED, "claim certificate revoked")
                closed += 1
        self.metrics.mqtt.revocations_applied.inc(closed)
        return closed

    # -- supersede at first use -------------------------------------------------------

    def expect_first_use(self, serial: int, network: str) -> None:
        """Watch for the first admission of certificate `serial` (a renewal relayed here or,
        in a cluster, by another node); the oldest is forgotten past `renewals_awaiting_use`."""
        self._awaiting_use[serial] = network
        while len(self._awaiting_use) > self.config.renewals_awaiting_use:
            self._awaiting_use.popitem(last=False)
            self.metrics.provisioning.renewals_forgotten.inc()

    def first_use(self, identity: DeviceIdentity, der: bytes | None) -> None:
        """A device was admitted: if its certificate is one this gateway relayed a renewal
        for, tell the signer (in the background, under `signer_timeout`) that it is in use,
        so the certificate it replaced is revoked now rather than after the grace. O(1)."""
        if self._awaiting_use.pop(identity.serial, None) is None:
            return
        if self.client is None or self._nursery is None or der is None:
            return
        client, log, first_use = self.client, self.log, self.metrics.provisioning.first_use

        async def tell() -> None:
            try:
                with trio.fail_after(self.config.signer_timeout):
                    answer = await client.first_use(der)
            except (trio.TooSlowError, SignerUnavailable) as exc:
                first_use.inc("failed")
                log.emit("cert_first_use_failed", network=identity.network,
                         serial=identity.serial_hex, detail=str(exc) or "signer_timeout",
                         kept="the old certificate is revoked at the end of the grace")
                return
            if isinstance(answer, Refused):
                first_use.inc("refused")
                log.emit("cert_first_use_refused", network=identity.network,
                         serial=identity.serial_hex, reason=answer.reason)
                return
            first_use.inc("superseded", answer)
            log.emit("cert_first_use", network=identity.network, serial=identity.serial_hex,
                     superseded=answer)

        self._nursery.start_soon(tell)

    # -- the signer, bounded ------------------------------------------------------------

    async def _sign(self, op: str, csr: bytes | None, der: bytes) -> tuple[bool, dict]:
        """One signer request under the gateway-wide bound and `signer_timeout`: (True,
        accepted payload) or (False, rejected payload)."""
        if self.client is None:
            return False, {"reason": "no_signer", "detail": "this gateway has no signer"}
        if csr is None:
            return False, {"reason": "csr_bad", "detail": "the payload is not a PEM or DER"
                           f" CSR of at most {MAX_CSR_BYTES} bytes"}
        if self._inflight >= self.config.signer_max_inflight:
            return False, {"reason": "busy", "detail": "signer_max_inflight reached; retry"}
        self._inflight += 1
        try:
            with trio.fail_after(self.config.signer_timeout):
                if op == "enroll":
                    answer = await self.client.enroll(csr, der)
                else:
                    answer = await self.client.reenroll(csr, der)
        except trio.TooSlowError:
            return False, {"reason": "signer_timeout", "detail": "the signer did not answer"
                           " within signer_timeout"}
        except SignerUnavailable as exc:
            self.log.emit("signer_unavailable", detail=str(exc))
            return False, {"reason": "signer_unavailable", "detail": "the signer cannot be"
                           " reached now; retry later"}
        finally:
            self._inflight -= 1
        if isinstance(answer, Refused):
            doc: dict[str, Any] = {"reason": answer.reason, "detail": answer.detail}
            if answer.retry_after is not None:
                doc["retry_after"] = answer.retry_after
            return False, doc
        return True, {"network": str(identity_from_certificate(answer.cert).network),
                      "serial": format(answer.cert.serial_number, "x"),
                      "not_after": answer.cert.not_valid_after_utc.isoformat(),
                      "certificate": answer.chain_pem}

    async def enroll(self, claim: ClaimIdentity, payload: bytes) -> tuple[bool, dict]:
        """Exchange one use of `claim` for a certificate of the CSR in `payload`."""
        if self._per_claim[claim.serial] >= self.config.provision_inflight_per_claim:
            ok, doc = False, {"reason": "busy", "detail": "provision_inflight_per_claim"
                              " reached; retry"}
        else:
            self._per_claim[claim.serial] += 1
            try:
                ok, doc = await self._sign("enroll", csr_der(payload), claim.der)
            finally:
                self._per_claim[claim.serial] -= 1
                if not self._per_claim[claim.serial]:
                    del self._per_claim[claim.serial]
        self.metrics.provisioning.provision_requests.inc(sign_outcome(
            "accepted" if ok else doc["reason"]))
        self.log.emit("provision_accepted" if ok else "provision_rejected", batch=claim.batch,
                      claim_serial=claim.serial, **({"network": doc["network"],
                                                     "serial": doc["serial"]} if ok
                                                    else {"reason": doc["reason"]}))
        return ok, doc

    # -- renewal in a device's jail -----------------------------------------------------

    def renew(self, identity: DeviceIdentity, jail: Jail, der: bytes, payload: bytes,
              publish: Callable[[Message], object]) -> None:
        """Start the renewal a device asked for on `cert/renew` (`der`: the certificate it
        connected with, on whose behalf the request is made); the answer goes to `publish`
        in its jail (`cert/renewed` or `cert/rejected`), also if the device left meanwhile."""
        assert self._nursery is not None  # Provisioning.serve runs beside the listener

        async def run() -> None:
            if identity.network in self._networks:
                ok, doc = False, {"reason": "busy", "detail": "a renewal of this network is"
                                  " under way"}
            else:
                self._networks.add(identity.network)
                try:
                    ok, doc = await self._sign("reenroll", csr_der(payload), der)
                finally:
                    self._networks.discard(identity.network)
            self.metrics.provisioning.renewal_requests.inc(sign_outcome(
                "accepted" if ok else doc["reason"]))
            if ok:
                self.expect_first_use(int(doc["serial"], 16), identity.network)
                if self._announce is not None:  # its first use may be on another node
                    self._announce(int(doc["serial"], 16), identity.network)
            self.log.emit("cert_renewed" if ok else "cert_renewal_rejected",
                          network=identity.network, old_serial=identity.serial_hex,
                          **({"serial": doc["serial"]} if ok else {"reason": doc["reason"]}))
            doc["replaces"] = identity.serial_hex
            publish(Message(jail.mount_topic(RENEWED if ok else RENEW_REJECTED),
                            json.dumps(doc).encode(), QoS.AT_LEAST_ONCE))

        self._nursery.start_soon(run)


def _granted(subscribed: dict[str, QoS], topic: str) -> QoS | None:
    """The QoS a claim connection's subscriptions grant an answer on `topic` (None: none)."""
    qos = [q for f, q in subscribed.items() if f == topic or f in ("provision/+", "provision/#")]
    return max(qos) if qos else None


class ClaimLink(Protocol):
    """What `serve_claim` needs of the connection that carries a claim."""

    stream: trio.abc.Stream
    log: ConnectionLog
    peer: str

    async def flush(self) -> None:
        """Send what the connection's protocol core has queued."""

    def close(self, reason: DisconnectReason, detail: str | None = None) -> None:
        """End the connection for `reason` (never blocks)."""


def claim_core(config: GatewayConfig) -> ServerConnection:
    """The protocol core of a claim connection (packets: at most 64 KiB, a CSR needs ~1)."""
    return ServerConnection(max_packet_size=min(config.max_packet_size, CLAIM_MAX_PACKET),
                            max_inflight=config.max_inflight)


async def serve_claim(claim: ClaimIdentity, provisioning: Provisioning, core: ServerConnection,
                      link: ClaimLink) -> None:
    """The provisioning jail of one claim connection, from CONNECT until it ends; `core`
    (`claim_core`) is the protocol core whose output `link.flush()` sends.

    Raises:
        ConnectionEnds: always, with the reason the connection closes.
    """
    from .admission import RECEIVE_SIZE, read_connect

    cfg = provisioning.config
    flush = link.flush
    event = await read_connect(link.stream, core, cfg.connect_timeout, flush)
    log_ids = {"batch": claim.batch, "claim_serial": claim.serial,
               "client_id": event.connect.client_id or "claim"}

    async def refuse(code: ConnectReturnCode, reason: DisconnectReason, cause: str) -> None:
        core.refuse(code)
        await flush()
        link.log.emit("refused", reason=str(reason), cause=cause, **log_ids,
                      peer=link.log.peer(link.peer))
        raise ConnectionEnds(reason, cause)

    if provisioning.client is None:
        await refuse(ConnectReturnCode.NOT_AUTHORIZED, DisconnectReason.AUTH_ERROR,
                     "CLAIM_WITHOUT_SIGNER: claim certificates need the gateway's `signer`")
    if event.connect.will is not None:
        await refuse(ConnectReturnCode.NOT_AUTHORIZED, DisconnectReason.CLIENT_ERROR,
                     "a claim connection may not set a will")
    if provisioning.claim_connections[claim.serial] >= cfg.max_connections_per_claim:
        provisioning.metrics.mqtt.throttled.inc(ThrottleLimit.MAX_CONNECTIONS_PER_CLAIM)
        await refuse(ConnectReturnCode.SERVER_UNAVAILABLE, DisconnectReason.THROTTLED,
                     "max_connections_per_claim")
    provisioning.claim_connections[claim.serial] += 1
    provisioning.claim_sessions.setdefault(claim.serial, {})[link] = log_ids
    try:
        core.accept(session_present=False)
        await flush()
        link.log.emit("provision_connected", **log_ids, peer=link.log.peer(link.peer))
        try:
            with trio.move_on_after(cfg.provision_session_timeout):
                await _claim_session(link, core, claim, provisioning, log_ids, RECEIVE_SIZE)
            raise ConnectionEnds(DisconnectReason.THROTTLED, "provision_session_timeout")
        except ConnectionEnds as ends:
            link.log.emit("provision_disconnected", **log_ids, reason=str(ends.reason),
                                detail=ends.detail)
            raise
    finally:
        provisioning.claim_connections[claim.serial] -= 1
        if not provisioning.claim_connections[claim.serial]:
            del provisioning.claim_connections[claim.serial]
        live = provisioning.claim_sessions.get(claim.serial)
        if live is not None:
            live.pop(link, None)
            if not live:
                del provisioning.claim_sessions[claim.serial]


async def _claim_session(link: ClaimLink, core: ServerConnection, claim: ClaimIdentity,
                         provisioning: Provisioning, log_ids: dict, receive_size: int) -> None:
    subscribed: dict[str, QoS] = {}
    state = {"busy": False, "done": False}
    flush = link.flush

    async def answer(ok: bool, doc: dict) -> None:
        topic = ACCEPTED if ok else REJECTED
        qos = _granted(subscribed, topic)
        if qos is not None and core.can_publish(qos):
            core.publish(topic, json.dumps(doc).encode(), qos)
            await flush()

    async def request(payload: bytes) -> None:
        try:
            ok, doc = await provisioning.enroll(claim, payload)
            state["done"] = ok
            await answer(ok, doc)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the device left: the reader ends the connection
        finally:
            state["busy"] = False

    # Exceptions are caught inside the nursery so they leave it bare, not grouped.
    ended: ConnectionEnds | None = None
    async with trio.open_nursery() as nursery:
        try:
            await _claim_reads(link, core, provisioning, log_ids, receive_size, nursery,
                               subscribed, state, answer, request)
        except ConnectionEnds as exc:
            ended = exc
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            ended = ConnectionEnds(DisconnectReason.CONNECTION_LOST)
        nursery.cancel_scope.cancel()
    assert ended is not None
    raise ended


async def _claim_reads(link: ClaimLink, core: ServerConnection, provisioning: Provisioning,
                       log_ids: dict, receive_size: int, nursery: trio.Nursery,
                       subscribed: dict[str, QoS], state: dict[str, bool], answer: Any,
                       request: Any) -> None:
    flush = link.flush

    while True:
        deadline = core.keepalive_deadline(provisioning.config.keepalive_factor)
        data = None
        with trio.move_on_at(deadline if deadline is not None else float("inf")):
            data = await link.stream.receive_some(receive_size)
        if data is None:
            raise ConnectionEnds(DisconnectReason.KEEP_ALIVE_TIMEOUT)
        core.receive_data(data, trio.current_time())
        while True:
            try:
                event = core.next_event()
            except RemoteProtocolError as exc:
                await flush()
                raise ConnectionEnds(DisconnectReason.CLIENT_ERROR, describe(exc)) from None
            if event is None:
                break
            if isinstance(event, SubscribeReceived):
                codes = []
                for topic_filter, qos in event.subscriptions:
                    if topic_filter in ANSWER_FILTERS:
                        subscribed[topic_filter] = QoS(min(int(qos), 1))
                        codes.append(min(int(qos), 1))
                    else:
                        provisioning.metrics.mqtt.subscribes_denied.inc()
                        link.log.emit("subscribe_denied", **log_ids,
                                            topic_filter=topic_filter,
                                            reason="claim connections subscribe only to "
                                                   "provision/accepted|rejected")
                        codes.append(0x80)
                core.grant(event.packet_id, codes)
            elif isinstance(event, UnsubscribeReceived):
                for topic_filter in event.topic_filters:
                    subscribed.pop(topic_filter, None)
                core.unsubscribed(event.packet_id)
            elif isinstance(event, PublishReceived):
                publish = event.publish
                if publish.topic != REQUEST:
                    provisioning.metrics.mqtt.publishes_denied.inc()
                    link.log.emit("publish_denied", **log_ids, topic=publish.topic,
                                        reason="claim connections publish only to "
                                               "provision/request")
                    raise ConnectionEnds(DisconnectReason.CLIENT_ERROR,
                                         "claim publish outside provision/request")
                if publish.qos > QoS.AT_MOST_ONCE:
                    core.acknowledge(publish.packet_id)
                if _granted(subscribed, ACCEPTED) is None or _granted(subscribed, REJECTED) is None:
                    raise ConnectionEnds(DisconnectReason.CLIENT_ERROR, "subscribe to "
                                         "provision/accepted and provision/rejected first")
                if state["busy"] or state["done"]:
                    why = "busy" if state["busy"] else "already_provisioned"
                    await answer(False, {"reason": why, "detail": "one request at a time,"
                                         " one certificate per connection"})
                else:
                    state["busy"] = True
                    nursery.start_soon(request, publish.payload)
            elif isinstance(event, Disconnected):
                raise ConnectionEnds(DisconnectReason.CLIENT_DISCONNECT if event.graceful
                                     else DisconnectReason.CONNECTION_LOST)
        await flush()
