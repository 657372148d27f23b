"""Revoking a network's certificates from its console page, through the online signer.

The gateway holds no CA key: the console asks the signer (`fleet-ca serve`, through the
gateway's `SignerClient`, as a registrar) to revoke every valid certificate of the network,
with a reason and the console account that asked (recorded in the CA's audit trail). The
signer rewrites the CRL before it answers; the gateway ends the device's live session as
soon as it reads that CRL (at once when it reads the CA's crl.pem, as on one machine).

Without a configured signer the page says how to revoke on the CA's machine instead, and
shows no button. With one, erasing a network (or an account with its networks) revokes its
certificates too (`on_erase`). Who may revoke is decided before: an owner only their own
networks (the caller checks ownership, as for every network route).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import trio

from ..signer_client import Refused, SignerUnavailable
from .pages import e

# What a person may revoke for (ca.signer.policy.REVOKE_REASONS), as the form offers them.
REASONS = {
    "key-compromise": "the device or its key was lost, stolen or tampered with",
    "cessation-of-operation": "the device is taken out of service",
    "affiliation-changed": "the device changed hands",
    "privilege-withdrawn": "the device must no longer connect",
    "unspecified": "another reason",
}


def section(network: str, csrf: str, *, signer: bool, operator: bool) -> str:
    """The network page's revoke section: the form, or how to revoke without a signer."""
    command = f"fleet-ca revoke {network} --reason key-compromise"
    if not signer:
        who = ("On the CA's machine, run" if operator else
               "Ask the operators of this gateway to run, on the CA's machine,")
        return (f'<h2>Revoke this network\'s certificate</h2><p id="revoke-offline">This '
                f'gateway has no online signer, so the console cannot revoke. {who} '
                f'<code>{e(command)}</code>; the gateway ends the device\'s session when it '
                f'reads the new CRL.</p>')
    options = "".join(f'<option value="{e(k)}">{e(k)}: {e(v)}</option>'
                      for k, v in REASONS.items())
    return f"""<h2>Revoke this network's certificate</h2>
<p>Revoking asks the certificate authority to revoke every valid certificate of this network:
the device is disconnected at once and cannot connect again until it is given a new
certificate. Its data stays (erase the network to delete it). This cannot be undone.
Choose why, and type the network's UUID to confirm.</p>
<form method="post" action="/console/networks/{e(network)}/revoke" id="revoke">
<input type="hidden" name="csrf" value="{e(csrf)}">
<label>Reason <select name="reason">{options}</select></label>
<input name="confirm" required autocomplete="off"><button type="submit">Revoke</button></form>"""


async def post(console: Any, who: Any, network: UUID,
               fields: dict[str, str]) -> tuple[str, str, int]:
    """Revoke `network`'s certificates for `who` (ownership already checked): the page's
    (title, body, status)."""
    from .pages import message

    if console.signer is None:
        return "Not revoked", message(
            f"this gateway has no online signer: run fleet-ca revoke {network} on the CA's "
            "machine"), 409
    if fields.get("confirm", "").strip().lower() != str(network):
        return "Not revoked", message("type the network's UUID to confirm"), 422
    reason = fields.get("reason", "")
    if reason not in REASONS:
        return "Not revoked", message("choose a reason from the list"), 422
    try:
        with trio.fail_after(console.config.signer_timeout):
            got = await console.signer.revoke(None, reason, network=network, by=who.label)
    except (SignerUnavailable, trio.TooSlowError) as exc:
        console.metrics.revocations_failed.inc()
        return "Not revoked", message(
            f"the signer could not be reached ({exc or 'no answer in time'}): try again, or "
            f"run fleet-ca revoke {network} on the CA's machine"), 503
    if isinstance(got, Refused):
        status = {"already_revoked": 409, "not_found": 404}.get(got.reason, 422)
        text = {"already_revoked": "this network's certificates are already revoked",
                "not_found": "the certificate authority has no certificate of this network"}
        return "Not revoked", message(text.get(got.reason, f"{got.reason}: {got.detail}")), \
            status
    console.metrics.revocations.inc()
    return "Revoked", message(
        f"{len(got)} certificate(s) of network {network} revoked ({reason}): "
        f"{', '.join(got)}. The device's session ends as soon as the gateway reads the new "
        "certificate revocation list."), 200


async def on_erase(console: Any, network: UUID, who: Any) -> None:
    """After an erasure (of a network, or of an account with its networks): revoke the
    network's certificates too when there is a signer (cessation of operation), so the
    identity is dead everywhere and not only barred on this gateway. Best effort: the
    erasure stands whatever the signer answers (a failure is counted)."""
    if console.signer is None:
        return
    try:
        with trio.fail_after(console.config.signer_timeout):
            got = await console.signer.revoke(None, "cessation-of-operation",
                                              network=network, by=who.label)
    except (SignerUnavailable, trio.TooSlowError):
        console.metrics.revocations_failed.inc()
        return
    if not isinstance(got, Refused):
        console.metrics.revocations.inc()
