"""Certificates for the benchmark: made by `fleet-ca` when it works, else by openssl commands.

Both paths produce the same layout, the one `fleet-ca` documents, so every server
and the load generator read the same files whichever tool made them::

    home/root.crt  home/issuing.crt  home/issuing.key  home/crl.pem (fleet-ca only)
    home/server/server.crt (leaf then issuing CA)  home/server/server.key
    devices/<uuid>/device.crt (leaf then issuing CA)  device.key  ca.crt (the root)

The openssl path is also figure 6's baseline (`OPENSSL_DEVICE_LOOP`): a shell loop doing per
device what an operator without a CA tool would do (key, CSR, sign, write).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


class PkiError(RuntimeError):
    """Certificates could not be made; the message names the failing command."""


@dataclass(frozen=True, slots=True)
class Device:
    uuid: str
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Pki:
    """Where the certificates are, and which tool made them."""

    tool: str  # "fleet-ca" or "openssl"
    home: Path
    root: Path
    issuing_cert: Path
    issuing_key: Path
    server_cert: Path
    server_key: Path
    devices: tuple[Device, ...]
    fallback_reason: str | None = None  # why fleet-ca was not used


def _run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise PkiError(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {last[0]}")
    return proc.stdout


def fleet_ca_command() -> str | None:
    """The fleet-ca executable next to this interpreter (the project's venv), if any."""
    exe = VENV_BIN / "fleet-ca"
    if exe.exists():
        return str(exe)
    return shutil.which("fleet-ca")


def fleet_ca_env(home: Path) -> dict[str, str]:
    return {**os.environ, "FLEET_CA_HOME": str(home)}


# ---------------------------------------------------------------------------------------------
# fleet-ca


def _fleet_ca_pki(work: Path, devices: int) -> Pki:
    exe = fleet_ca_command()
    if exe is None:
        raise PkiError("fleet-ca is not installed")
    home = work / "ca-home"
    env = fleet_ca_env(home)
    _run([exe, "init", "--no-passphrase", "--name", "fleetgate bench"], env=env)
    _run(
        [exe, "issue", "server", "--dns", "localhost", "--ip", "127.0.0.1",
         "--out", str(home / "server")],
        env=env,
    )
    out = work / "devices"
    _run([exe, "issue", "device", "--count", str(devices), "--out", str(out)], env=env)
    pki = Pki(
        tool="fleet-ca",
        home=home,
        root=home / "root.crt",
        issuing_cert=home / "issuing.crt",
        issuing_key=home / "issuing.key",
        server_cert=home / "server" / "server.crt",
        server_key=home / "server" / "server.key",
        devices=_read_devices(out),
    )
    _check_layout(pki, devices)
    return pki


def _read_devices(out: Path) -> tuple[Device, ...]:
    found = []
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        if (d / "device.crt").exists() and (d / "device.key").exists():
            found.append(Device(d.name, d / "device.crt", d / "device.key"))
    return tuple(found)


def _check_layout(pki: Pki, devices: int) -> None:
    for path in (pki.root, pki.issuing_cert, pki.issuing_key, pki.server_cert, pki.server_key):
        if not path.exists():
            raise PkiError(f"{pki.tool} did not write {path.name}")
    if len(pki.devices) != devices:
        raise PkiError(f"{pki.tool} wrote {len(pki.devices)} device bundles, not {devices}")


# ---------------------------------------------------------------------------------------------
# openssl

# The per-device loop an operator would write with the openssl CLI: a P-256 key, a CSR, a
# certificate of the device profile signed by the issuing CA, the bundle files. Arguments:
# issuing.crt issuing.key root.crt out-dir count.
OPENSSL_DEVICE_LOOP = r"""
set -euo pipefail
ica="$1"; ikey="$2"; root="$3"; out="$4"; n="$5"
mkdir -p "$out"
for ((i = 0; i < n; i++)); do
    uuid=$(cat /proc/sys/kernel/random/uuid)
    d="$out/$uuid"; mkdir -p "$d"
    (umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$d/device.key" 2>/dev/null)
    openssl req -new -key "$d/device.key" -subj "/CN=$uuid" -out "$d/device.csr"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=clientAuth" "subjectAltName=URI:urn:uuid:$uuid" \
        "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" > "$d/ext.cnf"
    openssl x509 -req -in "$d/device.csr" -CA "$ica" -CAkey "$ikey" \
        -set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 -extfile "$d/ext.cnf" \
        -out "$d/leaf.crt" 2>/dev/null
    cat "$d/leaf.crt" "$ica" > "$d/device.crt"
    cp "$root" "$d/ca.crt"
    rm -f "$d/device.csr" "$d/ext.cnf" "$d/leaf.crt"
done
"""


def openssl_device_loop(issuing_cert: Path, issuing_key: Path, root: Path, out: Path,
                        count: int) -> None:
    """Run the openssl loop for ``count`` device bundles into ``out``."""
    _run(["bash", "-c", OPENSSL_DEVICE_LOOP, "loop", str(issuing_cert), str(issuing_key),
          str(root), str(out), str(count)])


_CA_EXT = """
[root]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
[issuing]
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
[server]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""


def _openssl_pki(work: Path, devices: int, reason: str | None) -> Pki:
    home = work / "ca-home"
    (home / "server").mkdir(parents=True, exist_ok=True)
    ext = home / "ext.cnf"
    ext.write_text(_CA_EXT)
    old = os.umask(0o077)
    try:
        for name in ("root", "issuing", "server/server"):
            _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-out", str(home / f"{name}.key")])
    finally:
        os.umask(old)
    _run(["openssl", "req", "-x509", "-new", "-key", str(home / "root.key"), "-subj",
          "/CN=fleetgate bench root", "-days", "3650", "-sha256", "-extensions", "root",
          "-config", str(ext), "-out", str(home / "root.crt")])
    for name, subj, section, ca, cakey in (
        ("issuing", "/CN=fleetgate bench issuing", "issuing", "root", "root"),
        ("server/server", "/CN=localhost", "server", "issuing", "issuing"),
    ):
        csr = home / f"{name}.csr"
        _run(["openssl", "req", "-new", "-key", str(home / f"{name}.key"), "-subj", subj,
              "-out", str(csr)])
        _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(home / f"{ca}.crt"),
              "-CAkey", str(home / f"{cakey}.key"), "-set_serial",
              str(int.from_bytes(os.urandom(12), "big")), "-days", "825", "-sha256",
              "-extfile", str(ext), "-extensions", section, "-out", str(home / f"{name}.crt")])
        csr.unlink()
    server = home / "server" / "server.crt"
    server.write_text(server.read_text() + (home / "issuing.crt").read_text())
    out = work / "devices"
    openssl_device_loop(home / "issuing.crt", home / "issuing.key", home / "root.crt",
                        out, devices)
    pki = Pki(
        tool="openssl",
        home=home,
        root=home / "root.crt",
        issuing_cert=home / "issuing.crt",
        issuing_key=home / "issuing.key",
        server_cert=server,
        server_key=home / "server" / "server.key",
        devices=_read_devices(out),
        fallback_reason=reason,
    )
    _check_layout(pki, devices)
    return pki


def make_pki(work: Path, devices: int, *, prefer_fleet_ca: bool = True) -> Pki:
    """A CA, a server certificate for localhost/127.0.0.1 and ``devices`` device bundles.

    Uses `fleet-ca` when it is installed and works; otherwise openssl, recording why.
    Raises PkiError when neither works.
    """
    reason = "not tried"
    if prefer_fleet_ca:
        try:
            return _fleet_ca_pki(work / "fleet-ca", devices)
        except PkiError as exc:
            reason = str(exc)
    return _openssl_pki(work / "openssl", devices, reason)


# ---------------------------------------------------------------------------------------------
# revocation (figure 7)

_OPENSSL_CA = """
[ca]
default_ca = bench
[bench]
database = {home}/index.txt
crlnumber = {home}/crlnumber
certificate = {home}/issuing.crt
private_key = {home}/issuing.key
default_md = sha256
default_crl_days = 30
"""


def crl_path(pki: Pki) -> Path:
    """The CRL a server should load, writing a first (empty) one for an openssl-made CA."""
    crl = pki.home / "crl.pem"
    if pki.tool == "openssl" and not crl.exists():
        conf = pki.home / "openssl-ca.cnf"
        conf.write_text(_OPENSSL_CA.format(home=pki.home))
        (pki.home / "index.txt").touch()
        (pki.home / "crlnumber").write_text("01\n")
        _run(["openssl", "ca", "-batch", "-config", str(conf), "-gencrl", "-out", str(crl)])
    if not crl.exists():
        raise PkiError(f"{pki.tool} wrote no crl.pem")
    return crl


def revoke_command(pki: Pki, device: Device) -> list[list[str]]:
    """The commands an operator runs to revoke ``device`` and publish the new CRL."""
    if pki.tool == "fleet-ca":
        return [[str(fleet_ca_command()), "revoke", device.uuid]]
    conf = str(pki.home / "openssl-ca.cnf")
    return [["openssl", "ca", "-batch", "-config", conf, "-revoke", str(device.cert)],
            ["openssl", "ca", "-batch", "-config", conf, "-gencrl",
             "-out", str(pki.home / "crl.pem")]]


def revoke(pki: Pki, device: Device) -> None:
    env = fleet_ca_env(pki.home) if pki.tool == "fleet-ca" else None
    for cmd in revoke_command(pki, device):
        _run(cmd, env=env)
