"""What one metric increment costs: the typed metrics (gateway.metrics) against the
`collections.Counter[str]` with string keys they replaced, each in its call site's form.

A standalone script (not part of `python -m bench`, never part of the tests' pass/fail):

  .venv/bin/python bench/metrics_bench.py                # best of 9 runs of 1,000,000

Both sides run in this process, one after the other, so the ratio holds however busy the
machine is; the nanoseconds do not.
"""

from __future__ import annotations

import sys
import timeit
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.mqtt.packets import QoS  # noqa: E402
from gateway.reasons import RefusalCause  # noqa: E402

NUMBER, REPEAT = 1_000_000, 9
_MESSAGES_IN = ("messages_in_qos0", "messages_in_qos1", "messages_in_qos2")

CASES = [
    # what, the Counter[str] form, the typed form
    ("per PUBLISH in (Gateway.route)", "gw.counters[_MESSAGES_IN[message.qos]] += 1",
     "gw._messages_in.inc(message.qos)"),
    ("per PUBLISH out (Outbound.fill, locals)", "counters[_MESSAGES_IN[message.qos]] += 1",
     "messages_out.inc(message.qos)"),
    ("plain counter (connection.py)", 'gw.counters["throttle_pauses"] += 1',
     "gw.metrics.mqtt.throttle_pauses.inc()"),
    ("labelled by a token", 'gw.counters[f"handshake_refused_{cause}"] += 1',
     "gw.metrics.mqtt.handshakes_refused.inc(cause)"),
]


def main() -> int:
    metrics = GatewayMetrics()
    gw = SimpleNamespace(counters=Counter(), metrics=metrics,
                         _messages_in=metrics.mqtt.messages_in)
    env = {"gw": gw, "message": SimpleNamespace(qos=QoS(1)), "_MESSAGES_IN": _MESSAGES_IN,
           "counters": gw.counters, "messages_out": metrics.mqtt.messages_out,
           "cause": RefusalCause.CERT_EXPIRED}

    def best(stmt: str) -> float:
        runs = timeit.repeat(stmt, globals=env, number=NUMBER, repeat=REPEAT)
        return min(runs) / NUMBER * 1e9

    print(f"{'increment':42s} {'Counter[str]':>12s} {'typed':>9s} {'ratio':>6s}")
    for what, old, new in CASES:
        before, after = best(old), best(new)
        print(f"{what:42s} {before:9.1f} ns {after:6.1f} ns {after / before:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
