"""The books after a campaign, read from the nodes' own files.

Every message submitted must sit in exactly one inbox row across all stores, its origin row
must be ``delivered`` with receipt 100 and exactly one receipt, no relay may still owe a
receipt, and every node's audit log must verify against the node's certificate. The stores
are read with read-only SQLite connections; nothing here goes through a node's API, so a
node cannot vouch for itself.
"""

from __future__ import annotations

import collections
import contextlib
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping

from gateway.audit import Action, AuditLog, AuditVerificationError, Role, load_public_key, verify_log
from gateway.pki import load_private_key

MessageKey = tuple[str, str, str]  # (sender, messageId, recipient)


@dataclass(frozen=True)
class Sent:
    """A message the load generator got a 202 for."""

    sender: str
    message_id: str
    recipient: str
    payload_sha256: str

    @property
    def key(self) -> MessageKey:
        return (self.sender, self.message_id, self.recipient)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def store_db(node_dir: Path) -> Path:
    return node_dir / "store" / "messages.db"


def open_work(stores: Mapping[str, Path]) -> dict[str, int]:
    """Per node: outgoing rows still ``queued`` or ``handed``, plus receipts it still owes upstream."""
    open_rows = {}
    for node, path in stores.items():
        with read_only(path) as db:
            rows = db.execute("SELECT COUNT(*) FROM outgoing WHERE state IN ('queued', 'handed')").fetchone()[0]
            owed = db.execute("SELECT COUNT(*) FROM returns").fetchone()[0]
        open_rows[node] = rows + owed
    return open_rows


def retry_events(stores: Mapping[str, Path]) -> dict[str, int]:
    """Per node: how often it had to try a transfer again (its own ``retry`` events)."""
    counts = {}
    for node, path in stores.items():
        with read_only(path) as db:
            counts[node] = db.execute("SELECT COUNT(*) FROM events WHERE kind='retry' AND node=?", (node,)).fetchone()[0]
    return counts


def last_settled(stores: Mapping[str, Path], since: float) -> dict[str, float]:
    """Per origin node: seconds after ``since`` (Unix time) at which its last receipt for a message it submitted was recorded."""
    last = {}
    for node, path in stores.items():
        with read_only(path) as db:
            (newest,) = db.execute(
                "SELECT MAX(r.time) FROM receipts r JOIN outgoing o ON o.sender = r.sender AND o.message_id = r.message_id"
                " AND o.recipient = r.recipient WHERE o.upstream IS NULL"
            ).fetchone()
        if newest is not None:
            last[node] = newest - since
    return last


@dataclass
class Books:
    """What the stores say about every message that was accepted."""

    messages: int
    delivered_once: int = 0
    lost: list[MessageKey] = field(default_factory=list)  # in no inbox, and no node holds it any more
    stuck: list[MessageKey] = field(default_factory=list)  # in no inbox, still queued or handed at some node (not settled)
    duplicated: list[MessageKey] = field(default_factory=list)  # in more than one inbox row, or more than one receipt at its origin
    phantoms: list[MessageKey] = field(default_factory=list)  # in an inbox, but never submitted
    without_receipt: list[MessageKey] = field(default_factory=list)  # origin row not 'delivered' with receipt 100
    returns_left: dict[str, int] = field(default_factory=dict)  # per node: final receipts still owed upstream
    open_rows: dict[str, int] = field(default_factory=dict)  # "node → next hop (state)": outgoing rows still queued or handed

    @property
    def problems(self) -> list[str]:
        found = []
        for name in ("lost", "stuck", "duplicated", "phantoms", "without_receipt"):
            items = getattr(self, name)
            if items:
                found.append(f"{len(items)} {name.replace('_', ' ')}: {', '.join('/'.join(k) for k in items[:5])}{' …' if len(items) > 5 else ''}")
        for name in ("returns_left", "open_rows"):
            left = {n: c for n, c in getattr(self, name).items() if c}
            if left:
                found.append(f"{name.replace('_', ' ')}: {left}")
        return found


