"""The message store's behaviour, the same on SQLite and on PostgreSQL.

Every test runs once per backend (fixture ``backend`` in conftest.py). They speak of what
the node relies on: idempotent submission, one transaction per acknowledgement, due rows,
settling once, hand-over, expiry, returns, the inbox, the receipt cursor and the blobs.
"""

from __future__ import annotations

import os
import time

import pytest

from gateway.store import Outcome, OutgoingState

from .rows import DAY, NOW, OTHER, RECIPIENT, SENDER, event, inbox_entry, outgoing, refusal, settle, submit


def test_a_submission_is_stored_once_and_an_identical_one_is_the_same(store):
    """A second submission with the same content is SAME and adds nothing; other content is CONFLICT."""
    assert submit(store, "m1") is Outcome.NEW
    assert submit(store, "m1") is Outcome.SAME
    assert submit(store, "m1", content="content-2") is Outcome.CONFLICT
    assert [o.message_id for o in store.queued()] == ["m1"]
    assert [e.kind for e in store.timeline(SENDER, "m1")] == ["accepted"]


def test_a_submission_with_several_recipients_is_one_transaction(store):
    """All rows of a message are stored together, or none is (a failing row rolls back the submission)."""
    good = outgoing(store, "m1", RECIPIENT)
    broken = {k: v for k, v in outgoing(store, "m1", OTHER).items() if k != "via"}
    with pytest.raises(Exception):  # noqa: B017 - each driver names a missing parameter differently
        submit(store, "m1", rows=[good, broken])
    assert store.queued() == [] and store.timeline(SENDER, "m1") == []
    assert submit(store, "m1", rows=[good, outgoing(store, "m1", OTHER)]) is Outcome.NEW
    assert sorted(o.recipient for o in store.outgoing_for(SENDER, "m1")) == [RECIPIENT, OTHER]


def test_rows_round_trip_with_every_field(store):
    """What the node wrote comes back unchanged: bytes, paths, times, hops and the upstream node."""
    row = outgoing(store, "m1", upstream="node-hub", hops=["hop-1", "hop-2"])
    assert store.relay(row, [event("relaying")]) is Outcome.NEW
    item = store.find_outgoing(SENDER, "m1", RECIPIENT)
    assert (item.envelope, str(item.blob), item.seal, item.via, item.upstream, item.hops) == (
        b"<envelope/>", row["blob"], "seal.m1", "node-kanton", "node-hub", ("hop-1", "hop-2"))  # fmt: skip
    assert (item.state, item.attempts, item.next_attempt, item.expires, item.warned) == (
        OutgoingState.QUEUED, 0, NOW, NOW + 30 * DAY, False)  # fmt: skip
    assert (item.receipt_status, item.receipt, item.receipt_signature) == (None, None, None)
    assert store.find_outgoing(SENDER, "m1", OTHER) is None


def test_a_relayed_message_is_queued_once_per_recipient(store):
    """The same relayed transfer is SAME; the messageId with other ciphertext is CONFLICT."""
    assert store.relay(outgoing(store, "m1", upstream="node-hub"), [event("relaying")]) is Outcome.NEW
    assert store.relay(outgoing(store, "m1", upstream="node-hub"), [event("relaying")]) is Outcome.SAME
    assert store.relay(outgoing(store, "m1", upstream="node-hub", content=b"other"), [event("relaying")]) is Outcome.CONFLICT
    assert len(store.queued()) == 1
    assert [e.kind for e in store.timeline(SENDER, "m1")] == ["relaying"]


def test_due_returns_queued_rows_whose_time_has_come_oldest_first(store):
    """Rows are due from their next attempt on, in that order, and never more than the limit."""
    for i, delay in enumerate([30, 0, 10, 3600]):
        submit(store, f"m{i}", rows=[outgoing(store, f"m{i}", now=NOW)])
        item = store.find_outgoing(SENDER, f"m{i}", RECIPIENT)
        if delay:
            store.reschedule(item, NOW + delay, event("retry"))
    assert [o.message_id for o in store.due(NOW + 60)] == ["m1", "m2", "m0"]
    assert [o.message_id for o in store.due(NOW + 60, limit=2)] == ["m1", "m2"]
    assert store.due(NOW - 1) == []
    assert store.next_due_time() == NOW


def test_a_rescheduled_row_waits_and_counts_the_attempt(store):
    """Rescheduling moves the next attempt, counts it and tells the timeline why."""
    submit(store, "m1")
    item = store.due(NOW)[0]
    store.reschedule(item, NOW + 120, event("retry", detail="peer down"))
    assert store.due(NOW + 60) == []
    assert store.next_due_time() == NOW + 120
    again = store.due(NOW + 120)[0]
    assert again.attempts == 1 and again.next_attempt == NOW + 120
    assert [e.kind for e in store.timeline(SENDER, "m1")] == ["accepted", "retry"]


