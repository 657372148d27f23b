"""The `ca` package's one error tree.

Every error a user can cause is a `CAError` subclass carrying the process exit code the CLI
returns for it, so `fleet-ca` maps any of them to one line on stderr and a distinct code.
Anything that is not a `CAError` is a bug (exit 1, with a traceback only under --debug).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of `fleet-ca`; documented in `fleet-ca --help`."""

    OK = 0
    INTERNAL = 1  # a bug: please report it
    USAGE = 2  # bad command line (argparse's own code)
    HOME_NOT_FOUND = 3
    HOME_INVALID = 4  # a folder that is not a fleet-ca home, or a damaged one
    HOME_EXISTS = 5  # init refuses to overwrite
    PASSPHRASE = 6  # missing or wrong passphrase
    NOT_FOUND = 7  # unknown serial or network UUID
    BAD_CSR = 8  # not a parseable CSR, or an unacceptable key
    FORGED_CSR = 9  # the CSR's signature does not match its key (no proof of possession)
    ALREADY_REVOKED = 10
    OUTPUT = 11  # output folder or file unwritable, or already there
    BAD_INPUT = 12  # a bad value: certificate file, day count, name, address
    VERIFY_FAILED = 13  # `verify`: the chain does not verify
    REVOKED = 14  # `verify`: the chain verifies but the certificate is revoked
    INVENTORY = 15  # the SQLite inventory is locked too long, full, or read-only
    AUDIT_BROKEN = 16  # `audit --verify`: the hash chain is broken (tampering or damage)
    CLAIM_REFUSED = 17  # a claim that is unknown, revoked, expired or used up
    SIGN_REFUSED = 18  # the online signer refused a request (reason in the message)


class CAError(Exception):
    """Base of every error a user of the CA can cause. `exit_code` is what the CLI returns."""

    exit_code: ExitCode = ExitCode.INTERNAL


class HomeNotFoundError(CAError):
    exit_code = ExitCode.HOME_NOT_FOUND


class HomeInvalidError(CAError):
    exit_code = ExitCode.HOME_INVALID


class HomeExistsError(CAError):
    exit_code = ExitCode.HOME_EXISTS


class PassphraseError(CAError):
    exit_code = ExitCode.PASSPHRASE


class NotFoundError(CAError):
    exit_code = ExitCode.NOT_FOUND


class BadCSRError(CAError):
    exit_code = ExitCode.BAD_CSR


class ForgedCSRError(CAError):
    exit_code = ExitCode.FORGED_CSR


class AlreadyRevokedError(CAError):
    exit_code = ExitCode.ALREADY_REVOKED


class OutputError(CAError):
    exit_code = ExitCode.OUTPUT


class BadInputError(CAError):
    exit_code = ExitCode.BAD_INPUT


class VerifyFailedError(CAError):
    exit_code = ExitCode.VERIFY_FAILED


class RevokedError(CAError):
    exit_code = ExitCode.REVOKED


class InventoryError(CAError):
    exit_code = ExitCode.INVENTORY


class AuditBrokenError(CAError):
    """The audit chain is broken at entry `seq` (the first one that does not verify)."""

    exit_code = ExitCode.AUDIT_BROKEN

    def __init__(self, seq: int, why: str) -> None:
        super().__init__(f"audit trail broken at entry {seq}: {why}")
        self.seq = seq


class ClaimRefusedError(CAError):
    """A claim cannot be used: `reason` is one of unknown, revoked, expired, exhausted."""

    exit_code = ExitCode.CLAIM_REFUSED

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SignRefusedError(CAError):
    """The online signer refuses a request: `reason` (a stable word for logs and clients)
    and the HTTP `status` EST answers with."""

    exit_code = ExitCode.SIGN_REFUSED

    def __init__(self, reason: str, message: str, status: int = 400,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
