"""The message store on PostgreSQL, shared by several replicas of one node.

:class:`PgStore` has the public methods and the semantics of :class:`gateway.store.Store`
(the embedded SQLite default) and returns the same dataclasses. Payload ciphertexts stay
blob files (written, fsynced, then referenced) in a directory that every replica mounts at
the same path; rows live in one PostgreSQL schema. Nothing is acknowledged before the
transaction that records it has committed with ``synchronous_commit`` on.

What is added for several replicas (docs/postgresql.md explains the guarantees):

* **Leases.** :meth:`PgStore.due`, :meth:`PgStore.expiring` and :meth:`PgStore.due_returns`
  lease the rows they return to this replica (``SELECT … FOR UPDATE SKIP LOCKED`` plus a
  ``lease_owner``/``lease_until`` pair). A row leased by another live replica is neither
  returned nor changed here; a dead replica's lease runs out and its rows are taken over.
  ``settle``, ``reschedule``, ``hand_over`` and ``mark_warned`` act on a queued row only for
  the lease holder (or when nobody holds a live lease), and release the lease.
* **Idempotent inserts under concurrency.** ``submit``, ``relay`` and ``deliver`` use
  ``INSERT … ON CONFLICT DO NOTHING``: two replicas racing with the same message store it
  once, and the loser answers "same" or "conflict" exactly as a single node would.
* **A gap-free receipt cursor.** ``receipts_for(sender, after)`` hands out ids that only
  grow in commit order (see :meth:`PgStore._sequence_receipts`), so a local system that
  polls with ``after=`` never skips a receipt committed late by another replica.
* **Versioned migrations** (:data:`MIGRATIONS`), applied under an advisory lock by the first
  replica that starts; a node refuses a schema newer than it knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .store import (
    COMMIT_MODES,
    BlobWriter,
    Event,
    InboxEntry,
    Outcome,
    Outgoing,
    OutgoingState,
    ReceiptReturn,
    Store,
    StoredReceipt,
)

if TYPE_CHECKING:  # the driver is imported only when PostgreSQL is configured
    import psycopg


class StoreError(RuntimeError):
    """The PostgreSQL store cannot be used as configured (driver, schema version, identity)."""


class InvalidStoreSetting(ValueError):
    """A bad value in the ``[store]`` table; the configuration loader adds the file name."""

    def __init__(self, key: str, value: Any, why: str) -> None:
        super().__init__(f"{key} = {value!r}: {why}")
        self.key, self.value, self.why = key, value, why


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


# Append only: a released migration is never edited. Each runs once, in one transaction,
# and is recorded in schema_migrations.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "message store: submissions, outgoing with leases, inbox, receipts with commit-ordered cursor, events, returns",
        """
        CREATE TABLE store_identity (
            one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
            node_id text NOT NULL,
            created timestamptz NOT NULL DEFAULT now());
        CREATE TABLE submissions (
            sender text NOT NULL, message_id text NOT NULL, content_sha256 text NOT NULL,
            created double precision NOT NULL, PRIMARY KEY (sender, message_id));
        CREATE TABLE outgoing (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            sender text NOT NULL, message_id text NOT NULL, recipient text NOT NULL,
            message_type integer NOT NULL, message_class integer NOT NULL, message_date double precision NOT NULL,
            envelope bytea NOT NULL, seal text NOT NULL, blob text NOT NULL, ciphertext_sha256 text NOT NULL,
            via text NOT NULL,
            state text NOT NULL CHECK (state IN ('queued', 'handed', 'delivered', 'failed', 'expired')),
            attempts integer NOT NULL DEFAULT 0, next_attempt double precision NOT NULL,
            expires double precision NOT NULL, warned boolean NOT NULL DEFAULT false,
            receipt_status integer, receipt bytea, receipt_signature text,
            upstream text, hops text NOT NULL DEFAULT '[]',
            lease_owner text, lease_until double precision,
            UNIQUE (sender, message_id, recipient));
        CREATE INDEX outgoing_due ON outgoing (next_attempt, id) WHERE state = 'queued';
        CREATE INDEX outgoing_expiry ON outgoing (expires) WHERE state IN ('queued', 'handed');
        CREATE INDEX outgoing_via ON outgoing (via) WHERE state = 'queued';
        CREATE INDEX outgoing_leased ON outgoing (lease_until) WHERE state = 'queued' AND lease_owner IS NOT NULL;
        CREATE INDEX outgoing_blob ON outgoing (blob);
        CREATE TABLE inbox (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            sender text NOT NULL, message_id text NOT NULL, recipient text NOT NULL,
            message_type integer NOT NULL, envelope bytea NOT NULL, seal text NOT NULL, blob text NOT NULL,
            ciphertext_sha256 text NOT NULL, received double precision NOT NULL,
            state text NOT NULL CHECK (state IN ('delivered', 'acknowledged')),
            receipt bytea NOT NULL, receipt_signature text NOT NULL,
            UNIQUE (sender, message_id, recipient));
        CREATE INDEX inbox_recipient ON inbox (recipient, state, id);
        CREATE INDEX inbox_blob ON inbox (blob);
        CREATE SEQUENCE receipts_seq;
        CREATE TABLE receipts (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            sender text NOT NULL, message_id text NOT NULL, recipient text NOT NULL,
            status integer NOT NULL, time double precision NOT NULL, receipt bytea NOT NULL, signature text,
            seq bigint UNIQUE);
        ALTER SEQUENCE receipts_seq OWNED BY receipts.seq;
        CREATE INDEX receipts_sender ON receipts (sender, seq);
        CREATE INDEX receipts_unsequenced ON receipts (id) WHERE seq IS NULL;
        CREATE TABLE events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            sender text NOT NULL, message_id text NOT NULL, recipient text,
            time double precision NOT NULL, node text NOT NULL, kind text NOT NULL, status integer, detail text);
        CREATE INDEX events_message ON events (sender, message_id);
        CREATE TABLE returns (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            upstream text NOT NULL, token text NOT NULL,
            attempts integer NOT NULL DEFAULT 0, next_attempt double precision NOT NULL,
            lease_owner text, lease_until double precision);
        CREATE INDEX returns_due ON returns (next_attempt);
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_OUTGOING = (
    "id, sender, message_id, recipient, message_type, message_class, message_date, envelope, seal, blob,"
    " ciphertext_sha256, via, state, attempts, next_attempt, expires, warned, receipt_status, receipt,"
    " receipt_signature, upstream, hops"
)
_INBOX = (
    "id, sender, message_id, recipient, message_type, envelope, seal, blob, ciphertext_sha256, received, state,"
    " receipt, receipt_signature"
)
# A row may be changed by this replica when it holds the lease, or when nobody holds a live one.
_LEASE_FREE = "(lease_owner IS NULL OR lease_owner = %(me)s OR lease_until <= %(now)s)"
_SCHEMA_NAME = re.compile(r"(?!pg_)[a-z_][a-z0-9_]{0,62}")  # pg_* is reserved by PostgreSQL
# Timeline events passed as arrays, so that one statement inserts any number of them in order.
_EVENTS = (
    "INSERT INTO events (sender, message_id, recipient, time, node, kind, status, detail)"
    " SELECT %(sender)s, %(message_id)s, e.recipient, e.time, e.node, e.kind, e.status, e.detail"
    " FROM {source} unnest(%(ev_recipient)s::text[], %(ev_time)s::float8[], %(ev_node)s::text[], %(ev_kind)s::text[],"
    " %(ev_status)s::integer[], %(ev_detail)s::text[]) WITH ORDINALITY AS e(recipient, time, node, kind, status, detail, ord)"
    " ORDER BY e.ord"
)