def test_a_row_is_settled_once_with_its_receipt_and_events(store):
    """Settling closes the row, stores the receipt for the sender and the events; a second settle changes nothing."""
    submit(store, "m1")
    item = store.due(NOW)[0]
    assert settle(store, item, OutgoingState.DELIVERED, now=NOW + 1) is True
    assert settle(store, item, OutgoingState.FAILED, status=202, now=NOW + 2) is False
    closed = store.find_outgoing(SENDER, "m1", RECIPIENT)
    assert (closed.state, closed.receipt_status, closed.receipt, closed.receipt_signature, closed.attempts) == (
        OutgoingState.DELIVERED, 100, b"<receipt status='100'/>", "sig", 1)  # fmt: skip
    [(_, receipt)] = store.receipts_for(SENDER)
    assert (receipt.message_id, receipt.recipient, receipt.status, receipt.receipt, receipt.time) == (
        "m1", RECIPIENT, 100, b"<receipt status='100'/>", NOW + 1)  # fmt: skip
    assert [e.kind for e in store.timeline(SENDER, "m1")] == ["accepted", "receipt"]
    assert store.due(NOW + DAY) == [] and store.queued() == [] and store.next_due_time() is None


def test_settling_a_relayed_row_queues_its_return_in_the_same_transaction(store):
    """The receipt owed upstream is queued with the settle, then sent, retried or done."""
    store.relay(outgoing(store, "m1", upstream="node-hub"), [event("relaying")])
    item = store.due(NOW)[0]
    assert settle(store, item, OutgoingState.DELIVERED, now=NOW + 5, return_token="token-1") is True
    assert store.next_return_time() == NOW + 5
    assert store.due_returns(NOW) == []
    [owed] = store.due_returns(NOW + 5)
    assert (owed.upstream, owed.token, owed.attempts) == ("node-hub", "token-1", 0)
    store.return_later(owed, NOW + 60)
    assert store.due_returns(NOW + 30) == [] and store.next_return_time() == NOW + 60
    [again] = store.due_returns(NOW + 60)
    assert again.attempts == 1
    store.return_done(again)
    assert store.due_returns(NOW + DAY) == [] and store.next_return_time() is None


def test_a_submitted_row_owes_no_return(store):
    """Only relayed rows (with an upstream node) queue a return, whatever token is passed."""
    submit(store, "m1")
    settle(store, store.due(NOW)[0], OutgoingState.DELIVERED, return_token="token-1")
    assert store.due_returns(NOW + DAY) == []


def test_a_handed_row_is_no_longer_sent_but_can_still_be_settled(store):
    """After a relay's acknowledgement the row waits for the final receipt; the hand-over happens once."""
    submit(store, "m1")
    item = store.due(NOW)[0]
    assert store.hand_over(item, [event("handed", status=601)]) is True
    assert store.hand_over(item, [event("handed", status=601)]) is False
    handed = store.find_outgoing(SENDER, "m1", RECIPIENT)
    assert handed.state is OutgoingState.HANDED and handed.attempts == 1
    assert store.due(NOW + DAY) == [] and store.queued() == []
    assert settle(store, handed, OutgoingState.DELIVERED) is True
    assert [e.kind for e in store.timeline(SENDER, "m1")] == ["accepted", "handed", "receipt"]


def test_expiring_rows_are_warned_once_and_returned_again_when_expired(store):
    """Rows expiring within the horizon come back until warned; once expired they come back warned or not."""
    submit(store, "soon", rows=[outgoing(store, "soon", expires=NOW + 3 * DAY)])
    submit(store, "later", rows=[outgoing(store, "later", expires=NOW + 20 * DAY)])
    [soon] = store.expiring(NOW, 7 * DAY)
    assert soon.message_id == "soon"
    store.mark_warned(soon, event("expires-soon", status=701))
    assert store.expiring(NOW, 7 * DAY) == []
    [expired] = store.expiring(NOW + 3 * DAY, 7 * DAY)
    assert expired.message_id == "soon" and expired.warned
    assert settle(store, expired, OutgoingState.EXPIRED, status=204) is True
    assert [o.message_id for o in store.expiring(NOW + 14 * DAY, 7 * DAY)] == ["later"]
    assert [e.kind for e in store.timeline(SENDER, "soon")] == ["accepted", "expires-soon", "receipt"]


def test_a_handed_row_still_expires(store):
    """A message handed to a relay is among the expiring rows too (the relay may never answer)."""
    submit(store, "m1", rows=[outgoing(store, "m1", expires=NOW + DAY)])
    store.hand_over(store.due(NOW)[0], [event("handed")])
    [item] = store.expiring(NOW + 2 * DAY, 7 * DAY)
    assert item.state is OutgoingState.HANDED


def test_an_open_circuit_breaker_holds_one_peers_rows_and_its_closing_releases_them(store):
    """Postpone delays only the rows for that next hop; release makes them due now."""
    submit(store, "a", rows=[outgoing(store, "a", via="node-kanton")])
    submit(store, "b", rows=[outgoing(store, "b", via="node-solothurn")])
    assert store.postpone("node-kanton", NOW + 300) == 1
    assert [o.message_id for o in store.due(NOW)] == ["b"]
    assert store.release("node-kanton", NOW + 10) == 1
    assert sorted(o.message_id for o in store.due(NOW + 10)) == ["a", "b"]


