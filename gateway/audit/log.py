"""The append-only, tamper-evident audit log of one node, stored in its own SQLite file.

Durability: WAL with ``synchronous=FULL``; :meth:`AuditLog.append` writes a whole batch
(and, when due, a signed checkpoint) in one transaction, so one fsync covers many
records (group commit). Callers acknowledge a message only after ``append`` returned.

Fail closed: any failure to write durably raises :class:`AuditUnavailable` (sedex 403);
the connection is dropped and re-opened on the next call, so the log recovers by
itself once the disk, lock or key is back.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from .checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint
from .errors import AuditUnavailable
from .merkle import EMPTY_ROOT, MerkleTree, leaf_hash, node_hash
from .record import Action, Actor, AuditRecord, Role, format_time

# Audit evidence must outlive the longest complaint and audit cycles; one year is the
# floor set by the issue, and prune() refuses to cut anything younger. A year that
# contains 29 February has 366 days: with 365, a record written on 1 March 2027 could
# be pruned on 29 February 2028, a day before its first anniversary.
MIN_RETENTION = timedelta(days=366)
DEFAULT_RETENTION = MIN_RETENTION
SCHEMA_VERSION = "1"
# meta key naming the index of the newest prune record. Not signed: verify_log uses it
# only to find that record quickly, then checks the record itself.
PRUNE_HINT = "last_prune_index"

_T = TypeVar("_T")
KeySource = ec.EllipticCurvePrivateKey | Callable[[], ec.EllipticCurvePrivateKey] | None

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    idx INTEGER PRIMARY KEY,      -- position in the Merkle tree, 0-based, no gaps
    time TEXT NOT NULL,           -- copy of the record's time, for range scans and prune
    leaf_hash BLOB NOT NULL,      -- SHA-256(0x00 || body), kept when the body is pruned
    body BLOB                     -- canonical JSON exactly as hashed, NULL once pruned
);
CREATE INDEX IF NOT EXISTS records_time ON records(time);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    note BLOB NOT NULL,           -- the exact signed bytes
    signature BLOB NOT NULL       -- DER ECDSA P-256 / SHA-256
);
"""