def _events_after(cte: str) -> str:
    """An INSERT of the events that happens only if the CTE ``cte`` changed a row."""
    return _EVENTS.format(source=f"{cte},")


def _event_params(sender: str, message_id: str, events: Iterable[tuple[str | None, Event]]) -> dict[str, Any]:
    pairs = list(events)
    return {
        "sender": sender, "message_id": message_id,
        "ev_recipient": [recipient or e.recipient for recipient, e in pairs], "ev_time": [e.time for _, e in pairs],
        "ev_node": [e.node for _, e in pairs], "ev_kind": [e.kind for _, e in pairs],
        "ev_status": [e.status for _, e in pairs], "ev_detail": [e.detail for _, e in pairs],
    }  # fmt: skip


def _psycopg():
    """The driver, imported on first use so that SQLite-only nodes need neither it nor libpq."""
    try:
        import psycopg
    except ImportError as error:  # no package, or the pure-Python build without libpq.so.5
        raise StoreError(
            f"the PostgreSQL store needs the psycopg package and libpq (Debian: apt-get install libpq5): {error}"
        ) from error
    return psycopg


def _advisory_key(schema: str, purpose: str) -> int:
    """A stable signed 64-bit advisory-lock key per schema and purpose."""
    digest = hashlib.sha256(f"drehscheibe:{schema}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_replica_id() -> str:
    """Unique per process start: a restarted replica never mistakes its predecessor's leases for live ones of its own."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class StoreSettings:
    """The ``[store]`` table of a node configuration (defaults: the embedded SQLite store).

    ``dsn`` is a libpq connection string or URI *without* a password: the password comes
    from ``PGPASSFILE`` or ``PGPASSWORD`` (a Kubernetes Secret), never from the
    configuration file, which is not secret.
    """

    backend: str = "sqlite"  # "sqlite" | "postgresql"
    dsn: str | None = None
    schema: str = "drehscheibe"  # one schema per node identity; its replicas share it
    replica: str | None = None  # None: hostname-pid-random, unique per process start
    lease_seconds: float = 300.0  # longer than the slowest transfer to a peer
    orphan_grace_seconds: float = 3600.0  # an unreferenced blob younger than this may be mid-write on another replica
    commit: str = "group"  # SQLite: "group" (one fsync for many concurrent commits) or "each" (fsync in every COMMIT)

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            key, why = problem
            raise InvalidStoreSetting(key, getattr(self, key), why)

    def _problem(self) -> tuple[str, str] | None:
        """The first bad value as (key, why), or None."""
        if self.backend not in ("sqlite", "postgresql"):
            return "backend", 'expected "sqlite" or "postgresql"'
        if self.commit not in COMMIT_MODES:
            return "commit", 'expected "group" or "each"'
        if self.backend == "sqlite":
            return None
        if not self.dsn:
            return "dsn", 'required when backend = "postgresql"'
        if not _SCHEMA_NAME.fullmatch(self.schema):
            return "schema", "expected a lower-case SQL identifier (a-z, 0-9, _) not starting with pg_"
        if self.lease_seconds < 5:
            return "lease_seconds", "must be at least 5 seconds"
        if self.orphan_grace_seconds < 0:
            return "orphan_grace_seconds", "must not be negative"
        if self.replica is not None and not self.replica.strip():
            return "replica", "must not be empty"
        # SECURITY: the configuration file is not a secret; a password belongs in PGPASSFILE/PGPASSWORD.
        if _dsn_has_password(self.dsn):
            return "dsn", "must not contain a password (use PGPASSFILE or PGPASSWORD)"
        return None


def _dsn_has_password(dsn: str) -> bool:
    if re.match(r"postgres(ql)?://", dsn):
        parts = urlsplit(dsn)
        return parts.password is not None or "password" in parse_qs(parts.query)
    return re.search(r"(^|\s)password\s*=", dsn) is not None


def open_store(config: Any, *, clock: Callable[[], float] | None = None) -> Store | PgStore:
    """The message store a node configuration asks for.

    Uses ``config.store`` (the local directory: blobs, folder cursors) and
    ``config.store_backend`` (:class:`StoreSettings`); ``clock`` should be the node's
    clock (``node.clock.timestamp``) so that leases and ``due(now)`` read the same time.
    """
    settings: StoreSettings = getattr(config, "store_backend", None) or StoreSettings()
    if settings.backend == "sqlite":
        return Store(config.store, commit=settings.commit)
    return PgStore(
        settings.dsn or "",
        config.store,
        schema=settings.schema,
        node_id=config.node_id,
        replica=settings.replica,
        lease_seconds=settings.lease_seconds,
        orphan_grace_seconds=settings.orphan_grace_seconds,
        clock=clock or time.time,
    )


class PgStore:
    """The node's message store in one PostgreSQL schema, safe for several replicas."""

    def __init__(
        self,
        dsn: str,
        directory: Path,
        *,
        schema: str = "drehscheibe",
        node_id: str | None = None,
        replica: str | None = None,
        lease_seconds: float = 300.0,
        orphan_grace_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
        connect_timeout: int = 10,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise StoreError(f"schema {schema!r} is not a lower-case SQL identifier")
        self._psycopg = _psycopg()
        self.dsn = dsn
        self.schema = schema
        self.replica = replica or default_replica_id()
        self.lease_seconds = float(lease_seconds)
        self.orphan_grace_seconds = float(orphan_grace_seconds)
        self._clock = clock
        self._connect_timeout = connect_timeout
        self.directory = Path(directory)
        self.blobs = self.directory / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        # The node uses its store from its event-loop thread only; the lock makes an
        # accidental second thread wait instead of interleaving two transactions.
        self._lock = threading.RLock()
        self._conn: psycopg.Connection | None = None
        self.migrate()
        if node_id is not None:
            self._claim_identity(node_id)
        _fsync_dir(self.blobs)

    # -- connection and schema ----------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        """The open connection; a broken one (server restart, network) is replaced on next use."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        conn = self._psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=self._connect_timeout,
            application_name=f"drehscheibe {self.replica}"[:63],
        )
        sql = self._psycopg.sql
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        # Parity with SQLite's busy_timeout: a row lock held by a stuck replica fails the call
        # after a while instead of blocking the event loop for ever.
        conn.execute("SET lock_timeout = '5s'")
        # DURABILITY: a 202 or a transfer acknowledgement follows a commit that reached the
        # disk. A server or database configured with synchronous_commit=off is overridden;
        # stricter settings (remote_write, remote_apply for a synchronous standby) are kept.
        if conn.execute("SHOW synchronous_commit").fetchone()[0] == "off":
            conn.execute("SET synchronous_commit = on")
        self._conn = conn
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        """``BEGIN`` … ``COMMIT`` (rollback on error): one WAL flush per transaction."""
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                yield conn

    def _rows(self, query: str, params: Any = None) -> list[tuple]:
        with self._lock:
            return self._connection().execute(query, params).fetchall()

    def _one(self, query: str, params: Any = None) -> tuple | None:
        """One row of one statement; in autocommit mode a statement is its own transaction."""
        with self._lock:
            return self._connection().execute(query, params).fetchone()

    def _write(self, query: str, params: Any = None) -> int:
        """One statement as its own transaction (committed when it returns); the rows it changed."""
        with self._lock:
            return self._connection().execute(query, params).rowcount

    def migrate(self) -> int:
        """Create the schema or bring it to :data:`LATEST_VERSION`; returns the version found before.

        Several replicas may start at once: an advisory lock lets one migrate while the
        others wait and then find nothing to do.
        """
        sql = self._psycopg.sql
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(self.schema, "migrate"),))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                    " description text NOT NULL, applied timestamptz NOT NULL DEFAULT now())"
                )
                found = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
                if found > LATEST_VERSION:
                    raise StoreError(
                        f"schema {self.schema!r} is at version {found}, newer than this node knows ({LATEST_VERSION});"
                        " upgrade the node instead of running an older one against it"
                    )
                for migration in MIGRATIONS:
                    if migration.version > found:
                        conn.execute(migration.sql)
                        conn.execute(
                            "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                            (migration.version, migration.description),
                        )
        return found

    def schema_version(self) -> int:
        return self._one("SELECT coalesce(max(version), 0) FROM schema_migrations")[0]

    def _claim_identity(self, node_id: str) -> None:
        """SECURITY: one schema holds one node identity; a node with another ID refuses to start."""
        with self._transaction() as db:
            db.execute("INSERT INTO store_identity (node_id) VALUES (%s) ON CONFLICT DO NOTHING", (node_id,))
            owner = db.execute("SELECT node_id FROM store_identity").fetchone()[0]
        if owner != node_id:
            raise StoreError(f"schema {self.schema!r} belongs to node {owner}, not to {node_id}")

    def ping(self) -> None:
        """Raise unless the database answers (readiness)."""
        self._one("SELECT 1")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- blobs -----------------------------------------------------------------------------

    def new_blob(self) -> BlobWriter:
        return BlobWriter(self.blobs)

    def sync_blobs(self) -> None:
        """Make new blob directory entries durable (call before committing rows)."""
        _fsync_dir(self.blobs)

    async def close_blob(self, blob: BlobWriter) -> Path:
        """Close a blob durably, its fsync in a worker thread."""
        return await blob.aclose()

    async def blobs_durable(self) -> None:
        """:meth:`sync_blobs` in a worker thread (the event loop goes on meanwhile)."""
        await asyncio.to_thread(_fsync_dir, self.blobs)

    async def durable(self) -> None:
        """Every commit is already durable: PostgreSQL syncs its WAL in COMMIT (and groups commits itself)."""

    def remove_orphan_blobs(self, grace_seconds: float | None = None) -> int:
        """Delete blobs that no committed row references and nobody wrote to for ``grace_seconds``.

        The blob directory is shared: a fresh unreferenced blob may be one another replica
        is writing right now, so only blobs untouched for the grace period are orphans.
        """
        grace = self.orphan_grace_seconds if grace_seconds is None else grace_seconds
        cutoff = time.time() - grace  # file times are wall-clock times, whatever the node's clock
        candidates = []
        for path in self.blobs.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime <= cutoff:
                    candidates.append(str(path))
        removed = 0
        for start in range(0, len(candidates), 1000):
            batch = candidates[start : start + 1000]
            referenced = {
                r[0]
                for r in self._rows(
                    "SELECT blob FROM outgoing WHERE blob = ANY(%(b)s) UNION SELECT blob FROM inbox WHERE blob = ANY(%(b)s)",
                    {"b": batch},
                )
            }
            for name in batch:
                if name not in referenced:
                    Path(name).unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- origin ----------------------------------------------------------------------------

    def submit(
        self,
        *,
        sender: str,
        message_id: str,
        content_sha256: str,
        rows: Iterable[dict],
        events: Iterable[tuple[str | None, Event]],
        now: float,
    ) -> Outcome:
        """Record a new message and its outgoing rows in one transaction."""
        with self._transaction() as db:
            # ON CONFLICT waits for a replica inserting the same message concurrently and
            # then sees its committed row: the message is stored once either way.
            inserted = db.execute(
                "INSERT INTO submissions VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING RETURNING 1",
                (sender, message_id, content_sha256, now),
            ).fetchone()
            if inserted is None:
                known = db.execute(
                    "SELECT content_sha256 FROM submissions WHERE sender=%s AND message_id=%s", (sender, message_id)
                ).fetchone()
                return Outcome.SAME if known[0] == content_sha256 else Outcome.CONFLICT
            for row in rows:
                self._insert_outgoing(db, row)
            self._insert_events(db, sender, message_id, events)
        return Outcome.NEW

    def relay(self, row: dict, events: Iterable[Event]) -> Outcome:
        """Queue a message this node relays (its ``upstream`` set), once per (sender, messageId, recipient)."""
        with self._transaction() as db:
            if not self._insert_outgoing(db, row, on_conflict_nothing=True):
                known = db.execute(
                    "SELECT ciphertext_sha256 FROM outgoing WHERE sender=%s AND message_id=%s AND recipient=%s",
                    (row["sender"], row["message_id"], row["recipient"]),
                ).fetchone()
                return Outcome.SAME if known[0] == row["ciphertext_sha256"] else Outcome.CONFLICT
            self._insert_events(db, row["sender"], row["message_id"], [(row["recipient"], e) for e in events])
        return Outcome.NEW

    def find_outgoing(self, sender: str, message_id: str, recipient: str) -> Outgoing | None:
        row = self._one(
            f"SELECT {_OUTGOING} FROM outgoing WHERE sender=%s AND message_id=%s AND recipient=%s",
            (sender, message_id, recipient),
        )
        return self._outgoing(row) if row else None

    def hand_over(self, item: Outgoing, events: Iterable[Event]) -> bool:
        """A relay acknowledged the message: stop sending it, wait for the final receipt (lease holder only)."""
        changed = self._one(
            "WITH changed AS (UPDATE outgoing SET state='handed', attempts=attempts+1, lease_owner=NULL, lease_until=NULL"
            f" WHERE id=%(id)s AND state='queued' AND {_LEASE_FREE} RETURNING id),"
            f" timeline AS ({_events_after('changed')}) SELECT count(*) FROM changed",
            self._lease_params(id=item.row, **_event_params(item.sender, item.message_id, [(item.recipient, e) for e in events])),
        )[0]
        return bool(changed)

    def due_returns(self, now: float, limit: int = 100) -> list[ReceiptReturn]:
        """Receipts owed upstream that are due, leased to this replica until ``now + lease_seconds``."""
        rows = self._rows(
            "WITH picked AS (SELECT id FROM returns WHERE next_attempt <= %(now)s"
            f" AND {_LEASE_FREE} ORDER BY next_attempt, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " UPDATE returns r SET lease_owner=%(me)s, lease_until=%(until)s FROM picked WHERE r.id = picked.id"
            " RETURNING r.id, r.upstream, r.token, r.attempts, r.next_attempt",
            self._lease_params(now=now, limit=limit, until=now + self.lease_seconds),
        )
        rows.sort(key=lambda r: (r[4], r[0]))
        return [ReceiptReturn(r[0], r[1], r[2], r[3]) for r in rows]

    def next_return_time(self) -> float | None:
        """When a return may next be sent here: a row leased by another live replica counts from its lease's end."""
        return self._one(
            "SELECT min(CASE WHEN lease_owner IS NOT NULL AND lease_owner <> %(me)s AND lease_until > %(now)s"
            " THEN greatest(next_attempt, lease_until) ELSE next_attempt END) FROM returns",
            self._lease_params(),
        )[0]

    def return_done(self, item: ReceiptReturn) -> None:
        self._write(f"DELETE FROM returns WHERE id=%(id)s AND {_LEASE_FREE}", self._lease_params(id=item.row))

    def return_later(self, item: ReceiptReturn, next_attempt: float) -> None:
        self._write(
            "UPDATE returns SET attempts=attempts+1, next_attempt=%(next)s, lease_owner=NULL, lease_until=NULL"
            f" WHERE id=%(id)s AND {_LEASE_FREE}",
            self._lease_params(id=item.row, next=next_attempt),
        )

    def refuse(self, *, sender: str, message_id: str, receipts: Iterable[StoredReceipt], event: Event) -> None:
        """Record a refused submission: its receipts and a timeline event, nothing else."""
        with self._transaction() as db:
            for receipt in receipts:
                self._insert_receipt(db, receipt)
            self._insert_events(db, sender, message_id, [(None, event)])

    def due(self, now: float, limit: int = 100, *, lease_seconds: float | None = None) -> list[Outgoing]:
        """Queued rows due at ``now``, leased to this replica until ``now + lease_seconds``.

        Rows leased by another replica whose lease has not run out are skipped; rows this
        replica already holds are returned again (its previous round is over when it asks).
        """
        until = now + (self.lease_seconds if lease_seconds is None else lease_seconds)
        rows = self._rows(
            "WITH picked AS (SELECT id FROM outgoing WHERE state='queued' AND next_attempt <= %(now)s"
            f" AND {_LEASE_FREE} ORDER BY next_attempt, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " UPDATE outgoing o SET lease_owner=%(me)s, lease_until=%(until)s FROM picked WHERE o.id = picked.id"
            f" RETURNING {', '.join('o.' + c.strip() for c in _OUTGOING.split(','))}",
            self._lease_params(now=now, limit=limit, until=until),
        )
        return sorted((self._outgoing(r) for r in rows), key=lambda o: (o.next_attempt, o.row))

    def extend_lease(self, item: Outgoing, seconds: float | None = None) -> bool:
        """Keep holding ``item`` (a transfer that takes longer than the lease); False if the lease was lost."""
        now = self._clock()
        return bool(
            self._write(
                "UPDATE outgoing SET lease_owner=%(me)s, lease_until=%(until)s"
                f" WHERE id=%(id)s AND state='queued' AND {_LEASE_FREE}",
                self._lease_params(id=item.row, now=now, until=now + (seconds or self.lease_seconds)),
            )
        )

    def expiring(self, now: float, horizon: float) -> list[Outgoing]:
        """Queued or handed rows that expire before ``now + horizon``: not yet warned, or already expired.

        Queued rows are leased (so that a row in flight on another replica is not expired
        under it); handed rows are returned as they are, since whoever settles them first wins.
        """
        params = self._lease_params(now=now, limit_time=now + horizon, until=now + self.lease_seconds)
        with self._transaction() as db:
            queued = db.execute(
                "WITH picked AS (SELECT id FROM outgoing WHERE state='queued' AND expires <= %(limit_time)s"
                f" AND (NOT warned OR expires <= %(now)s) AND {_LEASE_FREE} FOR UPDATE SKIP LOCKED)"
                " UPDATE outgoing o SET lease_owner=%(me)s, lease_until=%(until)s FROM picked WHERE o.id = picked.id"
                f" RETURNING {', '.join('o.' + c.strip() for c in _OUTGOING.split(','))}",
                params,
            ).fetchall()
            handed = db.execute(
                f"SELECT {_OUTGOING} FROM outgoing WHERE state='handed' AND expires <= %(limit_time)s"
                " AND (NOT warned OR expires <= %(now)s)",
                params,
            ).fetchall()
        return sorted((self._outgoing(r) for r in [*queued, *handed]), key=lambda o: o.row)

    def queued(self) -> list[Outgoing]:
        return [self._outgoing(r) for r in self._rows(f"SELECT {_OUTGOING} FROM outgoing WHERE state='queued' ORDER BY id")]

    def next_due_time(self) -> float | None:
        """When a queued row may next be sent here: a row leased by another live replica counts from its lease's end."""
        params = self._lease_params()
        free = self._one(
            "SELECT next_attempt FROM outgoing WHERE state='queued'"
            f" AND {_LEASE_FREE} ORDER BY next_attempt, id LIMIT 1",
            params,
        )
        held = self._one(
            "SELECT min(greatest(next_attempt, lease_until)) FROM outgoing WHERE state='queued'"
            " AND lease_owner IS NOT NULL AND lease_owner <> %(me)s AND lease_until > %(now)s",
            params,
        )
        times = [t for t in ((free or (None,))[0], held[0]) if t is not None]
        return min(times, default=None)

    def settle(
        self,
        item: Outgoing,
        state: OutgoingState,
        *,
        receipt_status: int,
        receipt: bytes | None,
        receipt_signature: str | None,
        events: Iterable[Event],
        now: float,
        return_token: str | None = None,
    ) -> bool:
        """Close an outgoing row with its receipt; False if it was already closed or another replica holds it.

        A queued row is settled by its lease holder (or by anyone when no live lease is held);
        a handed row, which nobody leases, by whoever brings its final receipt first. For a
        relayed row, ``return_token`` is queued in the same transaction, so a receipt is never
        settled here and lost for the sender.
        """
        # One statement is one transaction: the state change, the receipt owed upstream, the
        # receipt and the events commit together, and only if the row was still open here.
        changed = self._one(
            "WITH settled AS (UPDATE outgoing SET state=%(state)s, receipt_status=%(status)s, receipt=%(receipt)s,"
            " receipt_signature=%(signature)s, attempts=attempts+1, lease_owner=NULL, lease_until=NULL"
            f" WHERE id=%(id)s AND (state='handed' OR (state='queued' AND {_LEASE_FREE})) RETURNING upstream),"
            " owed AS (INSERT INTO returns (upstream, token, next_attempt) SELECT upstream, %(token)s, %(at)s FROM settled"
            " WHERE %(token)s::text IS NOT NULL AND upstream IS NOT NULL),"
            " stored AS (INSERT INTO receipts (sender, message_id, recipient, status, time, receipt, signature)"
            " SELECT %(sender)s, %(message_id)s, %(recipient)s, %(status)s, %(at)s, %(receipt_bytes)s, %(signature)s FROM settled),"
            f" timeline AS ({_events_after('settled')}) SELECT count(*) FROM settled",
            self._lease_params(
                id=item.row, state=state.value, status=receipt_status, receipt=receipt, receipt_bytes=receipt or b"",
                signature=receipt_signature, token=return_token if item.upstream is not None else None, at=now,
                recipient=item.recipient, **_event_params(item.sender, item.message_id, [(item.recipient, e) for e in events]),
            ),
        )[0]
        return bool(changed)

    def reschedule(self, item: Outgoing, next_attempt: float, event: Event) -> bool:
        """Try again at ``next_attempt`` and release the lease; False (and no event) if the lease was lost."""
        changed = self._one(
            "WITH moved AS (UPDATE outgoing SET attempts=attempts+1, next_attempt=%(next)s, lease_owner=NULL, lease_until=NULL"
            f" WHERE id=%(id)s AND state='queued' AND {_LEASE_FREE} RETURNING id),"
            f" timeline AS ({_events_after('moved')}) SELECT count(*) FROM moved",
            self._lease_params(id=item.row, next=next_attempt, **_event_params(item.sender, item.message_id, [(item.recipient, event)])),
        )[0]
        return bool(changed)

    def postpone(self, via: str, until: float) -> int:
        """Hold every queued message for next hop ``via`` until ``until`` (an open circuit breaker).

        Leases are left as they are: a row in flight stays with its holder, who settles or
        reschedules it.
        """
        return self._write(
            "UPDATE outgoing SET next_attempt=%s WHERE via=%s AND state='queued' AND next_attempt<%s", (until, via, until)
        )

    def release(self, via: str, now: float) -> int:
        """Make every message held for ``via`` due now (its circuit breaker closed again)."""
        return self._write(
            "UPDATE outgoing SET next_attempt=%s WHERE via=%s AND state='queued' AND next_attempt>%s", (now, via, now)
        )

    def mark_warned(self, item: Outgoing, event: Event) -> None:
        """Record the 701 warning once per row (two replicas never both warn) and release the lease."""
        self._one(
            "WITH warned AS (UPDATE outgoing SET warned=true, lease_owner=NULL, lease_until=NULL"
            f" WHERE id=%(id)s AND NOT warned AND (state<>'queued' OR {_LEASE_FREE}) RETURNING id),"
            f" timeline AS ({_events_after('warned')}) SELECT count(*) FROM warned",
            self._lease_params(id=item.row, **_event_params(item.sender, item.message_id, [(item.recipient, event)])),
        )

    def outgoing_for(self, sender: str, message_id: str) -> list[Outgoing]:
        rows = self._rows(
            f"SELECT {_OUTGOING} FROM outgoing WHERE sender=%s AND message_id=%s ORDER BY id", (sender, message_id)
        )
        return [self._outgoing(r) for r in rows]

    def receipts_for(self, sender: str, after: int = 0) -> list[tuple[int, StoredReceipt]]:
        """Receipts addressed to ``sender`` (its messages' outcomes), oldest first.

        The ids are a cursor: a receipt committed later always gets a larger id, so
        ``after=<last id seen>`` never skips one.
        """
        self._sequence_receipts()
        rows = self._rows(
            "SELECT seq, sender, message_id, recipient, status, receipt, signature, time FROM receipts"
            " WHERE sender=%s AND seq>%s ORDER BY seq",
            (sender, after),
        )
        return [(r[0], StoredReceipt(r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7])) for r in rows]

    def _sequence_receipts(self) -> None:
        """Give committed receipts without a cursor the next cursor values, one sequencer at a time.

        An identity column is not a cursor when several transactions insert at once: id 10
        may commit after id 11 was read. Cursors are therefore assigned only to committed
        rows, under an advisory lock, so every cursor handed out is larger than any read before.
        """
        with self._transaction() as db:
            if db.execute("SELECT NOT EXISTS (SELECT 1 FROM receipts WHERE seq IS NULL)").fetchone()[0]:
                return
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(self.schema, "receipts"),))
            db.execute(
                "WITH pending AS (SELECT id FROM receipts WHERE seq IS NULL ORDER BY id FOR UPDATE),"
                " numbered AS (SELECT id, nextval('receipts_seq') AS seq FROM pending)"
                " UPDATE receipts r SET seq = numbered.seq FROM numbered WHERE r.id = numbered.id"
            )

    # -- destination -----------------------------------------------------------------------

    def find_inbox(self, sender: str, message_id: str, recipient: str) -> InboxEntry | None:
        row = self._one(
            f"SELECT {_INBOX} FROM inbox WHERE sender=%s AND message_id=%s AND recipient=%s", (sender, message_id, recipient)
        )
        return self._inbox(row) if row else None

    def deliver(self, entry: dict, events: Iterable[Event]) -> Outcome:
        """Store a received message in the recipient's inbox (idempotent per transfer)."""
        # ON CONFLICT waits for a replica storing the same transfer concurrently, then skips.
        inserted = self._one(
            "WITH stored AS (INSERT INTO inbox (sender, message_id, recipient, message_type, envelope, seal, blob,"
            " ciphertext_sha256, received, state, receipt, receipt_signature) VALUES (%(sender)s, %(message_id)s,"
            " %(recipient)s, %(message_type)s, %(envelope)s, %(seal)s, %(blob)s, %(ciphertext_sha256)s, %(received)s,"
            " 'delivered', %(receipt)s, %(receipt_signature)s) ON CONFLICT DO NOTHING RETURNING id),"
            f" timeline AS ({_events_after('stored')}) SELECT count(*) FROM stored",
            {**entry, **_event_params(entry["sender"], entry["message_id"], [(entry["recipient"], e) for e in events])},
        )[0]
        if inserted:
            return Outcome.NEW
        known = self._one(
            "SELECT ciphertext_sha256 FROM inbox WHERE sender=%s AND message_id=%s AND recipient=%s",
            (entry["sender"], entry["message_id"], entry["recipient"]),
        )
        return Outcome.SAME if known[0] == entry["ciphertext_sha256"] else Outcome.CONFLICT

    def inbox(self, recipient: str, include_acknowledged: bool = False) -> list[InboxEntry]:
        query = f"SELECT {_INBOX} FROM inbox WHERE recipient=%s" + ("" if include_acknowledged else " AND state='delivered'")
        return [self._inbox(r) for r in self._rows(query + " ORDER BY id", (recipient,))]

    def acknowledge(self, entry: InboxEntry, event: Event) -> bool:
        changed = self._one(
            "WITH taken AS (UPDATE inbox SET state='acknowledged' WHERE id=%(id)s AND state='delivered' RETURNING id),"
            f" timeline AS ({_events_after('taken')}) SELECT count(*) FROM taken",
            {"id": entry.row, **_event_params(entry.sender, entry.message_id, [(entry.recipient, event)])},
        )[0]
        return bool(changed)

    def add_events(self, sender: str, message_id: str, events: Iterable[tuple[str | None, Event]]) -> None:
        self._write(_EVENTS.format(source=""), _event_params(sender, message_id, events))

    def timeline(self, sender: str, message_id: str) -> list[Event]:
        rows = self._rows(
            "SELECT time, node, kind, recipient, status, detail FROM events WHERE sender=%s AND message_id=%s"
            " ORDER BY time, id",
            (sender, message_id),
        )
        return [Event(time=r[0], node=r[1], kind=r[2], recipient=r[3], status=r[4], detail=r[5]) for r in rows]

    # -- internals -------------------------------------------------------------------------

    def _lease_params(self, **extra: Any) -> dict[str, Any]:
        return {"me": self.replica, "now": self._clock(), **extra}

    @staticmethod
    def _insert_outgoing(db, row: dict, *, on_conflict_nothing: bool = False) -> bool:
        cursor = db.execute(
            "INSERT INTO outgoing (sender, message_id, recipient, message_type, message_class, message_date,"
            " envelope, seal, blob, ciphertext_sha256, via, state, next_attempt, expires, upstream, hops)"
            " VALUES (%(sender)s, %(message_id)s, %(recipient)s, %(message_type)s, %(message_class)s, %(message_date)s,"
            " %(envelope)s, %(seal)s, %(blob)s, %(ciphertext_sha256)s, %(via)s, 'queued', %(next_attempt)s, %(expires)s,"
            " %(upstream)s, %(hops)s)" + (" ON CONFLICT DO NOTHING" if on_conflict_nothing else ""),
            {"upstream": None, "hops": "[]", **row},
        )
        return bool(cursor.rowcount)

    @staticmethod
    def _insert_receipt(db, receipt: StoredReceipt) -> None:
        db.execute(
            "INSERT INTO receipts (sender, message_id, recipient, status, time, receipt, signature) VALUES (%s,%s,%s,%s,%s,%s,%s)",
            (receipt.sender, receipt.message_id, receipt.recipient, receipt.status, receipt.time, receipt.receipt, receipt.signature),
        )

    @staticmethod
    def _insert_events(db, sender: str, message_id: str, events: Iterable[tuple[str | None, Event]]) -> None:
        db.execute(_EVENTS.format(source=""), _event_params(sender, message_id, events))

    @staticmethod
    def _outgoing(r) -> Outgoing:
        return Outgoing(
            row=r[0], sender=r[1], message_id=r[2], recipient=r[3], message_type=r[4], message_class=r[5],
            message_date=r[6], envelope=bytes(r[7]), seal=r[8], blob=Path(r[9]), ciphertext_sha256=r[10], via=r[11],
            state=OutgoingState(r[12]), attempts=r[13], next_attempt=r[14], expires=r[15], warned=bool(r[16]),
            receipt_status=r[17], receipt=None if r[18] is None else bytes(r[18]), receipt_signature=r[19],
            upstream=r[20], hops=tuple(json.loads(r[21])),
        )  # fmt: skip

    @staticmethod
    def _inbox(r) -> InboxEntry:
        return InboxEntry(
            row=r[0], sender=r[1], message_id=r[2], recipient=r[3], message_type=r[4], envelope=bytes(r[5]), seal=r[6],
            blob=Path(r[7]), ciphertext_sha256=r[8], received=r[9], state=r[10], receipt=bytes(r[11]),
            receipt_signature=r[12],
        )  # fmt: skip
