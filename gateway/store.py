"""Durable store-and-forward on SQLite (WAL, ``synchronous=FULL``).

Payload ciphertexts live in blob files (written, fsynced, then referenced); rows live
in one SQLite file. Nothing is acknowledged before the transaction that records it has
committed, and no plaintext payload is ever written here.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .crypto.primitives import new_hash
from .groupcommit import GroupSync

# "group": many commits share one fsync, awaited before any acknowledgement; "each": one per commit.
COMMIT_MODES = ("group", "each")

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    sender TEXT NOT NULL, message_id TEXT NOT NULL, content_sha256 TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (sender, message_id));
CREATE TABLE IF NOT EXISTS outgoing (
    id INTEGER PRIMARY KEY, sender TEXT NOT NULL, message_id TEXT NOT NULL, recipient TEXT NOT NULL,
    message_type INTEGER NOT NULL, message_class INTEGER NOT NULL, message_date REAL NOT NULL,
    envelope BLOB NOT NULL, seal TEXT NOT NULL, blob TEXT NOT NULL, ciphertext_sha256 TEXT NOT NULL,
    via TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL, expires REAL NOT NULL, warned INTEGER NOT NULL DEFAULT 0,
    receipt_status INTEGER, receipt BLOB, receipt_signature TEXT,
    UNIQUE (sender, message_id, recipient));
CREATE INDEX IF NOT EXISTS outgoing_due ON outgoing (state, next_attempt);
CREATE INDEX IF NOT EXISTS outgoing_expiry ON outgoing (state, expires);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY, sender TEXT NOT NULL, message_id TEXT NOT NULL, recipient TEXT NOT NULL,
    message_type INTEGER NOT NULL, envelope BLOB NOT NULL, seal TEXT NOT NULL, blob TEXT NOT NULL,
    ciphertext_sha256 TEXT NOT NULL, received REAL NOT NULL, state TEXT NOT NULL,
    receipt BLOB NOT NULL, receipt_signature TEXT NOT NULL,
    UNIQUE (sender, message_id, recipient));
CREATE INDEX IF NOT EXISTS inbox_recipient ON inbox (recipient, state);
CREATE TABLE IF NOT EXISTS receipts (
    id INTEGER PRIMARY KEY, sender TEXT NOT NULL, message_id TEXT NOT NULL, recipient TEXT NOT NULL,
    status INTEGER NOT NULL, time REAL NOT NULL, receipt BLOB NOT NULL, signature TEXT);
CREATE INDEX IF NOT EXISTS receipts_sender ON receipts (sender, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, sender TEXT NOT NULL, message_id TEXT NOT NULL, recipient TEXT,
    time REAL NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL, status INTEGER, detail TEXT);
CREATE INDEX IF NOT EXISTS events_message ON events (sender, message_id);
CREATE TABLE IF NOT EXISTS returns (
    id INTEGER PRIMARY KEY, upstream TEXT NOT NULL, token TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL);
"""

# Columns added after the first release; a store created before gets them at open.
MIGRATIONS = {
    "outgoing": {
        "upstream": "TEXT",  # the peer a relayed message came from (NULL: submitted here)
        "hops": "TEXT NOT NULL DEFAULT '[]'",  # signed hop entries to send with the transfer (JSON list)
    },
}


class Outcome(enum.Enum):
    NEW = "new"
    SAME = "same"  # the identical message was already stored: idempotent success
    CONFLICT = "conflict"  # the messageId is taken by different content: receipt 201


class OutgoingState(enum.Enum):
    QUEUED = "queued"
    HANDED = "handed"  # a relay took it over durably; the final receipt comes back later
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Event:
    """One step in a message's life, as shown on the sender's timeline."""

    time: float
    node: str
    kind: str
    recipient: str | None = None
    status: int | None = None
    detail: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class StoredReceipt:
    """An eCH-0090 receipt addressed to ``sender`` about ``recipient``, with its signature."""

    sender: str
    message_id: str
    recipient: str
    status: int
    receipt: bytes
    signature: str | None
    time: float


@dataclass(frozen=True)
class Outgoing:
    row: int
    sender: str
    message_id: str
    recipient: str
    message_type: int
    message_class: int
    message_date: float
    envelope: bytes
    seal: str
    blob: Path
    ciphertext_sha256: str
    via: str
    state: OutgoingState
    attempts: int
    next_attempt: float
    expires: float
    warned: bool
    receipt_status: int | None
    receipt: bytes | None
    receipt_signature: str | None
    upstream: str | None = None
    hops: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReceiptReturn:
    """A final receipt a relay owes the node it took the message from."""

    row: int
    upstream: str
    token: str
    attempts: int