def connect(path: Path, *, read_only: bool = False, busy_timeout: float = 1.0) -> sqlite3.Connection:
    """Open the log database with the durability settings the log relies on."""
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # SECURITY: pruned bodies are overwritten with zeros, not left in free pages.
        conn.execute("PRAGMA secure_delete=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    return conn


@dataclass(frozen=True, slots=True)
class _Frontier:
    """Roots of the perfect subtrees that make up the tree so far (a compact range)."""

    size: int
    stack: tuple[tuple[int, bytes], ...]  # (height, hash), leftmost (highest) first

    def extend(self, hashes: Sequence[bytes]) -> _Frontier:
        stack = list(self.stack)
        for h in hashes:
            height, node = 0, h
            while stack and stack[-1][0] == height:
                node = node_hash(stack.pop()[1], node)
                height += 1
            stack.append((height, node))
        return _Frontier(self.size + len(hashes), tuple(stack))

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        root = self.stack[-1][1]
        for _, h in reversed(self.stack[:-1]):
            root = node_hash(h, root)
        return root


class AuditLog:
    """One node's audit log. Open with :meth:`open`; close with :meth:`close`.

    This class is the SQLite log; :class:`gateway.audit.log_pg.PgAuditLog` subclasses it
    for PostgreSQL and replaces only the connection, the transaction start (where it
    takes the per-node lock) and the few statements the dialects spell differently. The
    Merkle frontier, checkpoint schedule, append, prune and every read live here once.

    ``signing_key`` is the node's EC P-256 key, or a callable returning it (an HSM or
    key file that may be unavailable); ``None`` opens the log for reading only, and
    every append then fails closed. A checkpoint is signed inside the append
    transaction when ``checkpoint_every`` records or ``checkpoint_interval`` of record
    time have passed since the last one, and whenever :meth:`checkpoint` is called.
    """

    # What a failing database raises; a subclass for another database names its own.
    _db_errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    # The time column in a prune scan, hidden from the time index: SQLite would otherwise
    # walk the index and sort; in index order the scan stops at the first young record.
    _time_scan = "+time"

    def __init__(
        self,
        path: Path,
        *,
        node: str,
        signing_key: KeySource,
        checkpoint_every: int = 10_000,
        checkpoint_interval: timedelta = timedelta(minutes=1),
        busy_timeout: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.node = node
        self._key_source = signing_key
        self._every = checkpoint_every
        self._interval = checkpoint_interval
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._frontier = _Frontier(0, ())
        self._last_checkpoint: Checkpoint | None = None

    @classmethod
    def open(cls, path: Path | str, *, node: str, signing_key: KeySource, **options) -> AuditLog:
        """Create or open the log file; refuse a file that belongs to another node."""
        log = cls(Path(path), node=node, signing_key=signing_key, **options)
        log._check_owner("file")
        return log

    def _check_owner(self, where: str) -> None:
        """Fail closed if the log cannot be read, and refuse one that another node wrote (``where``: file, schema)."""
        try:
            stored = self._connection().execute("SELECT value FROM meta WHERE key='node'").fetchone()
        except self._db_errors as exc:
            self.close()
            raise AuditUnavailable("audit log cannot be opened") from exc
        if stored is not None and stored[0] != self.node:
            self.close()
            raise ValueError(f"the audit log {where} belongs to another node")

    def reopen(self) -> AuditLog:
        """Another handle on the same file with the same settings, e.g. for another thread.

        SQLite connections belong to the thread that opened them; handles on one file
        coordinate through the database itself (see :meth:`append`).
        """
        return AuditLog.open(
            self.path, node=self.node, signing_key=self._key_source, checkpoint_every=self._every,
            checkpoint_interval=self._interval, busy_timeout=self._busy_timeout,
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def source(self) -> Path:
        """What :func:`gateway.audit.verify.verify_log` reads: for SQLite, the file."""
        return self.path

    def disk_bytes(self) -> int:
        """Bytes the log takes on disk (database file and write-ahead log)."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal")) if p.exists())

    def writable_problem(self, timeout: float = 0.2) -> str | None:
        """Readiness: ``None`` if the log could take a write lock now (nothing is written)."""
        try:
            connection = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("ROLLBACK")
            finally:
                connection.close()
        except sqlite3.Error as error:
            return f"audit log not writable ({type(error).__name__})"
        if not os.access(self.path.parent, os.W_OK):
            return "audit log directory not writable"
        return None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = connect(self.path, busy_timeout=self._busy_timeout)
            try:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO meta VALUES ('node', ?) ON CONFLICT (key) DO NOTHING", (self.node,))
                conn.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (key) DO NOTHING", (SCHEMA_VERSION,))
                conn.execute("COMMIT")
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
            self._frontier = _Frontier(-1, ())  # unknown until read inside a transaction
        return self._conn

    def _key(self) -> ec.EllipticCurvePrivateKey:
        source = self._key_source
        try:
            key = source() if callable(source) else source
        except Exception as exc:  # any failure of the key store means: cannot sign
            raise AuditUnavailable("checkpoint signing key unavailable") from exc
        if key is None:
            raise AuditUnavailable("audit log opened without a checkpoint signing key")
        return key

    def _begin(self, conn: sqlite3.Connection) -> None:
        """Start a write transaction that excludes every other writer of this log until it ends."""
        conn.execute("BEGIN IMMEDIATE")

    def _sync(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction: catch up with appends by other processes."""
        (size,) = conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM records").fetchone()
        known = self._frontier.size
        if 0 <= known < size:
            # Another handle appended: read only its new leaves. The leaves this handle
            # already folded in are not re-read, so it never signs over a changed prefix.
            rows = conn.execute("SELECT leaf_hash FROM records WHERE idx >= ? ORDER BY idx", (known,))
            self._frontier = self._frontier.extend([row[0] for row in rows])
        elif size != known:
            hashes = [row[0] for row in conn.execute("SELECT leaf_hash FROM records ORDER BY idx")]
            self._frontier = _Frontier(0, ()).extend(hashes)
        row = conn.execute("SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
        self._last_checkpoint = Checkpoint.parse(bytes(row[0])) if row else None

    def _due(self, size: int, now: datetime) -> bool:
        last = self._last_checkpoint
        if last is None:
            return True
        return size - last.size >= self._every or now - last.time >= self._interval

    def _write_checkpoint(
        self, conn: sqlite3.Connection, frontier: _Frontier, now: datetime, key: ec.EllipticCurvePrivateKey
    ) -> SignedCheckpoint:
        last = self._last_checkpoint  # read inside this transaction by _sync
        if last is not None and now < last.time:
            # Checkpoint times never go back (verify_log refuses that). Several writers
            # (replicas, threads) have clocks that differ by a little; the later writer
            # then signs the newest time already in the log instead of its own.
            now = last.time
        signed = sign_checkpoint(Checkpoint(self.node, frontier.size, frontier.root(), now), key)
        conn.execute(
            "INSERT INTO checkpoints (size, note, signature) VALUES (?, ?, ?)",
            (frontier.size, signed.checkpoint.signed_bytes(), signed.signature),
        )
        return signed

    def _transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one write transaction (one fsync); fail closed on any SQLite error."""
        try:
            conn = self._connection()
            self._begin(conn)
            try:
                self._sync(conn)
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result
        except self._db_errors as exc:
            # SECURITY: fail closed. Drop the connection so the next call starts from a
            # fresh one (a new file handle, a re-read of the state) and recovers by itself.
            self.close()
            raise AuditUnavailable("audit log cannot write durably") from exc

    def append(self, records: Sequence[AuditRecord], *, now: datetime | None = None) -> list[int]:
        """Write ``records`` durably in one transaction and return their indices.

        ``now`` is the time a due checkpoint carries (default: the newest record's time).
        Raises :class:`AuditUnavailable` if nothing could be written; then nothing was.
        """
        if not records:
            return []
        for record in records:
            if record.node != self.node:
                raise ValueError("audit record of another node")
        key = self._key()
        bodies = [record.canonical_bytes() for record in records]
        hashes = [leaf_hash(body) for body in bodies]
        when = now or max(record.time for record in records)

        def work(conn: sqlite3.Connection) -> tuple[_Frontier, list[int], Checkpoint | None]:
            start = self._frontier.size
            conn.executemany(
                "INSERT INTO records (idx, time, leaf_hash, body) VALUES (?, ?, ?, ?)",
                [
                    (start + i, format_time(r.time), h, b)
                    for i, (r, h, b) in enumerate(zip(records, hashes, bodies))
                ],
            )
            frontier = self._frontier.extend(hashes)
            signed = None
            if self._due(frontier.size, when):
                signed = self._write_checkpoint(conn, frontier, when, key).checkpoint
            return frontier, list(range(start, frontier.size)), signed

        frontier, indices, signed = self._transaction(work)
        self._frontier = frontier
        if signed is not None:
            self._last_checkpoint = signed
        return indices

    def checkpoint(self, now: datetime) -> SignedCheckpoint:
        """Sign and store a checkpoint of the current size and root, now."""
        key = self._key()
        signed = self._transaction(lambda conn: self._write_checkpoint(conn, self._frontier, now, key))
        self._last_checkpoint = signed.checkpoint
        return signed

    # -- reading ---------------------------------------------------------------

    def _read(self) -> sqlite3.Connection:
        try:
            return self._connection()
        except self._db_errors as exc:
            raise AuditUnavailable("audit log cannot be read") from exc

    @property
    def size(self) -> int:
        (size,) = self._read().execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM records").fetchone()
        return size

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        row = self._read().execute(
            "SELECT note, signature FROM checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return SignedCheckpoint(Checkpoint.parse(bytes(row[0])), bytes(row[1]))

    def checkpoint_at(self, size: int) -> SignedCheckpoint | None:
        """The newest stored checkpoint of exactly ``size`` records, if there is one."""
        row = self._one("SELECT note, signature FROM checkpoints WHERE size = ? ORDER BY id DESC LIMIT 1", (size,))
        return SignedCheckpoint(Checkpoint.parse(bytes(row[0])), bytes(row[1])) if row else None

    def body(self, index: int) -> bytes | None:
        """The stored canonical bytes of record ``index`` (``None`` if pruned or absent)."""
        row = self._one("SELECT body FROM records WHERE idx = ?", (index,))
        return bytes(row[0]) if row and row[0] is not None else None

    def tree(self, size: int | None = None) -> MerkleTree:
        """The Merkle tree over the first ``size`` stored leaf hashes (all by default)."""
        if size is None:
            rows = self._read().execute("SELECT leaf_hash FROM records ORDER BY idx")
        else:
            rows = self._read().execute("SELECT leaf_hash FROM records ORDER BY idx LIMIT ?", (size,))
        return MerkleTree([bytes(row[0]) for row in rows])

    def iter_records(
        self, *, since: datetime | None = None, until: datetime | None = None, limit_index: int | None = None
    ) -> Iterator[tuple[int, bytes, AuditRecord]]:
        """Yield ``(index, body, record)`` of unpruned records, oldest first."""
        sql = "SELECT idx, body FROM records WHERE body IS NOT NULL"
        args: list[object] = []
        if since is not None:
            sql += " AND time >= ?"
            args.append(format_time(since))
        if until is not None:
            sql += " AND time < ?"
            args.append(format_time(until))
        if limit_index is not None:
            sql += " AND idx < ?"
            args.append(limit_index)
        for idx, body in self._read().execute(sql + " ORDER BY idx", args):
            yield idx, bytes(body), AuditRecord.from_bytes(bytes(body))

    # -- retention -------------------------------------------------------------

    def prune(self, before: datetime, *, now: datetime, actor: Actor) -> int:
        """Drop the bodies of the oldest records (time < ``before``); keep their leaf hashes.

        The remaining log stays verifiable: the tree is still built from every leaf hash,
        and a checkpoint signed just before the cut covers the pruned prefix and the
        prune record that authorises it. Only a prefix is pruned, so the surviving
        records stay contiguous. Returns the number of bodies dropped.
        """
        if before > now - MIN_RETENTION:
            raise ValueError(f"refusing to prune records younger than the retention floor of {MIN_RETENTION.days} days")
        cut = self._cut(before, start=self._first_stored())
        (prune_index,) = self.append(
            [
                AuditRecord(
                    time=now,
                    node=self.node,
                    role=Role.NONE,
                    action=Action.CONFIG_CHANGE,
                    actor=actor,
                    details={"change": "audit_prune", "before": format_time(before), "cut_index": str(cut)},
                )
            ]
        )
        self.checkpoint(now)

        def drop(conn: sqlite3.Connection) -> int:
            count = conn.execute("UPDATE records SET body = NULL WHERE idx < ? AND body IS NOT NULL", (cut,)).rowcount
            conn.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (PRUNE_HINT, str(prune_index)),
            )
            return count

        count: int = self._transaction(drop)
        try:
            self._scrub()
        except self._db_errors as exc:
            raise AuditUnavailable("audit log cannot complete the prune") from exc
        return count

    def _scrub(self) -> None:
        """After a prune: make the emptied bodies unreadable in the database files."""
        # SECURITY: move the change out of the WAL so no pruned body lingers there.
        self._read().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _one(self, sql: str, args: tuple[object, ...] = ()) -> tuple:
        """One row of a read; fail closed like every other access to the log."""
        try:
            return self._read().execute(sql, args).fetchone()
        except self._db_errors as exc:
            raise AuditUnavailable("audit log cannot be read") from exc

    def _first_stored(self) -> int:
        """The first index that still has its body: pruned records are a prefix, so bisect."""
        lo, hi = 0, self.size
        while lo < hi:
            mid = (lo + hi) // 2
            row = self._one("SELECT body IS NULL FROM records WHERE idx = ?", (mid,))
            if row is not None and row[0]:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _cut(self, before: datetime, *, start: int = 0) -> int:
        """The first index whose time is ``>= before`` (the log size if there is none).

        Pruned records are all older than ``before`` was at their prune, so the search may
        start at the first stored body; it walks rows in index order and stops at the first
        young one, so it costs the records that are due, not the whole log.
        """
        row = self._one(
            f"SELECT idx FROM records WHERE idx >= ? AND {self._time_scan} >= ? ORDER BY idx LIMIT 1",
            (start, format_time(before)),
        )
        return row[0] if row else self.size

    def apply_retention(self, days: int, *, now: datetime, actor: Actor) -> int:
        """Prune what is older than ``days`` days, if anything; the node calls this periodically.

        Refuses ``days`` below the floor (:data:`MIN_RETENTION`, 366 days). When no stored
        body is older than the cut, nothing is written (no prune record, no checkpoint),
        so calling it every hour costs a few point lookups. Returns the bodies dropped.
        """
        if isinstance(days, bool) or not isinstance(days, int) or days < MIN_RETENTION.days:
            raise ValueError(f"audit retention must be at least {MIN_RETENTION.days} days")
        before = now - timedelta(days=days)
        first = self._first_stored()
        if self._cut(before, start=first) <= first:
            return 0  # nothing stored is old enough
        return self.prune(before, now=now, actor=actor)

    def verification_key(self) -> ec.EllipticCurvePublicKey:
        """The public half of the checkpoint key (raises AuditUnavailable if the key is)."""
        return self._key().public_key()
