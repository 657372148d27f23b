"""fleetgate's certificate authority: root, issuing CA, device/server/operator profiles.

Three layers (STYLE.md rule 6):

- the library, pure, `now` passed in, no disk:
  `ca.keys` (KeyType, generate_key, private_key_pem, load_private_key_pem),
  `ca.profiles` (Issuer.of(cert, key), Hierarchy, build_hierarchy(name=, now=, key_type=),
  build_root, build_issuing, build_device(public_key, issuer=, network=, now=, days=,
  not_before=, not_after=), build_server, build_operator, build_self_signed_device,
  network_of(cert)), `ca.crl` (build_crl, RevokedEntry, REASONS), `ca.csr` (load_csr),
  `ca.verify` (verify_chain, load_pem_chain), `ca.fastsign` (FastDeviceSigner: the bulk
  path, byte-identical to the builder's certificates);
- the store, which owns the CA home on disk (`ca.store`):
  `CAHome.init(path, *, name="fleetgate", key_type="ec-p256", passphrase=None|bytes)`,
  `CAHome.open(path, *, passphrase=None)`, `home.unlock(passphrase)`,
  `home.issue_devices(out_dir, *, count=1, network=None, days=365, now=None, p12=False,
  workers=None) -> list[DeviceBundle]` (network_uuid, serial, dir, fingerprint, not_after;
  cert_path, key_path, ca_path, json_path, p12_path),
  `home.issue_server(out_dir, *, dns=[...], ips=[...]) -> LeafFiles`,
  `home.issue_operator(out_dir, *, name=...) -> LeafFiles`,
  `home.sign_csr(csr_bytes, *, network=None, out=None) -> SignedCert`,
  `home.revoke(serial_or_uuid, *, reason="unspecified")` (rewrites crl.pem atomically),
  `home.write_crl()`, `home.load_crl()`, `home.find(serial_or_uuid) -> list[CertRecord]`,
  `home.renew(uuid, out_dir=... | csr_data=..., out_file=...)`, `home.issuer` (Issuer),
  `home.inventory.select(now=, kind=, status=, expiring_within=)`, and
  `write_bundle(out_dir, key=, cert=, chain=, ca_cert=)` for odd certificates in tests;
  paths: `home.path / "root.crt" | "issuing.crt" | "ca-chain.pem" | "crl.pem"`;
- the CLI `fleet-ca` (`ca.cli:main(argv) -> int`), thin over the store.

Errors: every user mistake raises a `ca.errors.CAError` carrying its exit code.
"""

from .errors import CAError, ExitCode
from .keys import KeyType
from .profiles import Hierarchy, Issuer, Kind, build_hierarchy
from .store import CAHome, DeviceBundle, LeafFiles, SignedCert, write_bundle

__all__ = [
    "CAError",
    "CAHome",
    "DeviceBundle",
    "ExitCode",
    "Hierarchy",
    "Issuer",
    "KeyType",
    "Kind",
    "LeafFiles",
    "SignedCert",
    "build_hierarchy",
    "write_bundle",
]
