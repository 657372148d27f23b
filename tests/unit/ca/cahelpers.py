"""Helpers for the CA tests: the openssl CLI as an independent second opinion."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def openssl_verify(home: Path, *certs: Path, extra: tuple[str, ...] = ()):
    """`openssl verify -CAfile root -untrusted issuing CERT...` (the issue's own command)."""
    return openssl("verify", "-CAfile", home / "root.crt", "-untrusted", home / "issuing.crt",
                   *extra, *certs)


def openssl_crl_serials(crl: Path) -> set[int]:
    """Serials that `openssl crl -text` lists."""
    out = openssl("crl", "-in", crl, "-noout", "-text")
    assert out.returncode == 0, out.stderr
    return {
        int(line.split(":", 1)[1].strip(), 16)
        for line in out.stdout.splitlines()
        if line.strip().startswith("Serial Number:")
    }
