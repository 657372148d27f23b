"""The cluster: gateway nodes sharing one PostgreSQL (docs/architecture.md, "Cluster").

- `Bus` (bus.py): LISTEN/NOTIFY between nodes, trio-native, with resync after reconnects.
- `Cluster` (service.py): one node's part: relay, takeover, bars, erasure, `reap(dead)`.
- `ClusterBars` (bars.py): the bar list in `cluster_bars`.
- registry.py (the session registry's and interest set's SQL), relay.py (the relay's wire
  form), wiring.py (`open_cluster`, for the composition root).
- `schema.MIGRATIONS` / `schema.migrate`: the cluster's tables, numbered migrations.
- nodes.py: each node's heartbeat row, dead nodes declared by exactly one survivor and
  reaped; workers.py: `serve --workers N`; status.py: `fleet-gateway cluster status`.
"""

from .bars import ClusterBars
from .bus import CHANNELS, CONTROL, RELAY, Bus, PgLane
from .errors import ClusterError, ClusterUnavailable
from .service import Cluster

__all__ = ["CHANNELS", "CONTROL", "RELAY", "Bus", "Cluster", "ClusterBars", "ClusterError",
           "ClusterUnavailable", "PgLane"]
