"""The audit log on PostgreSQL: one verifiable log per node identity, shared by its replicas.

:class:`PgAuditLog` is :class:`gateway.audit.log.AuditLog` with another database under it:
the same tables (``meta``, ``records``, ``checkpoints``, in their own schema), the same
statements, the same Merkle frontier, checkpoint schedule, prune and reads. What differs:

* **Serialised appends.** Every write transaction starts by locking the log's head row
  (``SELECT … FROM meta WHERE key = 'node' FOR UPDATE``). Replicas of one node therefore
  append one after the other; inside the lock each reads the leaves the others appended
  since its last write (READ COMMITTED: every statement sees what committed before it),
  so indices have no gaps and every checkpoint is signed over the leaves actually stored.
  A frontier a replica holds is only ever extended by rows read inside the lock, never
  trusted for a size the database does not confirm.
* **Durability.** A commit returns after the WAL reached the disk (``synchronous_commit``
  is forced on when the server is configured ``off``), so an acknowledgement that follows
  ``append`` follows a durable record, as with SQLite's ``synchronous=FULL``.
* **Fail closed.** Any driver error (server down, lock timeout, connection lost) raises
  :class:`AuditUnavailable`; the connection is dropped and re-made on the next call.

The statements in ``log.py`` are written in the subset both databases share (``?``
placeholders, ``ON CONFLICT`` upserts); :class:`_Connection` turns ``?`` into psycopg's
``%s`` and spells the one SQLite function used by the verifier (``instr``) the PostgreSQL way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from .log import SCHEMA_VERSION, AuditLog, KeySource, _Frontier

_SCHEMA_NAME = re.compile(r"(?!pg_)[a-z_][a-z0-9_]{0,62}")  # as gateway.store_pg: pg_* is reserved
_DDL = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    idx bigint PRIMARY KEY,                   -- position in the Merkle tree, 0-based, no gaps
    time text NOT NULL,                       -- the record's time as written in its body
    leaf_hash bytea NOT NULL,                 -- SHA-256(0x00 || body), kept when the body is pruned
    body bytea                                -- canonical JSON exactly as hashed, NULL once pruned
);
CREATE INDEX IF NOT EXISTS records_time ON records (time);
CREATE TABLE IF NOT EXISTS checkpoints (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    size bigint NOT NULL,
    note bytea NOT NULL,                      -- the exact signed bytes
    signature bytea NOT NULL                  -- DER ECDSA P-256 / SHA-256
);
"""
# SQLite spellings used by log.py and verify.py, and their PostgreSQL equivalents.
_DIALECT = (("instr(body, ?) > 0", "position(?::bytea in body) > 0"),)


@functools.lru_cache(maxsize=256)
def _postgresql(statement: str) -> str:
    """The statement for psycopg. The log's statements hold no ``?`` or ``%`` inside string literals."""
    for sqlite, postgresql in _DIALECT:
        statement = statement.replace(sqlite, postgresql)
    return statement.replace("?", "%s")


def _psycopg():
    from ..store_pg import _psycopg as driver  # the one place that explains a missing driver

    return driver()


def _advisory_key(schema: str) -> int:
    digest = hashlib.sha256(f"drehscheibe:{schema}:audit-ddl".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _Connection:
    """A psycopg connection that speaks the statements written for sqlite3."""

    def __init__(self, conn: Any, *, snapshot_reads: bool = False) -> None:
        self._conn = conn
        # A verifier's BEGIN: one snapshot for all its reads (the log's writers use plain
        # READ COMMITTED, so that after waiting for the head lock they see the new rows).
        self._begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if snapshot_reads else "BEGIN"

    def execute(self, statement: str, args: Sequence[object] | None = None) -> Any:
        if statement == "BEGIN":
            statement = self._begin
        return self._conn.execute(_postgresql(statement), tuple(args) if args is not None else None)

    def executemany(self, statement: str, rows: Sequence[Sequence[object]]) -> Any:
        cursor = self._conn.cursor()
        cursor.executemany(_postgresql(statement), rows)
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status != _psycopg().pq.TransactionStatus.IDLE

    @property
    def broken(self) -> bool:
        return self._conn.closed or self._conn.broken

    def close(self) -> None:
        self._conn.close()


def _connect(dsn: str, schema: str, *, lock_timeout: float, connect_timeout: int, snapshot_reads: bool = False) -> _Connection:
    psycopg = _psycopg()
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout, application_name="drehscheibe audit")
    try:
        conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema)))
        # A replica stuck inside an append must not stop the others for ever: after the
        # timeout their append fails closed (403) instead of blocking the event loop.
        conn.execute(f"SET lock_timeout = '{int(lock_timeout * 1000)}ms'")
        # DURABILITY: an acknowledged message has a record on disk, whatever the server default.
        if conn.execute("SHOW synchronous_commit").fetchone()[0] == "off":
            conn.execute("SET synchronous_commit = on")
    except BaseException:
        conn.close()
        raise
    return _Connection(conn, snapshot_reads=snapshot_reads)


