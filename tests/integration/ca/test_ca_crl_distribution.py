"""CRL distribution: the signer serves each issuing CA's CRL over plain HTTP (and beside EST
on HTTPS), certificates issued once a CRL URL is set name theirs as a CRL distribution point,
and `fleet-ca crl --if-due` re-signs only when a nextUpdate is near. curl is the client; the
last test runs `fleet-ca serve` as its own process."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ca import claims
from ca.cli import main
from ca.signer import JsonLog, ServeLimits, Signer, TlsContexts, serve_signer
from ca.store import CAHome

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


async def curl(url: str, *args: str) -> tuple[int, bytes]:
    cmd = ["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", *args, url]
    r = await trio.to_thread.run_sync(lambda: subprocess.run(cmd, capture_output=True,
                                                             timeout=60))
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code), body


def csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256()).public_bytes(Encoding.DER)


def dp_uri(cert: x509.Certificate) -> str:
    dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    [point] = list(dps)
    [uri] = point.full_name
    return uri.value


@pytest.fixture
def home(tmp_path):
    h = CAHome.init(tmp_path / "home", passphrase=None, now=NOW)
    h.issue_server(tmp_path / "srv", dns=["localhost"], ips=["127.0.0.1"], now=NOW)
    yield h
    h.close()


@pytest.fixture
async def served(home, tmp_path, nursery):
    tls = TlsContexts(home.path, tmp_path / "srv" / "server.crt", tmp_path / "srv" / "server.key")
    bound = await nursery.start(lambda task_status: serve_signer(
        Signer(home), https=("127.0.0.1", 0), tls=tls, crl_http=("127.0.0.1", 0),
        limits=ServeLimits(sweep_interval=3600), log=JsonLog(io.StringIO()),
        task_status=task_status))
    return bound


async def test_certificates_name_their_crl_and_the_signer_serves_it_current(
        home, served, tmp_path):
    base = f"http://127.0.0.1:{served['crl'][1]}"
    assert main(["--home", str(home.path), "crl", "--url", base + "/"]) == 0
    home.unlock(None)  # the issuer is built again, with the URL
    bundle = home.issue_devices(tmp_path / "dev", now=NOW)[0]
    cert = x509.load_pem_x509_certificate(bundle.cert_path.read_bytes())
    ski = home.issuing_cert.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    assert dp_uri(cert) == f"{base}/crl/{ski.hex()}.crl"
    # Every leaf the home signs names it: a claim, and what the signer enrols for it.
    claim = claims.issue_claim(home, tmp_path / "claim", batch="b", uses=1, now=NOW)
    claim_cert = x509.load_pem_x509_certificate(claim.cert_path.read_bytes())
    assert dp_uri(claim_cert) == dp_uri(cert)
    enrolled = Signer(home).enroll(csr(), claim=claim_cert, now=NOW, actor="test")
    assert dp_uri(enrolled.cert) == dp_uri(cert)
    code, der = await curl(dp_uri(cert))
    assert code == 200
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(home.issuing_cert.public_key())
    assert crl.get_revoked_certificate_by_serial_number(bundle.serial) is None
    # A revocation is in the next fetch, without a restart.
    home.revoke(str(bundle.network_uuid), reason="key-compromise")
    code, der = await curl(dp_uri(cert))
    assert x509.load_der_x509_crl(der).get_revoked_certificate_by_serial_number(
        bundle.serial) is not None
    # Every CRL in PEM on both listeners; the plain one serves nothing but CRLs.
    https = f"https://127.0.0.1:{served['https'][1]}"
    code, pem = await curl(https + "/crl.pem", "--cacert", str(home.path / "root.crt"))
    assert code == 200 and pem == (home.path / "crl.pem").read_bytes()
    assert (await curl(base + "/crl.pem"))[1] == pem
    code, _ = await curl(base + "/.well-known/est/cacerts")
    assert code == 404
    assert (await curl(base + "/crl/" + "00" * 20 + ".crl"))[0] == 404
    assert (await curl(base + "/crl.pem", "-X", "POST"))[0] == 405
    # Removing the URL: new certificates name none.
    assert main(["--home", str(home.path), "crl", "--no-url"]) == 0
    home.unlock(None)
    plain = home.issue_devices(tmp_path / "dev2", now=NOW)[0]
    with pytest.raises(x509.ExtensionNotFound):
        x509.load_pem_x509_certificate(plain.cert_path.read_bytes()).extensions \
            .get_extension_for_class(x509.CRLDistributionPoints)


def test_a_bad_crl_url_is_refused_in_one_line(home, capsys):
    assert main(["--home", str(home.path), "crl", "--url", "ftp://x/"]) == 12
    assert "not an http:// or https://" in capsys.readouterr().err
    assert not (home.path / "crl-url").exists()


def test_crl_if_due_renews_only_when_next_update_is_near(home, capsys):
    before = (home.path / "crl.pem").read_bytes()
    assert main(["--home", str(home.path), "crl", "--if-due"]) == 0
    assert "not due" in capsys.readouterr().out
    assert (home.path / "crl.pem").read_bytes() == before
    # A fresh CRL lives 30 days: asking for 31 days of margin makes it due.
    assert main(["--home", str(home.path), "crl", "--if-due", "--within", "31"]) == 0
    assert "rewrote" in capsys.readouterr().out
    after = x509.load_pem_x509_crl((home.path / "crl.pem").read_bytes())
    assert after.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > \
        x509.load_pem_x509_crl(before).extensions.get_extension_for_class(
            x509.CRLNumber).value.crl_number


async def test_fleet_ca_serve_as_a_process_serves_the_crl(home, tmp_path):
    env = {**os.environ, "FLEET_CA_HOME": str(home.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ca", "serve", "--unix", str(tmp_path / "s.sock"),
         "--crl-listen", "127.0.0.1:0"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = await trio.to_thread.run_sync(proc.stderr.readline)  # the `listening` line
        doc = json.loads(line)
        assert doc["event"] == "listening", line
        code, pem = await curl(f"http://{doc['crl']}/crl.pem")
        assert code == 200 and pem == (home.path / "crl.pem").read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert x509.load_pem_x509_crl(pem).public_bytes(Encoding.PEM) == pem
