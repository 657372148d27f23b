"""What MQTT 5 subscription options cost the broker's routing, beside plain grants measured
in the same run: one publish to N live subscribers of one jail, each holding a wildcard
subscription and one literal one; with MQTT 5 grants (no local, an identifier each) and a
message expiry, every copy is shaped per subscriber (`gateway.delivery.deliver`).

    python -m bench.route_mqtt5 [--subscribers 50] [--publishes 2000]
"""

from __future__ import annotations

import argparse
import time
import uuid

from gateway.broker import Broker
from gateway.broker_state import Message
from gateway.delivery import Grant
from gateway.mqtt.packets import QoS


class _Outlet:
    def wake(self) -> None:
        pass

    def close(self, reason, detail=None) -> None:
        pass


def per_publish(subscribers: int, publishes: int, v5: bool) -> float:
    """Best of 7 rounds, microseconds per publish."""
    net = str(uuid.uuid4())
    broker = Broker(max_queued=10**9)
    states = []
    for i in range(subscribers):
        state = broker.connect((net, f"c{i}"), True, _Outlet(), expiry=0 if v5 else None).state
        grant = Grant(QoS(1), no_local=True, identifier=i + 1) if v5 else None
        broker.subscribe(state, f"{net}/t/#", QoS(1), grant)
        broker.subscribe(state, f"{net}/other/{i}", QoS(1))
        states.append(state)
    message = Message(f"{net}/t/x", b"21.5", QoS(1),
                      expires_at=time.time() + 60 if v5 else None)
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(publishes):
            broker.publish(message)
        best = min(best, (time.perf_counter() - started) / publishes)
        for state in states:
            state.outbox.clear()
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--publishes", type=int, default=2000)
    args = parser.parse_args()
    plain = per_publish(args.subscribers, args.publishes, False)
    v5 = per_publish(args.subscribers, args.publishes, True)
    print(f"publish to {args.subscribers} subscribers: plain grants {plain:.1f} us, "
          f"MQTT 5 grants + expiry {v5:.1f} us ({v5 / plain:.1f}x)")


if __name__ == "__main__":
    main()
