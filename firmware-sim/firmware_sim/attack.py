"""The attack matrix: from one device's point of view, try every way out of its jail and
every way in without a valid identity; report what the gateway did.

Two families (docs/security.md, "The jail: what it guarantees"):

- jail escapes, with the attacker's own valid certificate: wildcard and `$` subscriptions,
  topics naming the victim's network UUID, client id / username set to the victim's UUID,
  and a session takeover with the victim's client id;
- identity attacks, without a valid certificate: none, self-signed, another CA's, expired,
  revoked, and a server certificate presented as a client's. The forged ones name the
  victim's network, so a success would be a way into the victim's jail.

Leakage is observed from both ends when a victim bundle is given: the victim subscribes to
`#` in its own jail and, after each attempt, publishes a canary; the attempt got through if
the attacker sees a canary, if the victim sees anything the attacker sent, or if the
victim's session is cut. Ordering makes this exact without sleeping: a connection's
messages arrive in order, so once the attacker's own echo on `sync/<n>` arrives, a canary
routed before it would have arrived too. Without a victim bundle, only the attacker's side
is watched (anything naming the victim's UUID).

Nothing here is tuned to pass: a CONNACK 0 for a forged identity, or one leaked byte, is
reported as GOT THROUGH and the command exits 1.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .bundle import Bundle, load_bundle
from .errors import ExitCode, GatewayError, SimError
from .forge import Creds, make_odd_certs
from .probe import Probe, json_object, raw_connect, shorten


class Verdict(StrEnum):
    REFUSED = "refused"  # the gateway said no (TLS alert, CONNACK refusal, SUBACK 0x80, close)
    CONTAINED = "contained"  # the gateway let it happen inside the attacker's own jail only
    THROUGH = "GOT THROUGH"  # identity accepted, or data crossed between networks
    NOT_TRIED = "not tried"  # what it needs is missing (said in the outcome)


@dataclass(frozen=True, slots=True)
class Result:
    attempt: str
    expectation: str
    outcome: str
    verdict: Verdict


# -- the matrix ----------------------------------------------------------------------------


class Matrix:
    """Runs the attempts; `results` fills in as they go."""

    def __init__(self, host: str, port: int, attacker: Bundle, victim: uuid.UUID,
                 victim_bundle: Bundle | None, odd: dict[str, Creds | str]) -> None:
        self.host, self.port = host, port
        self.attacker = attacker
        self.victim_uuid = victim
        self.victim_bundle = victim_bundle
        self.odd = odd  # kind -> credentials, or the reason they are missing
        self.results: list[Result] = []
        self.victim: Probe | None = None
        # With a victim bundle, the victim here has its own client id (a simulator of the
        # same bundle may be running as `sim-<uuid>`); without one, guess the simulator's.
        self.victim_client_id = (f"victim-{uuid.uuid4().hex[:8]}" if victim_bundle
                                 else f"sim-{victim}")
        self._n = 0
        self._marker = f"ATTACK-{uuid.uuid4().hex[:8]}"

    # -- helpers --

    def _probe(self, **kw: Any) -> Probe:
        return Probe(self.host, self.port, ca=self.attacker.ca, cert=kw.pop("cert", None)
                     or self.attacker.cert, key=kw.pop("key", None) or self.attacker.key, **kw)

    def _attacker(self, **kw: Any) -> Probe:
        self._n += 1
        kw.setdefault("client_id", f"attacker-{self._n}")
        probe = self._probe(**kw)
        admitted, what = probe.connect()
        if not admitted:
            raise GatewayError(f"the attacker's own valid bundle was refused: {what}")
        probe.subscribe("sync/+")
        probe.subscribe("errors")  # where the gateway says why a publish was dropped
        return probe

    def _victim_probe(self, client_id: str, clean: bool = False) -> Probe:
        assert self.victim_bundle is not None
        b = self.victim_bundle
        probe = Probe(self.host, self.port, ca=b.ca, cert=b.cert, key=b.key,
                      client_id=client_id, clean_session=clean)
        admitted, what = probe.connect()
        if not admitted:
            raise GatewayError(f"the victim's bundle was refused: {what}")
        return probe

    @staticmethod
    def _erase_session(open_probe: Callable[..., Probe], client_id: str) -> None:
        """Connect once with clean session 1: the gateway drops the stored session."""
        open_probe(client_id=client_id, clean_session=True).close()

    def start_victim(self) -> None:
        if self.victim_bundle is None:
            return
        self.victim = self._victim_probe(self.victim_client_id)
        self.victim.subscribe("#")
        self.victim.client.publish("canary/retained", f"CANARY-retained-{uuid.uuid4().hex}",
                                   qos=1, retain=True)

    def try_takeover(self) -> None:
        """Take the victim's client id while its persistent session holds a queued message.

        The victim goes offline (its session, subscribed to `#`, stays); another device of
        its network publishes a canary, which the gateway queues for it; the attacker then
        connects with the victim's client id and clean session 0. It got through if it
        receives the canary, or if the victim, back online, does not.
        """
        attempt = f"session takeover (client id {self.victim_client_id})"
        expect = "its own session: the victim's queue is neither read nor lost"
        if self.victim is None:
            self.try_claim(attempt, expect, client_id=self.victim_client_id,
                           clean_session=False)
            return
        self.victim.close()
        helper = self._victim_probe(f"victim-helper-{uuid.uuid4().hex[:8]}", clean=True)
        queued = f"CANARY-queued-{uuid.uuid4().hex}"
        helper.publish("canary/queued", queued.encode())
        helper.close()
        attacker = self._attacker(client_id=self.victim_client_id, clean_session=False)
        try:
            leaks = self._observe(attacker, victim_online=False)
        finally:
            attacker.close()
        self.victim = self._victim_probe(self.victim_client_id)
        if not self.victim.wait_for(lambda m: m.payload == queued.encode()):
            leaks.append("the victim's queued message was gone when it came back")
        self.victim.subscribe("#")  # (its session kept the subscription; this is a no-op)
        self._erase_session(self._attacker, self.victim_client_id)
        if leaks:
            self._record(attempt, expect, "; ".join(leaks), Verdict.THROUGH)
        else:
            self._record(attempt, expect, "got its own session; the victim found its queued "
                         "message on return", Verdict.CONTAINED)

    def _observe(self, attacker: Probe | None, *, victim_online: bool = True) -> list[str]:
        """After an attempt: what crossed between the two networks, if anything."""
        leaks: list[str] = []
        canary = f"CANARY-{uuid.uuid4().hex}"
        if not victim_online:
            pass
        elif self.victim is not None and not self.victim.disconnected.is_set():
            self.victim.client.publish("canary/live", canary, qos=1)
            if not self.victim.wait_for(lambda m: m.payload == canary.encode()):
                leaks.append("the victim lost its session")
        elif self.victim is not None:
            leaks.append(f"the victim's session was cut ({self.victim.disconnect_reason})")
        if attacker is not None and not attacker.disconnected.is_set():
            sync = f"sync/{uuid.uuid4().hex[:8]}"
            attacker.client.publish(sync, b"sync", qos=1)
            attacker.wait_for(lambda m: m.topic == sync)
        if attacker is not None:
            victim_id = str(self.victim_uuid).encode()
            for m in attacker.messages:
                if m.payload.startswith(b"CANARY-") or victim_id in m.payload \
                        or str(self.victim_uuid) in m.topic:
                    leaks.append(f"attacker received {m.topic!r}: {shorten(m.payload[:60])}")
        if self.victim is not None and victim_online:
            for m in self.victim.messages:
                if self._marker.encode() in m.payload:
                    leaks.append(f"victim received {m.topic!r} from the attacker")
            self.victim.messages[:] = [m for m in self.victim.messages
                                       if self._marker.encode() not in m.payload]
        return leaks

    def _record(self, attempt: str, expectation: str, outcome: str, verdict: Verdict) -> None:
        short = attempt.replace(str(self.victim_uuid), "<victim>")  # named in the header
        self.results.append(Result(short, expectation, outcome, verdict))

    # -- jail escapes --

    def try_subscribe(self, topic: str, expect: str) -> None:
        attacker = self._attacker()
        try:
            answer = attacker.subscribe(topic)
            leaks = self._observe(attacker)
        finally:
            attacker.close()
        if leaks:
            self._record(f"subscribe {topic}", expect, "; ".join(leaks), Verdict.THROUGH)
        elif answer.startswith("granted"):
            self._record(f"subscribe {topic}", expect,
                         f"{answer}; saw only its own jail", Verdict.CONTAINED)
        else:
            self._record(f"subscribe {topic}", expect, answer, Verdict.REFUSED)

    def try_publish(self, topic: str, expect: str) -> None:
        attacker = self._attacker()
        try:
            answer = attacker.publish(topic, f"{self._marker} {topic}".encode())
            leaks = self._observe(attacker)
        finally:
            attacker.close()
        denied = [json_object(m.payload) for m in attacker.messages if m.topic == "errors"]
        denied = [d for d in denied if d.get("topic") == topic and "error" in d]
        if leaks:
            self._record(f"publish {topic}", expect, "; ".join(leaks), Verdict.THROUGH)
        elif denied:
            self._record(f"publish {topic}", expect, f"{answer}, dropped (errors: "
                         f"{denied[0]['error']}: {denied[0].get('reason', '')})",
                         Verdict.REFUSED)
        elif answer == "acknowledged":
            where = "the victim saw nothing" if self.victim else "stayed in its own jail"
            self._record(f"publish {topic}", expect, f"{answer}; {where}", Verdict.CONTAINED)
        else:
            self._record(f"publish {topic}", expect, answer, Verdict.REFUSED)

    def try_claim(self, attempt: str, expect: str, **kw: Any) -> None:
        """Connect claiming the victim (client id / username); look for its data."""
        attacker = self._attacker(**kw)
        try:
            answer = attacker.subscribe("#")
            leaks = self._observe(attacker)
        finally:
            attacker.close()
        if leaks:
            self._record(attempt, expect, "; ".join(leaks), Verdict.THROUGH)
        else:
            self._record(attempt, expect, f"connected in its own jail, # {answer}, "
                         "nothing of the victim's", Verdict.CONTAINED)

    # -- identity attacks --

    def try_identity(self, kind: str, attempt: str) -> None:
        expect = "TLS handshake or CONNECT refused"
        creds = self.odd.get(kind)
        if isinstance(creds, str) or (creds is None and kind != "none"):
            self._record(attempt, expect, f"needs {creds or kind}", Verdict.NOT_TRIED)
            return
        admitted, what = raw_connect(self.host, self.port, ca=self.attacker.ca,
                                     cert=creds.cert if creds else None,
                                     key=creds.key if creds else None)
        self._record(attempt, expect, what, Verdict.THROUGH if admitted else Verdict.REFUSED)

    # -- all --

    def run(self) -> list[Result]:
        v = self.victim_uuid
        self.start_victim()
        try:
            only_own = "granted inside its own jail only, or refused"
            self.try_subscribe("#", only_own)
            self.try_subscribe("+/#", only_own)
            self.try_subscribe("/#", only_own)
            self.try_subscribe("+/+/#", only_own)
            self.try_subscribe("$SYS/#", "refused ($-topics are the server's)")
            self.try_subscribe("$share/g/#", "refused ($-topics are the server's)")
            self.try_subscribe(f"{v}/#", "mounted in its own jail: nothing of the victim's")
            self.try_subscribe(f"+/{v}/#", "mounted in its own jail: nothing of the victim's")
            self.try_subscribe(f"../{v}/#", "mounted in its own jail: nothing of the victim's")
            self.try_publish("$SYS/broker/clients", "refused ($-topics are the server's)")
            self.try_publish(f"{v}/control/thermostat/setpoint",
                             "stays in its own jail: the victim sees nothing")
            self.try_publish(f"/{v}/canary/live", "stays in its own jail")
            self.try_publish(f"../{v}/report/thermostat/temperature", "stays in its own jail")
            self.try_claim("client id = victim's UUID",
                           "admitted as itself, jailed in its own network",
                           client_id=str(v))
            self.try_claim("username = victim's UUID",
                           "admitted as itself, jailed in its own network",
                           username=str(v))
            self.try_takeover()
            self.try_identity("none", "no client certificate")
            self.try_identity("self-signed", "self-signed certificate naming the victim")
            self.try_identity("foreign-ca", "another CA's certificate naming the victim")
            self.try_identity("expired", "expired certificate of our CA naming the victim")
            self.try_identity("server", "our server certificate used as a client's")
            self.try_identity("revoked", "revoked certificate of our CA")
            self._observe(None)  # the victim is still fine at the very end
        finally:
            if self.victim is not None:
                if not self.victim.disconnected.is_set():
                    self.victim.publish("canary/retained", b"", retain=True)  # erase it
                self.victim.close()
                with contextlib.suppress(SimError):  # best effort: do not hide the real error
                    self._erase_session(lambda **kw: self._victim_probe(kw["client_id"], True),
                                        self.victim_client_id)
        return self.results


# -- the command -------------------------------------------------------------------------


def print_table(results: list[Result], out: Any) -> None:
    w1 = max(len(r.attempt) for r in results)
    w2 = max(len(r.expectation) for r in results)
    print(f"{'attempt':<{w1}}  {'expectation':<{w2}}  {'verdict':<11}  outcome", file=out)
    print("-" * (w1 + w2 + 30), file=out)
    for r in results:
        print(f"{r.attempt:<{w1}}  {r.expectation:<{w2}}  {r.verdict:<11}  {r.outcome}",
              file=out)


def run_attacks(args: Any) -> int:
    """`firmware-sim attack`: run the matrix, print the table, exit 1 on any breach."""
    import sys

    attacker = load_bundle(args.bundle)
    victim_bundle = load_bundle(args.victim_bundle) if args.victim_bundle else None
    if args.victim:
        try:
            victim = uuid.UUID(args.victim)
        except ValueError:
            raise SimError(f"--victim {args.victim!r} is not a UUID") from None
    elif victim_bundle is not None and victim_bundle.network is not None:
        victim = victim_bundle.network
    else:
        victim = uuid.uuid4()
    if victim_bundle is not None and victim_bundle.network not in (None, victim):
        raise SimError("--victim and --victim-bundle name different networks")
    if attacker.network == victim:
        raise SimError("the attacker and the victim are the same network")
    host, port = args.gateway
    with tempfile.TemporaryDirectory(prefix="firmware-sim-attack-") as tmp:
        odd = make_odd_certs(Path(tmp), victim, ca_home=args.ca_home, given=args.attack_certs)
        matrix = Matrix(host, port, attacker, victim, victim_bundle, odd)
        results = matrix.run()
    if args.json:
        for r in results:
            print(json.dumps({"attempt": r.attempt, "expectation": r.expectation,
                              "outcome": r.outcome, "verdict": str(r.verdict)}))
    else:
        print(f"attacker network {attacker.network}, victim network {victim}", file=sys.stdout)
        if victim_bundle is None:
            print("no --victim-bundle: leakage is watched from the attacker's side only",
                  file=sys.stdout)
        print_table(results, sys.stdout)
    through = [r for r in results if r.verdict is Verdict.THROUGH]
    tried = [r for r in results if r.verdict is not Verdict.NOT_TRIED]
    print(f"{len(tried)} attempts, {len(through)} got through, "
          f"{len(results) - len(tried)} not tried", file=sys.stderr)
    return ExitCode.BREACH if through else ExitCode.OK
