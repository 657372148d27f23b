"""The online signer over the wire: EST (RFC 7030) on real mutual TLS on 127.0.0.1 port 0
and on a unix socket, with curl as the EST client and openssl to read its answers."""

from __future__ import annotations

import base64
import datetime as dt
import io
import subprocess
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from ca import claims
from ca.keys import private_key_pem
from ca.profiles import network_of
from ca.signer import JsonLog, ServeLimits, Signer, TlsContexts, serve_signer
from ca.store import CAHome

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)  # curl and openssl use the real clock
EST = "/.well-known/est/"


@pytest.fixture
def pki(tmp_path):
    home = CAHome.init(tmp_path / "home", passphrase=None, now=NOW)
    home.issue_server(tmp_path / "srv", dns=["localhost"], ips=["127.0.0.1"], now=NOW)
    claims.issue_claim(home, tmp_path / "claim", batch="line3", uses=2, now=NOW)
    claims.issue_registrar(home, tmp_path / "reg", name="gw1", now=NOW)
    yield home, tmp_path
    home.close()


def device_csr(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A key made on the device, and its CSR as EST's body (base64 DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / f"{name}.key").write_bytes(private_key_pem(key))
    der = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256()).public_bytes(Encoding.DER)
    (tmp_path / f"{name}.b64").write_bytes(base64.encodebytes(der))
    return tmp_path / f"{name}.key", tmp_path / f"{name}.b64"


async def curl(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    cmd = ["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", *map(str, args)]
    return await trio.to_thread.run_sync(
        lambda: subprocess.run(cmd, capture_output=True, timeout=60))


def split(r: subprocess.CompletedProcess[bytes]) -> tuple[int, bytes]:
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code), body


def pkcs7_certs(body: bytes) -> list[x509.Certificate]:
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))


@pytest.fixture
async def signer(pki, nursery):
    home, tmp = pki
    log = io.StringIO()
    tls = TlsContexts(home.path, tmp / "srv" / "server.crt", tmp / "srv" / "server.key")
    s = Signer(home)
    bound = await nursery.start(lambda task_status: serve_signer(
        s, https=("127.0.0.1", 0), tls=tls, unix=tmp / "signer.sock",
        limits=ServeLimits(sweep_interval=3600), log=JsonLog(log), task_status=task_status))
    host, port = bound["https"]
    return {"home": home, "tmp": tmp, "url": f"https://127.0.0.1:{port}{EST}",
            "unix": bound["unix"], "log": log, "signer": s}


def tls_args(sv, who: str | None) -> list[str | Path]:
    args: list[str | Path] = ["--cacert", sv["home"].path / "root.crt"]
    if who:
        stem = {"claim": "claim", "reg": "registrar"}[who]
        folder = sv["tmp"] / who
        args += ["--cert", folder / f"{stem}.crt", "--key", folder / f"{stem}.key"]
    return args


async def test_cacerts_is_a_certs_only_pkcs7_of_the_issuing_ca_and_root(signer):
    code, body = split(await curl(*tls_args(signer, None), signer["url"] + "cacerts"))
    assert code == 200
    home = signer["home"]
    # A SET OF in DER: the order is the encoding's, not ours.
    assert set(pkcs7_certs(body)) == {home.issuing_cert, home.root_cert}
    # openssl reads it as the RFC's shape: base64 of a DER PKCS#7.
    (signer["tmp"] / "cacerts.b64").write_bytes(body)
    out = subprocess.run(["sh", "-c", f"openssl base64 -d -in {signer['tmp']}/cacerts.b64 |"
                          " openssl pkcs7 -inform DER -print_certs -noout"],
                         capture_output=True, text=True)
    assert "Issuing CA" in out.stdout and "Root CA" in out.stdout


