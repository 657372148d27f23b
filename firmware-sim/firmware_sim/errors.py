"""The simulator's one error tree; each error carries the exit code `firmware-sim` returns."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of `firmware-sim` (documented in its --help)."""

    OK = 0
    BREACH = 1  # `attack`: at least one attempt got through
    GOAL_MISSED = 1  # `attack --resources`: an isolation goal was missed
    USAGE = 2  # bad command line (argparse's own code)
    BUNDLE = 3  # a bundle folder is missing, incomplete or unreadable
    MODEL = 4  # the --model file is not a usable declaration
    GATEWAY = 5  # the gateway could not be reached, or refused this device
    REJECTED = 6  # the gateway answered model/rejected
    CERTS = 7  # attack certificates could not be made or found


class SimError(Exception):
    """Base of every error a user of the simulator can cause."""

    exit_code: ExitCode = ExitCode.USAGE


class BundleError(SimError):
    exit_code = ExitCode.BUNDLE


class ModelError(SimError):
    exit_code = ExitCode.MODEL


class GatewayError(SimError):
    exit_code = ExitCode.GATEWAY


class RejectedError(SimError):
    exit_code = ExitCode.REJECTED


class CertsError(SimError):
    exit_code = ExitCode.CERTS