def inbox_rows(stores: Mapping[str, Path]) -> collections.Counter[MessageKey]:
    """Inbox rows per (sender, messageId, recipient), counted across every store."""
    inbox: collections.Counter[MessageKey] = collections.Counter()
    for path in stores.values():
        with read_only(path) as db:
            for sender, message_id, recipient, count in db.execute(
                "SELECT sender, message_id, recipient, COUNT(*) FROM inbox GROUP BY sender, message_id, recipient"
            ):
                inbox[(sender, message_id, recipient)] += count
    return inbox


def close_books(sent: list[Sent], origin_of: Mapping[str, str], stores: Mapping[str, Path]) -> Books:
    """Check every accepted message against every store (``origin_of``: sender participant → its node)."""
    books = Books(messages=len(sent))
    inbox = inbox_rows(stores)
    in_flight: set[MessageKey] = set()
    for path in stores.values():
        with read_only(path) as db:
            in_flight.update(db.execute("SELECT sender, message_id, recipient FROM outgoing WHERE state IN ('queued', 'handed')"))
    expected = {m.key for m in sent}
    for message in sent:
        count = inbox.get(message.key, 0)
        if count == 0:
            (books.stuck if message.key in in_flight else books.lost).append(message.key)
        elif count > 1:
            books.duplicated.append(message.key)
        else:
            books.delivered_once += 1
    books.phantoms = sorted(k for k in inbox if k not in expected)

    by_origin: dict[str, list[Sent]] = collections.defaultdict(list)
    for message in sent:
        by_origin[origin_of[message.sender]].append(message)
    for node, messages in by_origin.items():
        with read_only(stores[node]) as db:
            rows = {
                (s, m, r): (state, status)
                for s, m, r, state, status in db.execute(
                    "SELECT sender, message_id, recipient, state, receipt_status FROM outgoing WHERE upstream IS NULL"
                )
            }
            receipts = collections.Counter(
                (s, m, r) for s, m, r in db.execute("SELECT sender, message_id, recipient FROM receipts WHERE status=100")
            )
        for message in messages:
            if rows.get(message.key) != ("delivered", 100) or receipts[message.key] == 0:
                books.without_receipt.append(message.key)
            if receipts[message.key] > 1 and message.key not in books.duplicated:
                books.duplicated.append(message.key)
    for node, path in stores.items():
        with read_only(path) as db:
            books.returns_left[node] = db.execute("SELECT COUNT(*) FROM returns").fetchone()[0]
            for via, state, count in db.execute(
                "SELECT via, state, COUNT(*) FROM outgoing WHERE state IN ('queued', 'handed') GROUP BY via, state"
            ):
                books.open_rows[f"{node} → {via} ({state})"] = count
    return books


@dataclass(frozen=True)
class AuditFigures:
    """One node's audit log after the campaign."""

    node: str
    valid: bool
    records: int = 0
    checkpoints: int = 0  # signed by the node itself while it ran
    unsigned_tail: int = 0  # records after the node's last own checkpoint (covered by the closing one)
    delivered_twice: int = 0  # (messageId, recipient) with more than one destination 'delivered' record
    error: str | None = None


def verify_audit(node: str, log: Path, certificate: Path, private_key: Path) -> AuditFigures:
    """Verify the log as the node left it, then sign a closing checkpoint (as its hourly housekeeping would) and verify again.

    The first verification covers what the node signed itself; the closing checkpoint makes
    the records written after its last checkpoint verifiable too (a verifier must not treat
    an unsigned tail as verified).
    """
    public_key = load_public_key(certificate.read_bytes())
    try:
        as_left = verify_log(log, public_key, origin=node)
        with contextlib.closing(AuditLog.open(log, node=node, signing_key=load_private_key(private_key))) as handle:
            handle.checkpoint(datetime.now(timezone.utc))
            delivered = collections.Counter(
                (record.envelope.sender, record.message_id, record.envelope.recipients)
                for _, _, record in handle.iter_records()
                if record.role is Role.DESTINATION and record.action is Action.DELIVERED
            )
        closed = verify_log(log, public_key, origin=node)
    except AuditVerificationError as error:
        return AuditFigures(node, valid=False, error=str(error))
    return AuditFigures(
        node, valid=closed.unsigned_tail == 0, records=closed.size, checkpoints=as_left.checkpoints,
        unsigned_tail=as_left.unsigned_tail, delivered_twice=sum(1 for n in delivered.values() if n > 1),
    )  # fmt: skip