async def test_a_claim_enrolls_then_the_device_reenrolls_with_its_own_certificate(signer):
    tmp = signer["tmp"]
    key, body = device_csr(tmp, "dev")
    r = await curl(*tls_args(signer, "claim"), "-H", "Content-Type: application/pkcs10",
                   "--data-binary", f"@{body}", signer["url"] + "simpleenroll")
    code, answer = split(r)
    assert code == 200, answer
    [cert] = pkcs7_certs(answer)
    network = network_of(cert)
    assert network is not None
    (tmp / "dev.crt").write_bytes(cert.public_bytes(Encoding.PEM)
                                  + signer["home"].issuing_cert.public_bytes(Encoding.PEM))
    # The new identity renews itself: same network, new certificate.
    _, body2 = device_csr(tmp, "dev2")
    r = await curl("--cacert", signer["home"].path / "root.crt", "--cert", tmp / "dev.crt",
                   "--key", key, "-H", "Content-Type: application/pkcs10",
                   "--data-binary", f"@{body2}", signer["url"] + "simplereenroll")
    code, answer = split(r)
    assert code == 200, answer
    [renewed] = pkcs7_certs(answer)
    assert network_of(renewed) == network and renewed.serial_number != cert.serial_number
    lines = signer["log"].getvalue()
    assert "claim:line3" in lines and f"device:{network}" in lines
    assert "127.0.0.1" not in lines.replace('"https": "127.0.0.1', "")


async def test_refusals_carry_their_status_and_reason(signer):
    tmp = signer["tmp"]
    _, body = device_csr(tmp, "d")
    (tmp / "junk.b64").write_bytes(base64.encodebytes(b"not a csr"))
    cases = [
        (tls_args(signer, None), body, "simpleenroll", 401, "needs a claim"),
        (tls_args(signer, "claim"), tmp / "junk.b64", "simpleenroll", 400, "not a PEM or DER"),
        (tls_args(signer, "claim"), body, "simplereenroll", 401, "current"),
        (tls_args(signer, "claim"), body, "nothing", 404, "no EST operation"),
    ]
    for args, b, op, status, text in cases:
        code, answer = split(await curl(*args, "-H", "Content-Type: application/pkcs10",
                                        "--data-binary", f"@{b}", signer["url"] + op))
        assert code == status and text.encode() in answer, (op, answer)
    # Two uses, then exhausted; the signer keeps serving.
    for expected in (200, 200, 403):
        code, answer = split(await curl(*tls_args(signer, "claim"), "-H",
                                        "Content-Type: application/pkcs10", "--data-binary",
                                        f"@{body}", signer["url"] + "simpleenroll"))
        assert code == expected, answer
    assert b"no uses left" in answer
    code, _ = split(await curl(*tls_args(signer, None), signer["url"] + "cacerts"))
    assert code == 200


async def test_a_revoked_claim_is_refused_at_the_tls_handshake(signer):
    home, tmp = signer["home"], signer["tmp"]
    serial = x509.load_pem_x509_certificates((tmp / "claim" / "claim.crt").read_bytes())[0]
    home.revoke(serial.serial_number)
    _, body = device_csr(tmp, "d")
    r = await curl(*tls_args(signer, "claim"), "-H", "Content-Type: application/pkcs10",
                   "--data-binary", f"@{body}", signer["url"] + "simpleenroll")
    assert r.returncode != 0  # the handshake failed: no HTTP answer at all
    assert signer["signer"].statistics()["counters"]["handshakes_refused"] == 1


async def test_a_registrar_enrolls_on_behalf_of_a_claim_and_over_the_unix_socket(signer):
    tmp = signer["tmp"]
    claim_der = x509.load_pem_x509_certificates((tmp / "claim" / "claim.crt").read_bytes())[
        0].public_bytes(Encoding.DER)
    header = "Fleetgate-Claim: " + base64.b64encode(claim_der).decode()
    _, body = device_csr(tmp, "d")
    code, answer = split(await curl(*tls_args(signer, "reg"), "-H", header, "-H",
                                    "Content-Type: application/pkcs10", "--data-binary",
                                    f"@{body}", signer["url"] + "simpleenroll"))
    assert code == 200, answer
    code, answer = split(await curl("--unix-socket", signer["unix"], "-H", header, "-H",
                                    "Content-Type: application/pkcs10", "--data-binary",
                                    f"@{body}", "http://signer" + EST + "simpleenroll"))
    assert code == 200, answer
    assert "registrar:gw1" in signer["log"].getvalue()
    assert "unix-socket" in signer["log"].getvalue()