def test_a_refused_submission_leaves_receipts_and_an_event_only(store):
    """A refusal stores its receipts for the sender and one timeline event, and queues nothing."""
    store.refuse(sender=SENDER, message_id="m1", receipts=[refusal("m1", 201), refusal("m1", 301)], event=event("refused"))
    assert [r.status for _, r in store.receipts_for(SENDER)] == [201, 301]
    assert store.queued() == [] and [e.kind for e in store.timeline(SENDER, "m1")] == ["refused"]


def test_the_receipt_cursor_only_grows_and_after_skips_what_was_read(store):
    """Receipt ids increase in the order receipts are stored; ``after`` returns only newer ones, per sender."""
    store.refuse(sender=SENDER, message_id="m1", receipts=[refusal("m1")], event=event("refused"))
    first = store.receipts_for(SENDER)
    store.refuse(sender=SENDER, message_id="m2", receipts=[refusal("m2")], event=event("refused"))
    submit(store, "m3")
    settle(store, store.due(NOW)[0], OutgoingState.DELIVERED)
    everything = store.receipts_for(SENDER)
    ids = [i for i, _ in everything]
    assert ids == sorted(ids) and len(set(ids)) == 3 and everything[0] == first[0]
    assert [r.message_id for _, r in store.receipts_for(SENDER, after=first[0][0])] == ["m2", "m3"]
    assert store.receipts_for(SENDER, after=ids[-1]) == []
    assert store.receipts_for(RECIPIENT) == []


def test_a_delivered_message_is_kept_once_in_the_inbox_until_acknowledged(store):
    """The inbox takes a transfer once (SAME for the same, CONFLICT for other content) and acknowledges it once."""
    entry = inbox_entry(store, "m1")
    assert store.deliver(entry, [event("delivered")]) is Outcome.NEW
    assert store.deliver(entry, [event("delivered")]) is Outcome.SAME
    assert store.deliver(inbox_entry(store, "m1", content=b"other"), [event("delivered")]) is Outcome.CONFLICT
    [kept] = store.inbox(RECIPIENT)
    assert (kept.message_id, kept.envelope, kept.receipt, kept.receipt_signature, kept.state, str(kept.blob)) == (
        "m1", b"<envelope/>", b"<receipt status='100'/>", "jws.m1", "delivered", entry["blob"])  # fmt: skip
    assert store.find_inbox(SENDER, "m1", RECIPIENT) == kept
    assert store.acknowledge(kept, event("fetched")) is True
    assert store.acknowledge(kept, event("fetched")) is False
    assert store.inbox(RECIPIENT) == []
    assert [e.state for e in store.inbox(RECIPIENT, include_acknowledged=True)] == ["acknowledged"]
    assert [e.kind for e in store.timeline(SENDER, "m1")] == ["delivered", "fetched"]


def test_the_timeline_is_ordered_by_time_then_by_insertion(store):
    """Events come back in time order; events at the same instant keep the order they were added in."""
    store.add_events(SENDER, "m1", [(RECIPIENT, event("b", NOW + 2)), (None, event("a", NOW + 1, recipient=OTHER))])
    store.add_events(SENDER, "m1", [(RECIPIENT, event("c", NOW + 2)), (RECIPIENT, event("d", NOW + 2, status=100, detail="x"))])
    timeline = store.timeline(SENDER, "m1")
    assert [e.kind for e in timeline] == ["a", "b", "c", "d"]
    assert (timeline[0].recipient, timeline[3].as_dict()) == (
        OTHER, {"time": NOW + 2, "node": "node-luzern", "kind": "d", "recipient": RECIPIENT, "status": 100, "detail": "x"})  # fmt: skip


def test_everything_survives_closing_and_reopening_the_store(backend):
    """Committed rows, receipts and events are there after a restart."""
    store = backend.open()
    submit(store, "m1")
    submit(store, "m2")
    settle(store, store.find_outgoing(SENDER, "m2", RECIPIENT), OutgoingState.DELIVERED)
    store.close()
    reopened = backend.open()
    assert [o.message_id for o in reopened.queued()] == ["m1"]
    assert [r.message_id for _, r in reopened.receipts_for(SENDER)] == ["m2"]
    assert submit(reopened, "m1") is Outcome.SAME


def test_a_blob_is_durable_and_an_unreferenced_old_one_is_removed_at_start(store):
    """Blobs referenced by a row stay; a blob left by a crash mid-write is removed."""
    submit(store, "m1")
    kept = store.find_outgoing(SENDER, "m1", RECIPIENT).blob
    writer = store.new_blob()
    writer.write(b"half a payload")
    orphan = writer.close()
    hour_ago = time.time() - 7200
    for path in (kept, orphan):
        os.utime(path, (hour_ago, hour_ago))
    assert kept.read_bytes() == b"ciphertext"
    assert store.remove_orphan_blobs() == 1
    assert kept.exists() and not orphan.exists()


def test_a_discarded_blob_leaves_no_file(store):
    """A refused payload's blob is deleted, not left for the orphan sweep."""
    writer = store.new_blob()
    writer.write(b"refused")
    writer.discard()
    assert list(store.blobs.iterdir()) == []
