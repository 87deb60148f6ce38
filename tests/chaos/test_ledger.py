"""The campaign's books report every lost, stuck, duplicated, phantom or unreturned message, and a tampered audit log."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest

from gateway.audit import Action, Actor, ActorKind, AuditLog, AuditRecord, Role
from gateway.federation import NodeSpec, build_federation
from gateway.pki import load_private_key
from gateway.store import Store

from ..conftest import KANTON, LUZERN, XSD
from .ledger import Sent, close_books, open_work, store_db, verify_audit

KRIENS = "1-1059-1"
NODES = ("node-luzern", "node-hub", "node-kriens")
ORIGIN_OF = {LUZERN: "node-luzern", KANTON: "node-hub", KRIENS: "node-kriens"}


@pytest.fixture
def stores(tmp_path):
    paths = {}
    for node in NODES:
        Store(tmp_path / node / "store").close()
        paths[node] = store_db(tmp_path / node)
    return paths


def sent(message_id: str, sender: str = LUZERN, recipient: str = KRIENS) -> Sent:
    return Sent(sender, message_id, recipient, "0" * 64)


def write(path, sql: str, *args) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(sql, args)
    db.close()


def outgoing(path, message: Sent, state: str, status: int | None, upstream: str | None = None, via: str = "node-hub") -> None:
    write(path, "INSERT INTO outgoing (sender, message_id, recipient, message_type, message_class, message_date, envelope, seal,"
                " blob, ciphertext_sha256, via, state, next_attempt, expires, receipt_status, upstream)"
                " VALUES (?,?,?,20001,0,0,x'00','seal','blob',?,?,?,0,0,?,?)",
          message.sender, message.message_id, message.recipient, "0" * 64, via, state, status, upstream)  # fmt: skip


def inbox(path, message: Sent) -> None:
    write(path, "INSERT INTO inbox (sender, message_id, recipient, message_type, envelope, seal, blob, ciphertext_sha256,"
                " received, state, receipt, receipt_signature) VALUES (?,?,?,20001,x'00','seal','blob',?,0,'delivered',x'00','sig')",
          message.sender, message.message_id, message.recipient, "0" * 64)  # fmt: skip


def receipt(path, message: Sent, status: int = 100) -> None:
    write(path, "INSERT INTO receipts (sender, message_id, recipient, status, time, receipt) VALUES (?,?,?,?,0,x'00')",
          message.sender, message.message_id, message.recipient, status)  # fmt: skip


def delivered(stores, message: Sent) -> None:
    """The good end of a message: settled at its origin with one receipt 100, one inbox row at its destination."""
    origin = stores[ORIGIN_OF[message.sender]]
    outgoing(origin, message, "delivered", 100)
    receipt(origin, message)
    inbox(stores[ORIGIN_OF[message.recipient]], message)


def test_books_of_messages_each_delivered_once_with_their_receipt_home_are_clean(stores):
    messages = [sent("a1"), sent("a2", LUZERN, KANTON), sent("a3", KRIENS, LUZERN)]
    for message in messages:
        delivered(stores, message)
    books = close_books(messages, ORIGIN_OF, stores)
    assert books.problems == [] and books.delivered_once == 3


def test_a_message_in_no_inbox_and_held_by_no_node_is_lost(stores):
    message = sent("b1")
    outgoing(stores["node-luzern"], message, "delivered", 100)
    receipt(stores["node-luzern"], message)
    books = close_books([message], ORIGIN_OF, stores)
    assert books.lost == [message.key] and books.stuck == []
    assert any(p.startswith("1 lost") for p in books.problems)


def test_a_message_still_queued_somewhere_is_stuck_not_lost(stores):
    message = sent("c1")
    outgoing(stores["node-luzern"], message, "handed", None)
    outgoing(stores["node-hub"], message, "queued", None, upstream="node-luzern", via="node-kriens")
    books = close_books([message], ORIGIN_OF, stores)
    assert books.stuck == [message.key] and books.lost == []
    assert books.without_receipt == [message.key]
    assert books.open_rows == {"node-luzern → node-hub (handed)": 1, "node-hub → node-kriens (queued)": 1}
    assert open_work(stores) == {"node-luzern": 1, "node-hub": 1, "node-kriens": 0}


def test_a_message_in_two_inboxes_is_duplicated(stores):
    message = sent("d1")
    delivered(stores, message)
    inbox(stores["node-hub"], message)
    books = close_books([message], ORIGIN_OF, stores)
    assert books.duplicated == [message.key] and books.delivered_once == 0


def test_two_delivery_receipts_at_the_origin_are_a_duplicate(stores):
    message = sent("e1")
    delivered(stores, message)
    receipt(stores["node-luzern"], message)
    assert close_books([message], ORIGIN_OF, stores).duplicated == [message.key]


def test_an_inbox_row_nobody_submitted_is_a_phantom(stores):
    message, ghost = sent("f1"), sent("f2")
    delivered(stores, message)
    inbox(stores["node-kriens"], ghost)
    assert close_books([message], ORIGIN_OF, stores).phantoms == [ghost.key]


@pytest.mark.parametrize(("state", "status"), [("handed", None), ("failed", 301), ("delivered", None)])
def test_an_origin_row_not_delivered_with_receipt_100_has_no_receipt_home(stores, state, status):
    message = sent("g1")
    outgoing(stores["node-luzern"], message, state, status)
    inbox(stores["node-kriens"], message)
    assert close_books([message], ORIGIN_OF, stores).without_receipt == [message.key]


def test_a_receipt_the_hub_still_owes_is_reported(stores):
    message = sent("h1")
    delivered(stores, message)
    write(stores["node-hub"], "INSERT INTO returns (upstream, token, next_attempt) VALUES ('node-luzern', 'token', 0)")
    books = close_books([message], ORIGIN_OF, stores)
    assert books.returns_left["node-hub"] == 1
    assert any("returns left" in p for p in books.problems)


def audit_log_of(tmp_path):
    federation = build_federation(tmp_path / "pki", [NodeSpec("node-hub", [KANTON])], schemas=XSD)
    pki = federation.directory / "pki" / "nodes"
    log = tmp_path / "audit.db"
    with AuditLog.open(log, node="node-hub", signing_key=load_private_key(pki / "node-hub-key.pem")) as handle:
        now = datetime.now(timezone.utc)
        handle.append([AuditRecord(time=now, node="node-hub", role=Role.NONE, action=Action.CONFIG_CHANGE,
                                   actor=Actor(ActorKind.NODE, "node-hub"), details={"change": f"start {i}"}) for i in range(5)])  # fmt: skip
        handle.checkpoint(now)
    return log, pki / "node-hub.pem", pki / "node-hub-key.pem"


def test_an_intact_audit_log_verifies_and_its_tail_is_covered_by_the_closing_checkpoint(tmp_path):
    log, certificate, key = audit_log_of(tmp_path)
    figures = verify_audit("node-hub", log, certificate, key)
    assert figures.valid and figures.records == 5 and figures.error is None


def test_a_tampered_audit_log_does_not_verify(tmp_path):
    log, certificate, key = audit_log_of(tmp_path)
    write(log, "UPDATE records SET body = CAST(replace(body, 'start 2', 'start 9') AS BLOB) WHERE idx = 2")
    figures = verify_audit("node-hub", log, certificate, key)
    assert not figures.valid and figures.error == "record body does not match its leaf hash at index 2"