@dataclass(frozen=True)
class InboxEntry:
    row: int
    sender: str
    message_id: str
    recipient: str
    message_type: int
    envelope: bytes
    seal: str
    blob: Path
    ciphertext_sha256: str
    received: float
    state: str
    receipt: bytes
    receipt_signature: str


class BlobWriter:
    """Writes one ciphertext blob; :meth:`close` makes it durable before it is referenced."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / uuid.uuid4().hex
        self._file = open(self.path, "xb")
        self._hash = new_hash()
        self.length = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self.length += len(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> Path:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self.path

    async def aclose(self) -> Path:
        """:meth:`close` with the fsync in a worker thread: concurrent blobs share journal commits."""
        return await asyncio.to_thread(self.close)

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class Store:
    """The node's message store: submissions, outgoing queue, inbox and events."""

    def __init__(self, directory: Path, *, commit: str = "group") -> None:
        if commit not in COMMIT_MODES:
            raise ValueError(f"commit must be one of {', '.join(COMMIT_MODES)}")
        self.directory = Path(directory)
        self.blobs = self.directory / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.commit = commit
        path = self.directory / "messages.db"
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # SECURITY/DURABILITY: a 202, a receipt 100 or a hand-over acknowledgement is sent
        # only once the rows it stands for are on disk. "each": FULL syncs the WAL in every
        # COMMIT, on the caller's thread. "group": COMMIT writes the WAL without syncing it
        # (NORMAL), and the caller awaits durable(), which fsyncs the WAL file once for all
        # commits made before it (gateway/groupcommit.py). SQLite's recovery replays every
        # commit frame that reached the WAL file, so a synced WAL is a durable commit.
        self.db.execute("PRAGMA synchronous=FULL" if commit == "each" else "PRAGMA synchronous=NORMAL")
        self._wal_sync = GroupSync([Path(f"{path}-wal")], name="message store WAL")
        self._blob_sync = GroupSync([self.blobs], name="blob directory")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self._migrate()
        self._fsync_dir(self.blobs)

    def _migrate(self) -> None:
        for table, columns in MIGRATIONS.items():
            present = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for column, declaration in columns.items():
                if column not in present:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        self.db.close()
        self._wal_sync.close()
        self._blob_sync.close()

    async def durable(self) -> None:
        """Return once every commit made so far is on disk (one shared fsync; see ``commit``)."""
        if self.commit == "group":
            await self._wal_sync.durable()

    async def close_blob(self, blob: BlobWriter) -> Path:
        """Close a blob durably; with group commit its fsync runs in a worker thread beside others."""
        return blob.close() if self.commit == "each" else await blob.aclose()

    async def blobs_durable(self) -> None:
        """Make the directory entries of blobs created so far durable (before rows reference them)."""
        if self.commit == "each":
            self.sync_blobs()
            return
        await self._blob_sync.durable()

    @property
    def sync_rounds(self) -> int:
        """fsync rounds of the WAL and the blob directory so far (group commit; a figure for benchmarks)."""
        return self._wal_sync.rounds + self._blob_sync.rounds

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def new_blob(self) -> BlobWriter:
        writer = BlobWriter(self.blobs)
        self._blob_sync.written()  # its directory entry is made durable by blobs_durable()
        return writer

    def sync_blobs(self) -> None:
        """Make new blob directory entries durable (call before committing rows)."""
        self._fsync_dir(self.blobs)

    def remove_orphan_blobs(self) -> int:
        """Delete blobs that no committed row references (left by a crash mid-write)."""
        referenced = {row[0] for row in self.db.execute("SELECT blob FROM outgoing UNION SELECT blob FROM inbox")}
        removed = 0
        for path in self.blobs.iterdir():
            if str(path) not in referenced:
                path.unlink()
                removed += 1
        return removed

    # -- origin ----------------------------------------------------------------------

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
            known = db.execute(
                "SELECT content_sha256 FROM submissions WHERE sender=? AND message_id=?", (sender, message_id)
            ).fetchone()
            if known is not None:
                return Outcome.SAME if known[0] == content_sha256 else Outcome.CONFLICT
            db.execute("INSERT INTO submissions VALUES (?,?,?,?)", (sender, message_id, content_sha256, now))
            for row in rows:
                self._insert_outgoing(db, row)
            self._insert_events(db, sender, message_id, events)
        return Outcome.NEW

    def relay(self, row: dict, events: Iterable[Event]) -> Outcome:
        """Queue a message this node relays (its ``upstream`` set), once per (sender, messageId, recipient)."""
        with self._transaction() as db:
            known = db.execute(
                "SELECT ciphertext_sha256 FROM outgoing WHERE sender=? AND message_id=? AND recipient=?",
                (row["sender"], row["message_id"], row["recipient"]),
            ).fetchone()
            if known is not None:
                return Outcome.SAME if known[0] == row["ciphertext_sha256"] else Outcome.CONFLICT
            self._insert_outgoing(db, row)
            self._insert_events(db, row["sender"], row["message_id"], [(row["recipient"], e) for e in events])
        return Outcome.NEW

    def find_outgoing(self, sender: str, message_id: str, recipient: str) -> Outgoing | None:
        row = self.db.execute(
            "SELECT * FROM outgoing WHERE sender=? AND message_id=? AND recipient=?", (sender, message_id, recipient)
        ).fetchone()
        return self._outgoing(row) if row else None

    def hand_over(self, item: Outgoing, events: Iterable[Event]) -> bool:
        """A relay acknowledged the message: stop sending it, wait for the final receipt."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE outgoing SET state='handed', attempts=attempts+1 WHERE id=? AND state='queued'", (item.row,)
            ).rowcount
            if changed:
                self._insert_events(db, item.sender, item.message_id, [(item.recipient, e) for e in events])
        return bool(changed)

    def due_returns(self, now: float, limit: int = 100) -> list[ReceiptReturn]:
        cursor = self.db.execute(
            "SELECT id, upstream, token, attempts FROM returns WHERE next_attempt<=? ORDER BY next_attempt LIMIT ?", (now, limit)
        )
        return [ReceiptReturn(*r) for r in cursor]

    def next_return_time(self) -> float | None:
        return self.db.execute("SELECT MIN(next_attempt) FROM returns").fetchone()[0]

    def return_done(self, item: ReceiptReturn) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM returns WHERE id=?", (item.row,))

    def return_later(self, item: ReceiptReturn, next_attempt: float) -> None:
        with self._transaction() as db:
            db.execute("UPDATE returns SET attempts=attempts+1, next_attempt=? WHERE id=?", (next_attempt, item.row))

    def refuse(self, *, sender: str, message_id: str, receipts: Iterable[StoredReceipt], event: Event) -> None:
        """Record a refused submission: its receipts and a timeline event, nothing else."""
        with self._transaction() as db:
            for receipt in receipts:
                self._insert_receipt(db, receipt)
            self._insert_events(db, sender, message_id, [(None, event)])

    def due(self, now: float, limit: int = 100) -> list[Outgoing]:
        cursor = self.db.execute(
            "SELECT * FROM outgoing WHERE state='queued' AND next_attempt<=? ORDER BY next_attempt LIMIT ?",
            (now, limit),
        )
        return [self._outgoing(r) for r in cursor]

    def queue_stats(self) -> list[tuple]:
        """(next hop, state, count, oldest messageDate) of queued and handed messages, for metrics."""
        return self.db.execute(
            "SELECT via, state, COUNT(*), MIN(message_date) FROM outgoing WHERE state IN ('queued', 'handed') GROUP BY via, state"
        ).fetchall()

    def inbox_backlog(self) -> list[tuple]:
        """(recipient, delivered but not acknowledged), for metrics."""
        return self.db.execute("SELECT recipient, COUNT(*) FROM inbox WHERE state='delivered' GROUP BY recipient").fetchall()

    def extend_lease(self, item: Outgoing) -> None:
        """No leases on the embedded store (one process owns it); see PgStore.extend_lease."""

    def ping(self) -> None:
        """A trivial query: the store answers (readiness)."""
        self.db.execute("SELECT 1").fetchone()

    def expiring(self, now: float, horizon: float) -> list[Outgoing]:
        """Queued or handed rows that expire before ``now + horizon``: not yet warned, or already expired."""
        cursor = self.db.execute(
            "SELECT * FROM outgoing WHERE state IN ('queued', 'handed') AND expires<=? AND (warned=0 OR expires<=?)",
            (now + horizon, now),
        )
        return [self._outgoing(r) for r in cursor]

    def queued(self) -> list[Outgoing]:
        return [self._outgoing(r) for r in self.db.execute("SELECT * FROM outgoing WHERE state='queued'")]

    def next_due_time(self) -> float | None:
        row = self.db.execute("SELECT MIN(next_attempt) FROM outgoing WHERE state='queued'").fetchone()
        return row[0]

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
        """Close an outgoing row with its receipt; False if it was already closed.

        For a relayed row, ``return_token`` (the receipt for the upstream node) is queued in
        the same transaction, so a receipt is never settled here and lost for the sender.
        """
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE outgoing SET state=?, receipt_status=?, receipt=?, receipt_signature=?, attempts=attempts+1"
                " WHERE id=? AND state IN ('queued', 'handed')",
                (state.value, receipt_status, receipt, receipt_signature, item.row),
            ).rowcount
            if changed and return_token is not None and item.upstream is not None:
                db.execute("INSERT INTO returns (upstream, token, next_attempt) VALUES (?,?,?)", (item.upstream, return_token, now))
            if changed:
                self._insert_receipt(
                    db,
                    StoredReceipt(item.sender, item.message_id, item.recipient, receipt_status, receipt or b"", receipt_signature, now),
                )
                self._insert_events(db, item.sender, item.message_id, [(item.recipient, e) for e in events])
        return bool(changed)

    def reschedule(self, item: Outgoing, next_attempt: float, event: Event) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outgoing SET attempts=attempts+1, next_attempt=? WHERE id=? AND state='queued'",
                (next_attempt, item.row),
            )
            self._insert_events(db, item.sender, item.message_id, [(item.recipient, event)])

    def postpone(self, via: str, until: float) -> int:
        """Hold every queued message for next hop ``via`` until ``until`` (an open circuit breaker)."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE outgoing SET next_attempt=? WHERE via=? AND state='queued' AND next_attempt<?", (until, via, until)
            ).rowcount

    def release(self, via: str, now: float) -> int:
        """Make every message held for ``via`` due now (its circuit breaker closed again)."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE outgoing SET next_attempt=? WHERE via=? AND state='queued' AND next_attempt>?", (now, via, now)
            ).rowcount

    def mark_warned(self, item: Outgoing, event: Event) -> None:
        with self._transaction() as db:
            db.execute("UPDATE outgoing SET warned=1 WHERE id=?", (item.row,))
            self._insert_events(db, item.sender, item.message_id, [(item.recipient, event)])

    def outgoing_for(self, sender: str, message_id: str) -> list[Outgoing]:
        cursor = self.db.execute(
            "SELECT * FROM outgoing WHERE sender=? AND message_id=? ORDER BY id", (sender, message_id)
        )
        return [self._outgoing(r) for r in cursor]

    def receipts_for(self, sender: str, after: int = 0) -> list[tuple[int, StoredReceipt]]:
        """Receipts addressed to ``sender`` (its messages' outcomes), oldest first."""
        cursor = self.db.execute(
            "SELECT id, sender, message_id, recipient, status, receipt, signature, time FROM receipts"
            " WHERE sender=? AND id>? ORDER BY id",
            (sender, after),
        )
        return [(r[0], StoredReceipt(r[1], r[2], r[3], r[4], r[5], r[6], r[7])) for r in cursor]

    # -- destination -----------------------------------------------------------------

    def find_inbox(self, sender: str, message_id: str, recipient: str) -> InboxEntry | None:
        row = self.db.execute(
            "SELECT * FROM inbox WHERE sender=? AND message_id=? AND recipient=?", (sender, message_id, recipient)
        ).fetchone()
        return self._inbox(row) if row else None

    def deliver(self, entry: dict, events: Iterable[Event]) -> Outcome:
        """Store a received message in the recipient's inbox (idempotent per transfer)."""
        with self._transaction() as db:
            known = db.execute(
                "SELECT ciphertext_sha256 FROM inbox WHERE sender=? AND message_id=? AND recipient=?",
                (entry["sender"], entry["message_id"], entry["recipient"]),
            ).fetchone()
            if known is not None:
                return Outcome.SAME if known[0] == entry["ciphertext_sha256"] else Outcome.CONFLICT
            db.execute(
                "INSERT INTO inbox (sender, message_id, recipient, message_type, envelope, seal, blob,"
                " ciphertext_sha256, received, state, receipt, receipt_signature) VALUES (:sender,:message_id,"
                ":recipient,:message_type,:envelope,:seal,:blob,:ciphertext_sha256,:received,'delivered',"
                ":receipt,:receipt_signature)",
                entry,
            )
            self._insert_events(db, entry["sender"], entry["message_id"], [(entry["recipient"], e) for e in events])
        return Outcome.NEW

    def inbox(self, recipient: str, include_acknowledged: bool = False) -> list[InboxEntry]:
        query = "SELECT * FROM inbox WHERE recipient=?" + ("" if include_acknowledged else " AND state='delivered'")
        return [self._inbox(r) for r in self.db.execute(query + " ORDER BY id", (recipient,))]

    def acknowledge(self, entry: InboxEntry, event: Event) -> bool:
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE inbox SET state='acknowledged' WHERE id=? AND state='delivered'", (entry.row,)
            ).rowcount
            if changed:
                self._insert_events(db, entry.sender, entry.message_id, [(entry.recipient, event)])
        return bool(changed)

    def add_events(self, sender: str, message_id: str, events: Iterable[tuple[str | None, Event]]) -> None:
        with self._transaction() as db:
            self._insert_events(db, sender, message_id, events)

    def timeline(self, sender: str, message_id: str) -> list[Event]:
        cursor = self.db.execute(
            "SELECT time, node, kind, recipient, status, detail FROM events WHERE sender=? AND message_id=?"
            " ORDER BY time, id",
            (sender, message_id),
        )
        return [Event(time=r[0], node=r[1], kind=r[2], recipient=r[3], status=r[4], detail=r[5]) for r in cursor]

    # -- internals -------------------------------------------------------------------

    def _transaction(self):
        return _Transaction(self.db, self._wal_sync.written)

    @staticmethod
    def _insert_outgoing(db, row: dict) -> None:
        db.execute(
            "INSERT INTO outgoing (sender, message_id, recipient, message_type, message_class, message_date,"
            " envelope, seal, blob, ciphertext_sha256, via, state, next_attempt, expires, upstream, hops)"
            " VALUES (:sender,:message_id,:recipient,:message_type,:message_class,:message_date,:envelope,"
            " :seal,:blob,:ciphertext_sha256,:via,'queued',:next_attempt,:expires,:upstream,:hops)",
            {"upstream": None, "hops": "[]", **row},
        )

    @staticmethod
    def _insert_receipt(db, receipt: StoredReceipt) -> None:
        db.execute(
            "INSERT INTO receipts (sender, message_id, recipient, status, time, receipt, signature) VALUES (?,?,?,?,?,?,?)",
            (receipt.sender, receipt.message_id, receipt.recipient, receipt.status, receipt.time, receipt.receipt, receipt.signature),
        )

    @staticmethod
    def _insert_events(db, sender: str, message_id: str, events: Iterable[tuple[str | None, Event]]) -> None:
        db.executemany(
            "INSERT INTO events (sender, message_id, recipient, time, node, kind, status, detail) VALUES (?,?,?,?,?,?,?,?)",
            [
                (sender, message_id, recipient or e.recipient, e.time, e.node, e.kind, e.status, e.detail)
                for recipient, e in events
            ],
        )

    @staticmethod
    def _outgoing(r) -> Outgoing:
        return Outgoing(
            row=r[0], sender=r[1], message_id=r[2], recipient=r[3], message_type=r[4], message_class=r[5],
            message_date=r[6], envelope=r[7], seal=r[8], blob=Path(r[9]), ciphertext_sha256=r[10], via=r[11],
            state=OutgoingState(r[12]), attempts=r[13], next_attempt=r[14], expires=r[15], warned=bool(r[16]),
            receipt_status=r[17], receipt=r[18], receipt_signature=r[19], upstream=r[20], hops=tuple(json.loads(r[21])),
        )  # fmt: skip

    @staticmethod
    def _inbox(r) -> InboxEntry:
        return InboxEntry(
            row=r[0], sender=r[1], message_id=r[2], recipient=r[3], message_type=r[4], envelope=r[5], seal=r[6],
            blob=Path(r[7]), ciphertext_sha256=r[8], received=r[9], state=r[10], receipt=r[11],
            receipt_signature=r[12],
        )  # fmt: skip


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on error): one fsync per transaction."""

    def __init__(self, db: sqlite3.Connection, committed: Callable[[], None]) -> None:
        self.db = db
        self._committed = committed

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.db.execute("COMMIT")
            self._committed()
        else:
            self.db.execute("ROLLBACK")


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
