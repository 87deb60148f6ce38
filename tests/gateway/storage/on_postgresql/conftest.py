"""The node's own tests again, with every node's message store on PostgreSQL.

Each module here imports the test functions (and fixtures) of one node test module, so
they are the same specifications; the autouse fixture below makes every node those tests
start open a :class:`PgStore` (one schema per node store directory, so a restarted node
finds its rows; blobs stay in the node's store directory) instead of the SQLite store.
Skipped without ``DREHSCHEIBE_TEST_PG_DSN``, failed if it names no usable server.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import gateway.node
from gateway.store_pg import PgStore


@pytest.fixture(autouse=True)
def postgresql_message_store(pg_schemas, monkeypatch):
    """Every Node opened during the test stores its messages in PostgreSQL."""
    schemas: dict[Path, str] = {}

    def open_pg_store(directory, clock=time.time):
        schema = schemas.setdefault(Path(directory), pg_schemas.new())
        return PgStore(pg_schemas.dsn, directory, schema=schema, clock=clock)

    if hasattr(gateway.node, "open_store"):  # the node chooses its store with open_store(config, clock=…)
        monkeypatch.setattr(gateway.node, "open_store", lambda config, *, clock=None: open_pg_store(config.store, clock or time.time))
    else:  # the node opens Store(config.store) itself
        monkeypatch.setattr(gateway.node, "Store", open_pg_store)
    yield schemas
    # A test that opened no node here would pass without testing PostgreSQL at all.
    assert schemas, "no node opened a PostgreSQL store: the substitution did not take"
