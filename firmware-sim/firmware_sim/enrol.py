"""Provisioning by claim and renewal, as a firmware does them (docs/protocol.md,
"Provisioning and renewal"), over a short paho connection of their own.

- `provision(claim_dir, out_dir, host, port)`: make the key on the device, connect with the
  batch's claim certificate (`claim.crt`, `claim.key`, `ca.crt`), subscribe to
  `provision/+`, publish the CSR to `provision/request`, and keep `provision/accepted`'s
  chain with the key as a normal bundle (`device.crt`, `device.key`, `ca.crt`).
- `renew(bundle_dir, host, port)`: the same with the device's own certificate on
  `cert/renew` -> `cert/renewed`; the bundle's files are replaced only once the new
  certificate is in hand (and matches the new key).
- `renewal_due(cert_path, now)`: two thirds of the certificate's lifetime have passed.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import ssl
import uuid
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import BundleError, GatewayError, RejectedError

WAIT = 30.0


def _key_and_csr() -> tuple[bytes, bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, csr.public_bytes(serialization.Encoding.PEM), key


def _exchange(cert: Path, key: Path, ca: Path, host: str, port: int, topic: str,
              payload: bytes, answers: tuple[str, str]) -> tuple[str, dict]:
    """Connect, subscribe to the answers, publish, wait for one answer: (topic, document)."""
    got: queue.Queue = queue.Queue()
    subscribed: queue.Queue = queue.Queue()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"enrol-{uuid.uuid4()}",
                         clean_session=True, protocol=paho.MQTTv311)
    client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key),
                   cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.on_connect = lambda c, u, f, rc, p: (c.subscribe([(answers[0], 1), (answers[1], 1)])
                                                if not rc.is_failure else got.put(("", rc)))
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(codes)
    client.on_message = lambda c, u, m: got.put((m.topic, m.payload))
    try:
        client.connect(host, port, 30)
    except (OSError, ValueError) as exc:
        raise GatewayError(f"cannot connect to {host}:{port}: {exc}") from None
    client.loop_start()
    try:
        try:
            subscribed.get(timeout=WAIT)
        except queue.Empty:
            raise GatewayError("the gateway did not answer the subscription") from None
        client.publish(topic, payload, qos=1)
        try:
            answer, body = got.get(timeout=WAIT)
        except queue.Empty:
            raise GatewayError(f"no answer on {answers[0]} or {answers[1]}") from None
        if not answer:
            raise GatewayError(f"the gateway refused the connection: {body}")
        try:
            return answer, json.loads(body)
        except ValueError:
            raise GatewayError(f"unreadable answer on {answer}") from None
    finally:
        client.disconnect()
        client.loop_stop()


def _write_bundle(out: Path, key_pem: bytes, chain_pem: str, ca: Path,
                  key: ec.EllipticCurvePrivateKey) -> None:
    cert = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    if cert.public_key() != key.public_key():
        raise RejectedError("the certificate answered is not for our key")
    out.mkdir(parents=True, exist_ok=True)
    for name, data, mode in (("device.key", key_pem, 0o600),
                             ("device.crt", chain_pem.encode(), 0o644)):
        tmp = out / f".{name}.new"
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, out / name)  # a crash leaves the old file or the new, never half
    if not (out / "ca.crt").exists() or (out / "ca.crt").resolve() != ca.resolve():
        shutil.copyfile(ca, out / "ca.crt")


def provision(claim_dir: Path, out_dir: Path, host: str, port: int) -> dict:
    """Exchange the claim for a device identity written to `out_dir`; return the accepted
    document (network, serial, not_after). Raises BundleError, GatewayError, RejectedError."""
    files = [claim_dir / f for f in ("claim.crt", "claim.key", "ca.crt")]
    if missing := [f.name for f in files if not f.is_file()]:
        raise BundleError(f"claim {claim_dir}: missing {', '.join(missing)}")
    key_pem, csr, key = _key_and_csr()
    topic, doc = _exchange(*files, host, port, "provision/request", csr,
                           ("provision/accepted", "provision/rejected"))
    if topic != "provision/accepted":
        raise RejectedError(f"provisioning refused: {doc.get('reason')}: {doc.get('detail')}")
    _write_bundle(out_dir, key_pem, doc["certificate"], files[2], key)
    return doc


def renew(bundle_dir: Path, host: str, port: int) -> dict:
    """Renew the bundle's certificate in place (new key, same network); return the renewed
    document. Raises GatewayError, RejectedError."""
    key_pem, csr, key = _key_and_csr()
    topic, doc = _exchange(bundle_dir / "device.crt", bundle_dir / "device.key",
                           bundle_dir / "ca.crt", host, port, "cert/renew", csr,
                           ("cert/renewed", "cert/rejected"))
    if topic != "cert/renewed":
        raise RejectedError(f"renewal refused: {doc.get('reason')}: {doc.get('detail')}")
    _write_bundle(bundle_dir, key_pem, doc["certificate"], bundle_dir / "ca.crt", key)
    return doc


def renewal_due(cert_path: Path, now: datetime | None = None) -> bool:
    """Whether two thirds of the certificate's lifetime have passed at `now`."""
    cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return (now or datetime.now(UTC)) >= start + (end - start) * 2 / 3
