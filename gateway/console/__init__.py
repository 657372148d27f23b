"""The web console under /console/: the fleet, a network, an account (gateway.accounts).

It answers through the same Api endpoints and store reads as the HTTP API (as an internal
request on behalf of the logged-in person), so the console shows what the API would.
"""

from .app import Console

__all__ = ["Console"]
