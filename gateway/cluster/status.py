"""`fleet-gateway cluster status`: the cluster's nodes as the node table shows them.

One row per node: its state (alive; lapsed: no heartbeat for `node_dead_after`, not yet
claimed; dead: claimed by a survivor, being reaped; reaped: its wills published), its
heartbeat's age, its bus lag (the mean time a message relayed from another node took to
reach it over its last heartbeat interval; the heartbeat's age where none was relayed), its
live connections, addresses, host, pid, version and start. `unhealthy` is true when a node is not
alive, which the CLI turns into its exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .nodes import NodeRow


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    nodes: list[NodeRow]
    now: datetime
    dead_after: float

    def states(self) -> dict[str, str]:
        return {n.name: n.state(self.now, self.dead_after) for n in self.nodes}

    @property
    def unhealthy(self) -> bool:
        return any(state != "alive" for state in self.states().values())

    def as_json(self) -> dict[str, Any]:
        states = self.states()
        return {
            "at": self.now.isoformat(),
            "dead_after": self.dead_after,
            "alive": sum(s == "alive" for s in states.values()),
            "not_alive": sum(s != "alive" for s in states.values()),
            "connections": sum(n.connections for n in self.nodes if states[n.name] == "alive"),
            "nodes": [{
                "name": n.name, "state": states[n.name],
                "heartbeat_age": round(n.age(self.now), 3),
                "bus_lag": n.bus_lag,
                "lag": round(n.bus_lag if n.bus_lag is not None else n.age(self.now), 3),
                "connections": n.connections, "mqtt": n.mqtt, "http": n.http,
                "host": n.host, "pid": n.pid, "version": n.version,
                "started": n.started.isoformat(), "heartbeat_at": n.heartbeat_at.isoformat(),
                "dead_at": n.dead_at.isoformat() if n.dead_at else None,
                "reaped_by": n.reaped_by,
                "reaped_at": n.reaped_at.isoformat() if n.reaped_at else None,
            } for n in self.nodes],
        }

    def as_text(self) -> str:
        states = self.states()
        alive = sum(s == "alive" for s in states.values())
        connections = sum(n.connections for n in self.nodes if states[n.name] == "alive")
        head = (f"{len(self.nodes)} node(s): {alive} alive, {len(self.nodes) - alive} not; "
                f"{connections:,} live connection(s)")
        if not self.nodes:
            return head + " (no node has joined this store)"
        columns = ("NODE", "STATE", "HEARTBEAT", "BUS LAG", "CONNECTIONS", "MQTT", "HTTP",
                   "HOST", "PID", "VERSION", "NOTE")
        rows = [columns]
        for n in self.nodes:
            state = states[n.name]
            note = ""
            if n.reaped_by:
                note = f"reaped by {n.reaped_by}" if n.reaped_at else f"reaping: {n.reaped_by}"
            lag = "-" if n.bus_lag is None else f"{n.bus_lag * 1000:.1f} ms"
            rows.append((n.name, state, f"{n.age(self.now):.1f}s", lag, f"{n.connections:,}",
                         n.mqtt or "-", n.http or "-", n.host, str(n.pid), n.version or "-",
                         note))
        widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        return "\n".join([head, *lines])
