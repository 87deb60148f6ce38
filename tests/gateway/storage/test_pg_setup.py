"""Opening the PostgreSQL store: settings, migrations, identity, durability and reconnection."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gateway.store import Store
from gateway.store_pg import LATEST_VERSION, MIGRATIONS, InvalidStoreSetting, PgStore, StoreError, StoreSettings, open_store

from .rows import SENDER, submit


@pytest.mark.parametrize(
    ("settings", "key", "why"),
    [
        ({"backend": "mysql"}, "backend", 'expected "sqlite" or "postgresql"'),
        ({"backend": "postgresql"}, "dsn", "required"),
        ({"backend": "postgresql", "dsn": "postgresql://gw:secret@db/drehscheibe"}, "dsn", "must not contain a password"),
        ({"backend": "postgresql", "dsn": "postgresql://gw@db/drehscheibe?password=secret"}, "dsn", "must not contain a password"),
        ({"backend": "postgresql", "dsn": "host=db user=gw password=secret"}, "dsn", "must not contain a password"),
        ({"backend": "postgresql", "dsn": "host=db", "schema": "Drop Table"}, "schema", "lower-case SQL identifier"),
        ({"backend": "postgresql", "dsn": "host=db", "schema": "pg_catalog"}, "schema", "lower-case SQL identifier"),
        ({"backend": "postgresql", "dsn": "host=db", "lease_seconds": 1}, "lease_seconds", "at least 5 seconds"),
        ({"backend": "postgresql", "dsn": "host=db", "replica": " "}, "replica", "must not be empty"),
    ],
)
def test_bad_store_settings_are_refused_naming_the_key_and_value(settings, key, why):
    """Each bad value fails at load time with its key, its value and why."""
    with pytest.raises(InvalidStoreSetting, match=why) as raised:
        StoreSettings(**settings)
    assert (raised.value.key, raised.value.value) == (key, settings.get(key))
    assert str(raised.value).startswith(f"{key} = {settings.get(key)!r}: ")


def test_good_store_settings_are_accepted():
    """A DSN without a password (libpq takes it from PGPASSFILE/PGPASSWORD) and the defaults are fine."""
    settings = StoreSettings(backend="postgresql", dsn="host=db.example dbname=drehscheibe user=gw sslmode=verify-full")
    assert (settings.schema, settings.lease_seconds, settings.replica) == ("drehscheibe", 300.0, None)
    assert StoreSettings().backend == "sqlite"


def test_the_default_backend_is_the_embedded_sqlite_store(tmp_path):
    """Without a [store] table the node keeps its SQLite store in its store directory."""
    store = open_store(SimpleNamespace(store=tmp_path / "store", node_id="node-luzern"))
    try:
        assert isinstance(store, Store) and (tmp_path / "store" / "messages.db").exists()
    finally:
        store.close()


def test_open_store_builds_a_postgresql_store_from_the_configuration(pg_dsn, pg_schemas, tmp_path, monkeypatch):
    """backend = "postgresql" opens the schema, claims it for the node and uses the node's clock; the password comes from PGPASSWORD."""
    parts = conninfo_to_dict(pg_dsn)
    monkeypatch.setenv("PGPASSWORD", parts.pop("password", ""))
    settings = StoreSettings(backend="postgresql", dsn=make_conninfo(**parts), schema=pg_schemas.new(), replica="pod-0", lease_seconds=30)
    config = SimpleNamespace(store=tmp_path / "store", node_id="node-luzern", store_backend=settings)
    store = open_store(config, clock=lambda: 42.0)
    try:
        assert isinstance(store, PgStore)
        assert (store.replica, store.lease_seconds, store.schema_version(), store._clock()) == ("pod-0", 30.0, LATEST_VERSION, 42.0)
        assert store.blobs == tmp_path / "store" / "blobs"
    finally:
        store.close()


