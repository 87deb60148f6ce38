"""Rows as the node writes them, for store tests and replica processes."""

from __future__ import annotations

import json

from gateway.store import Event, StoredReceipt

NOW = 1_800_000_000.0  # a fixed instant; store behaviour never reads the wall clock for rows
DAY = 86400.0
SENDER = "1-1061-1"
RECIPIENT = "2-LU-1"
OTHER = "3-SO-1"


def blob(store, content: bytes = b"ciphertext") -> str:
    """A durable blob as the node writes one before it commits the row."""
    writer = store.new_blob()
    writer.write(content)
    path = writer.close()
    store.sync_blobs()
    return str(path)


def outgoing(store, message_id: str = "m1", recipient: str = RECIPIENT, *, via: str = "node-kanton", now: float = NOW,
             expires: float | None = None, upstream: str | None = None, hops: list[str] | None = None,
             path: str | None = None, content: bytes = b"ciphertext") -> dict:  # fmt: skip
    row = {
        "sender": SENDER, "message_id": message_id, "recipient": recipient, "message_type": 2011, "message_class": 0,
        "message_date": now, "envelope": b"<envelope/>", "seal": "seal." + message_id,
        "blob": path or blob(store, content), "ciphertext_sha256": "sha-" + content.hex()[:16], "via": via,
        "next_attempt": now, "expires": now + 30 * DAY if expires is None else expires,
    }  # fmt: skip
    if upstream is not None:
        row["upstream"] = upstream
    if hops is not None:
        row["hops"] = json.dumps(hops)
    return row


def inbox_entry(store, message_id: str = "m1", *, content: bytes = b"ciphertext", received: float = NOW) -> dict:
    return {
        "sender": SENDER, "message_id": message_id, "recipient": RECIPIENT, "message_type": 2011,
        "envelope": b"<envelope/>", "seal": "seal." + message_id, "blob": blob(store, content),
        "ciphertext_sha256": "sha-" + content.hex()[:16], "received": received, "receipt": b"<receipt status='100'/>",
        "receipt_signature": "jws." + message_id,
    }  # fmt: skip


def event(kind: str, time: float = NOW, **fields) -> Event:
    return Event(time=time, node="node-luzern", kind=kind, **fields)


def submit(store, message_id: str = "m1", *, rows: list[dict] | None = None, content: str = "content-1", now: float = NOW):
    rows = [outgoing(store, message_id, now=now)] if rows is None else rows
    return store.submit(sender=SENDER, message_id=message_id, content_sha256=content, rows=rows,
                        events=[(None, event("accepted", now))], now=now)  # fmt: skip


def settle(store, item, state, *, status: int = 100, now: float = NOW, return_token: str | None = None) -> bool:
    return store.settle(item, state, receipt_status=status, receipt=f"<receipt status='{status}'/>".encode(),
                        receipt_signature="sig", events=[event("receipt", now, status=status)], now=now,
                        return_token=return_token)  # fmt: skip


def refusal(message_id: str, status: int = 201) -> StoredReceipt:
    return StoredReceipt(SENDER, message_id, RECIPIENT, status, f"<receipt status='{status}'/>".encode(), None, NOW)
