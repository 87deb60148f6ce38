"""tests/gateway/test_relay.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from __future__ import annotations

import re

import psycopg

from gateway.store_pg import PgStore

from ...test_relay import *  # noqa: F403
from ...test_relay import KANTON, LUZERN, running, secrets_of, send

# Not a store test: it starts node *processes*, which open their configured (SQLite) store.
del test_processes_relay_end_to_end_over_mtls  # noqa: F821
# Reads the SQLite file; test_the_hub_stores_no_plaintext_in_postgresql is its counterpart.
del test_the_hub_holds_no_key_and_stores_no_plaintext  # noqa: F821


def schema_contents(dsn: str, schema: str) -> bytes:
    """Every value of every row of every table in ``schema``, as bytes."""
    found = bytearray()
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{schema}"."{table}"'):
                for value in row:
                    found += value if isinstance(value, bytes) else str(value).encode()
    return bytes(found)


async def test_the_hub_stores_no_plaintext_in_postgresql(hub, clock, pg_schemas):
    """The relay's rows in PostgreSQL and its blob hold no name or AHV number of the payload."""
    async with running(hub, clock) as nodes:
        message_id, payload = await send(hub, clock)
        await nodes["node-luzern"].forward_due()
        hub_node = nodes["node-hub"]
        (relayed,) = hub_node.store.outgoing_for(LUZERN, message_id)
        assert isinstance(hub_node.store, PgStore) and set(map(str, hub_node.hosted)) == {KANTON}
        secrets = secrets_of(payload)
        assert any(re.fullmatch(r"756\d{10}", s) for s in secrets), "the sample carries an AHV number"
        stored = relayed.blob.read_bytes() + schema_contents(pg_schemas.dsn, hub_node.store.schema)
        assert relayed.envelope in stored, "the dump reads the hub's rows"
        for secret in secrets:
            assert secret.encode() not in stored