def test_a_new_schema_is_created_at_the_latest_version_and_recorded(pg):
    """The first start applies every migration once and records each in schema_migrations."""
    store = pg.open()
    assert store.schema_version() == LATEST_VERSION
    with psycopg.connect(pg.dsn) as conn:
        recorded = conn.execute(f'SELECT version, description FROM "{pg.schema}".schema_migrations ORDER BY version').fetchall()
    assert recorded == [(m.version, m.description) for m in MIGRATIONS]
    assert store.migrate() == LATEST_VERSION  # nothing left to do


def test_replicas_starting_at_once_migrate_the_schema_once(pg):
    """Concurrent first starts wait for one another; all of them end up with the same, complete schema."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            pg.open()
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert pg.open().schema_version() == LATEST_VERSION


def test_a_schema_newer_than_the_node_is_refused(pg):
    """An older node never writes into a schema a newer one migrated."""
    pg.open().close()
    with psycopg.connect(pg.dsn) as conn:
        conn.execute(f"INSERT INTO \"{pg.schema}\".schema_migrations (version, description) VALUES ({LATEST_VERSION + 1}, 'future')")
    with pytest.raises(StoreError, match=f"version {LATEST_VERSION + 1}, newer than this node knows"):
        pg.open()


def test_a_schema_belongs_to_one_node_identity(pg):
    """Replicas of one node share its schema; a node with another identity refuses to start on it."""
    pg.open(node_id="node-luzern")
    pg.open(node_id="node-luzern")
    with pytest.raises(StoreError, match="belongs to node node-luzern, not to node-kanton"):
        pg.open(node_id="node-kanton")


def test_commits_are_durable_even_where_the_server_default_is_not(pg):
    """A session whose default is synchronous_commit=off is switched on before anything is stored."""
    lax = pg.dsn + ("&" if "?" in pg.dsn else "?") + "options=-c%20synchronous_commit%3Doff"
    with psycopg.connect(lax) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    store = PgStore(lax, pg.directory, schema=pg.schema)
    try:
        assert store._connection().execute("SHOW synchronous_commit").fetchone()[0] == "on"
    finally:
        store.close()


def test_a_lost_connection_fails_one_call_and_the_next_one_reconnects(pg):
    """A database restart fails the call in progress (the caller retries) and is invisible afterwards."""
    store = pg.open()
    submit(store, "m1")
    pid = store._connection().info.backend_pid
    with psycopg.connect(pg.dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        store.queued()
    assert [o.message_id for o in store.queued()] == ["m1"]
    assert store._connection().info.backend_pid != pid
    store.ping()


def test_a_missing_database_fails_at_open_with_the_servers_reason(pg):
    """A wrong DSN fails the start, not the first message."""
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        PgStore(pg.dsn.rsplit("/", 1)[0] + "/no_such_database", pg.directory)


def test_the_stores_of_two_nodes_in_one_database_do_not_see_each_other(pg, pg_schemas, tmp_path):
    """Each node identity has its own schema; rows of one are invisible to the other."""
    luzern = pg.open(node_id="node-luzern")
    kanton = PgStore(pg.dsn, tmp_path / "kanton", schema=pg_schemas.new(), node_id="node-kanton")
    try:
        submit(luzern, "m1")
        assert kanton.queued() == [] and kanton.timeline(SENDER, "m1") == []
    finally:
        kanton.close()


def test_a_fresh_unreferenced_blob_is_kept_since_another_replica_may_be_writing_it(pg):
    """The blob directory is shared: the start-up sweep leaves unreferenced blobs younger than the grace period."""
    store = pg.open(orphan_grace_seconds=3600)
    writer = store.new_blob()
    writer.write(b"a payload still arriving at another replica")
    in_progress = writer.close()
    assert store.remove_orphan_blobs() == 0 and in_progress.exists()
    assert store.remove_orphan_blobs(grace_seconds=0) == 1 and not in_progress.exists()
