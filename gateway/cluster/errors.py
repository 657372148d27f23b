"""The cluster package's one error tree."""

from __future__ import annotations


class ClusterError(Exception):
    """Base of the cluster's errors."""


class ClusterUnavailable(ClusterError):
    """PostgreSQL cannot be reached right now (the bus reconnects with backoff)."""
