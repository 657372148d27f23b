"""Cluster mode in the composition root: on a PostgreSQL store, the node joins the cluster.

`open_cluster(config, store, log, metrics)` builds the node's `Cluster` once and prepares it
(tables migrated, the store's unowned persistent sessions adopted); it returns the service
and the session keys this node owns, which the broker then loads (`load_broker_state`'s
`owned`). `run_gateway` hands the service to the `Gateway` (`peers`) and runs
`Cluster.serve` beside the listeners.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from ..errors import ConfigError
from .errors import ClusterUnavailable
from .service import Cluster


def node_name(config: Any) -> str:
    """This node's name: the configured one (`--node`), else `<host>-<pid>`."""
    return getattr(config, "node", None) or f"{socket.gethostname()}-{os.getpid()}"


async def open_cluster(config: Any, store: Any, log: Any, metrics: Any, *,
                       gone: Any = None) -> tuple[Cluster, set[tuple[str, str]]]:
    """The node's cluster service, prepared; and the session keys it owns. `gone(node)`:
    whether the node table says `node` no longer runs (`cluster.nodes.ClusterView.gone`).

    Raises:
        ConfigError: PostgreSQL cannot be reached for the cluster's tables.
    """
    cluster = Cluster(config.store, node_name(config), metrics=metrics.cluster, log=log,
                      max_sessions_per_network=config.max_sessions_per_network, gone=gone)
    try:
        owned = await cluster.prepare(store)
    except ClusterUnavailable as exc:
        raise ConfigError(f"cannot join the cluster: {exc}") from None
    return cluster, owned