class PgLogSource:
    """What :func:`gateway.audit.verify.verify_log` reads for a log on PostgreSQL."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        return (_psycopg().Error,)

    def connect(self) -> _Connection:
        """A read-only connection whose ``BEGIN`` takes one snapshot for the whole verification."""
        return _connect(self.dsn, self.schema, lock_timeout=5.0, connect_timeout=10, snapshot_reads=True)


class PgAuditLog(AuditLog):
    """One node's audit log in a PostgreSQL schema; safe for several replicas of the node.

    ``dsn`` names the database (password from ``PGPASSFILE``/``PGPASSWORD``, as for the
    store); ``schema`` holds this node's log only (the node uses ``<store schema>_audit``).
    ``busy_timeout`` is how long an append waits for another replica's append (the
    PostgreSQL ``lock_timeout``) before it fails closed.
    """

    _time_scan = "time"  # PostgreSQL has no unary plus on text; its planner needs no hint here

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        node: str,
        signing_key: KeySource,
        checkpoint_every: int = 10_000,
        checkpoint_interval: timedelta = timedelta(minutes=1),
        busy_timeout: float = 5.0,
        connect_timeout: int = 5,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"audit schema {schema!r} is not a lower-case SQL identifier")
        super().__init__(
            Path(f"postgresql:{schema}"), node=node, signing_key=signing_key, checkpoint_every=checkpoint_every,
            checkpoint_interval=checkpoint_interval, busy_timeout=busy_timeout,
        )  # fmt: skip
        self.dsn = dsn
        self.schema = schema
        self._connect_timeout = connect_timeout
        self._db_errors = (_psycopg().Error,)

    @classmethod
    def open(cls, dsn: str, *, schema: str, node: str, signing_key: KeySource, **options) -> PgAuditLog:  # type: ignore[override]
        """Create or open the log in ``schema``; refuse a schema that holds another node's log."""
        log = cls(dsn, schema=schema, node=node, signing_key=signing_key, **options)
        log._check_owner("schema")
        return log

    def reopen(self) -> PgAuditLog:
        """Another handle (its own connection) on the same log, e.g. for another thread."""
        return PgAuditLog.open(
            self.dsn, schema=self.schema, node=self.node, signing_key=self._key_source, checkpoint_every=self._every,
            checkpoint_interval=self._interval, busy_timeout=self._busy_timeout, connect_timeout=self._connect_timeout,
        )  # fmt: skip

    @property
    def source(self) -> PgLogSource:  # type: ignore[override]
        return PgLogSource(self.dsn, self.schema)

    def _connection(self) -> _Connection:  # type: ignore[override]
        if self._conn is not None and self._conn.broken:
            self.close()
        if self._conn is None:
            conn = _connect(self.dsn, self.schema, lock_timeout=self._busy_timeout, connect_timeout=self._connect_timeout)
            try:
                sql = _psycopg().sql
                conn.execute("BEGIN")
                # Replicas starting together: one creates the tables, the others wait and find them.
                conn.execute("SELECT pg_advisory_xact_lock(?)", (_advisory_key(self.schema),))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)).as_string(None))
                conn.execute(_DDL)
                conn.execute("INSERT INTO meta VALUES ('node', ?) ON CONFLICT (key) DO NOTHING", (self.node,))
                conn.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (key) DO NOTHING", (SCHEMA_VERSION,))
                conn.execute("COMMIT")
            except BaseException:
                conn.close()
                raise
            self._conn = conn  # type: ignore[assignment]
            self._frontier = _Frontier(-1, ())  # unknown until read inside the lock
        return self._conn  # type: ignore[return-value]

    def _begin(self, conn: _Connection) -> None:  # type: ignore[override]
        """BEGIN, then the per-node lock: one appender at a time across all replicas."""
        conn.execute("BEGIN")
        # SECURITY: this row lock serialises every write to this node's log, so the next
        # index and the frontier read by _sync are the ones every other replica agreed on.
        conn.execute("SELECT value FROM meta WHERE key = 'node' FOR UPDATE").fetchone()

    def _scrub(self) -> None:
        """After a prune: VACUUM marks the old row versions (with the bodies) as free space.

        Unlike SQLite's secure_delete, PostgreSQL does not zero freed space: the bytes stay
        in the table file until overwritten, and in WAL archives and backups until those
        age out. docs/postgresql.md says what an operator does about that.
        """
        self._read().execute("VACUUM records")

    def disk_bytes(self) -> int:
        row = self._one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ? AND c.relkind = 'r'",
            (self.schema,),
        )
        return int(row[0])

    def writable_problem(self, timeout: float = 0.2) -> str | None:
        """Readiness: the head row can be locked now (then released; nothing is written)."""
        try:
            conn = _connect(self.dsn, self.schema, lock_timeout=timeout, connect_timeout=max(1, int(timeout + 1)))
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT value FROM meta WHERE key = 'node' FOR UPDATE").fetchone()
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except self._db_errors as error:
            return f"audit log not writable ({type(error).__name__})"
        return None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def open_audit_log(config: Any, *, node: str, signing_key: KeySource) -> AuditLog:
    """The audit log a node configuration asks for: beside the store's backend.

    SQLite: the file ``config.audit_log``. PostgreSQL (``[store] backend = "postgresql"``):
    the schema ``<store schema>_audit`` in the store's database, shared by every replica of
    the node, so the node keeps one log whichever replica handled a message.
    """
    settings = getattr(config, "store_backend", None)
    if settings is None or settings.backend == "sqlite":
        config.audit_log.parent.mkdir(parents=True, exist_ok=True)
        return AuditLog.open(config.audit_log, node=node, signing_key=signing_key)
    return PgAuditLog.open(settings.dsn, schema=audit_schema(settings.schema), node=node, signing_key=signing_key)


def audit_schema(store_schema: str) -> str:
    """The schema of a node's audit log next to its store schema (at most 63 characters)."""
    return f"{store_schema[:57]}_audit"
