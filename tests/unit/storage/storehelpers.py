"""Storage fixtures: a real SQLite store in a tmp folder, and a small declared model."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from gateway.ingest import parse_model
from gateway.storage import open_sqlite_store

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)

MODEL = {"devices": [
    {"name": "thermo", "description": "kitchen", "values": [
        {"name": "temp", "permission": "r", "number": {"min": -40, "max": 125, "step": 0.5}},
        {"name": "target", "permission": "rw", "number": {"min": 5, "max": 30}},
        {"name": "firmware", "permission": "w", "blob": {"max": 1000}},
    ]},
    {"name": "door", "values": [{"name": "state", "permission": "r", "string": {"max": 8}}]},
]}


def model_decl(doc: dict = MODEL):
    return parse_model(json.dumps(doc).encode())


@pytest.fixture
def network() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
async def store(tmp_path):
    async with open_sqlite_store(tmp_path / "data") as s:
        yield s


MIGRATION_5_COLUMNS = (("retained", "properties"), ("retained", "expires_us"),
                       ("queued_messages", "properties"), ("queued_messages", "expires_us"),
                       ("sessions", "expiry_interval"))
"""The columns migration 5 adds (a test that re-runs older migrations drops them first)."""
