"""The error tree of `gateway.model`.

- `ModelError`: root.
- `DeclarationRejected`: a `model` declaration that cannot be accepted; `reasons` lists every
  problem found (capped at `Limits.max_reasons`), each a short sentence naming the JSON path.
"""

from __future__ import annotations

from ..errors import GatewayError


class ModelError(GatewayError):
    """Root of every error raised by `gateway.model`."""


class DeclarationRejected(ModelError):
    """A `model` declaration was refused; `reasons` holds every reason found."""

    def __init__(self, reasons: list[str] | tuple[str, ...]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(self.reasons))
