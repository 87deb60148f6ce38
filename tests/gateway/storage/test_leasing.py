"""Several replicas on one PostgreSQL schema: leases decide who sends, settles and expires a row.

Each replica here is a :class:`PgStore` with its own replica id and its own injected clock,
so lease expiry is tested without sleeping.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from gateway.store import Outcome, OutgoingState

from .rows import DAY, NOW, RECIPIENT, SENDER, event, outgoing, refusal, settle, submit

LEASE = 60.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def replicas(pg):
    """Two replicas, a and b, each with its own clock at NOW."""
    clocks = {"a": Clock(), "b": Clock()}
    stores = {name: pg.open(replica=name, clock=clock, lease_seconds=LEASE) for name, clock in clocks.items()}
    return stores["a"], stores["b"], clocks


def test_a_leased_row_is_not_due_for_another_replica_until_its_lease_runs_out(replicas):
    """While a holds the lease, b gets nothing; from the lease's end on, b takes the row over."""
    a, b, clocks = replicas
    submit(a, "m1")
    [held] = a.due(NOW)
    assert b.due(NOW) == [] and b.due(NOW + LEASE - 1) == []
    clocks["b"].now = NOW + LEASE
    [taken] = b.due(NOW + LEASE)
    assert taken.row == held.row


def test_the_holder_asks_again_and_gets_its_own_rows_back(replicas):
    """A replica's next round returns the rows it still holds (its previous round is over)."""
    a, _, _ = replicas
    submit(a, "m1")
    first = a.due(NOW)
    assert [o.row for o in a.due(NOW + 1)] == [o.row for o in first]


def test_only_the_lease_holder_settles_reschedules_or_hands_over_a_queued_row(replicas):
    """Another replica's settle, reschedule, hand-over and warning change nothing while the lease lives."""
    a, b, _ = replicas
    submit(a, "m1", rows=[outgoing(a, "m1", expires=NOW + DAY)])
    [item] = a.due(NOW)
    assert settle(b, item, OutgoingState.DELIVERED) is False
    assert b.reschedule(item, NOW + 600, event("retry")) is False
    assert b.hand_over(item, [event("handed")]) is False
    b.mark_warned(item, event("expires-soon"))
    unchanged = b.find_outgoing(SENDER, "m1", RECIPIENT)
    assert (unchanged.state, unchanged.attempts, unchanged.next_attempt, unchanged.warned) == (OutgoingState.QUEUED, 0, NOW, False)
    assert b.receipts_for(SENDER) == [] and [e.kind for e in b.timeline(SENDER, "m1")] == ["accepted"]
    assert settle(a, item, OutgoingState.DELIVERED) is True
    assert len(a.receipts_for(SENDER)) == 1


def test_a_replica_that_lost_its_lease_cannot_settle_what_another_took_over(replicas):
    """A stale holder (paused past its lease) is refused while the new holder's lease lives; the row is settled once."""
    a, b, clocks = replicas
    submit(a, "m1")
    [stale] = a.due(NOW)
    clocks["b"].now = clocks["a"].now = NOW + LEASE + 1
    [taken] = b.due(NOW + LEASE + 1)
    assert settle(a, stale, OutgoingState.DELIVERED) is False
    assert a.reschedule(stale, NOW + 600, event("retry")) is False
    assert settle(b, taken, OutgoingState.DELIVERED) is True
    assert [r.status for _, r in a.receipts_for(SENDER)] == [100]


def test_an_expired_lease_nobody_took_over_still_lets_its_holder_settle(replicas):
    """A slow holder whose lease ran out settles normally if no other replica took the row meanwhile."""
    a, _, clocks = replicas
    submit(a, "m1")
    [item] = a.due(NOW)
    clocks["a"].now = NOW + 10 * LEASE
    assert settle(a, item, OutgoingState.DELIVERED) is True


def test_a_released_row_is_free_for_any_replica_when_due_again(replicas):
    """Rescheduling releases the lease: the next attempt may be made by another replica."""
    a, b, _ = replicas
    submit(a, "m1")
    [item] = a.due(NOW)
    assert a.reschedule(item, NOW + 30, event("retry")) is True
    assert [o.attempts for o in b.due(NOW + 30)] == [1]


def test_a_holder_can_extend_its_lease_for_a_long_transfer(replicas):
    """Extending the lease keeps the row from other replicas; a lost lease cannot be extended."""
    a, b, clocks = replicas
    submit(a, "m1")
    [item] = a.due(NOW)
    clocks["a"].now = NOW + LEASE - 1
    assert a.extend_lease(item) is True
    assert b.due(NOW + LEASE + 1) == []
    clocks["b"].now = NOW + 2 * LEASE
    assert len(b.due(NOW + 2 * LEASE)) == 1
    assert a.extend_lease(item) is False


def test_next_due_time_counts_another_replicas_lease_from_its_end(replicas):
    """A forwarder does not spin on rows another replica holds: they are due for it when the lease ends."""
    a, b, _ = replicas
    submit(a, "m1")
    a.due(NOW)
    assert a.next_due_time() == NOW
    assert b.next_due_time() == NOW + LEASE


def test_expiry_leaves_a_row_in_flight_on_another_replica_alone(replicas):
    """b does not expire (nor warn about) a queued row a is sending; it does once a's lease ran out."""
    a, b, clocks = replicas
    submit(a, "m1", rows=[outgoing(a, "m1", expires=NOW + 10)])
    a.due(NOW)
    clocks["b"].now = NOW + 20
    assert b.expiring(NOW + 20, 7 * DAY) == []
    clocks["b"].now = NOW + LEASE
    [expired] = b.expiring(NOW + LEASE, 7 * DAY)
    assert settle(b, expired, OutgoingState.EXPIRED, status=204) is True
    assert a.due(NOW + LEASE) == []


def test_a_warning_is_recorded_once_when_two_replicas_see_the_same_handed_row(replicas):
    """Handed rows are not leased; the 701 warning is written by the first replica only."""
    a, b, _ = replicas
    submit(a, "m1", rows=[outgoing(a, "m1", expires=NOW + DAY)])
    a.hand_over(a.due(NOW)[0], [event("handed")])
    [seen_a], [seen_b] = a.expiring(NOW, 7 * DAY), b.expiring(NOW, 7 * DAY)
    a.mark_warned(seen_a, event("expires-soon", status=701))
    b.mark_warned(seen_b, event("expires-soon", status=701))
    assert [e.kind for e in a.timeline(SENDER, "m1")].count("expires-soon") == 1


def test_a_handed_row_is_settled_once_by_whichever_replica_gets_the_final_receipt_first(replicas):
    """The final receipt may reach any replica (and expiry run on another): the first settle wins."""
    a, b, _ = replicas
    submit(a, "m1")
    item = a.due(NOW)[0]
    a.hand_over(item, [event("handed")])
    handed = b.find_outgoing(SENDER, "m1", RECIPIENT)
    assert settle(b, handed, OutgoingState.DELIVERED) is True
    assert settle(a, handed, OutgoingState.EXPIRED, status=204) is False
    assert [r.status for _, r in a.receipts_for(SENDER)] == [100]


def test_returns_owed_upstream_are_leased_like_rows(replicas):
    """A receipt owed upstream is sent by one replica at a time; a dead one's return is taken over."""
    a, b, clocks = replicas
    a.relay(outgoing(a, "m1", upstream="node-hub"), [event("relaying")])
    settle(a, a.due(NOW)[0], OutgoingState.DELIVERED, return_token="token-1")
    [owed] = a.due_returns(NOW)
    assert b.due_returns(NOW) == []
    assert b.next_return_time() == NOW + LEASE
    b.return_done(owed)  # not b's to finish
    clocks["b"].now = NOW + LEASE
    [taken] = b.due_returns(NOW + LEASE)
    assert taken.row == owed.row
    b.return_done(taken)
    assert a.due_returns(NOW + DAY) == [] and a.next_return_time() is None


def test_two_replicas_submitting_the_same_message_at_once_store_it_once(pg):
    """The second insert waits for the first transaction and then answers SAME, as one node would."""
    store = pg.open(replica="b")
    row = outgoing(store, "m1")
    with psycopg.connect(pg.dsn) as other:  # replica a, mid-transaction
        other.execute(f'SET search_path TO "{pg.schema}"')
        other.execute("INSERT INTO submissions VALUES (%s, 'm1', 'content-1', %s)", (SENDER, NOW))
        outcome: list[Outcome] = []
        waiting = threading.Thread(target=lambda: outcome.append(submit(store, "m1", rows=[row])))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive(), "the second submission must wait for the first transaction"
        other.commit()
    waiting.join(10)
    assert outcome == [Outcome.SAME]
    assert store.queued() == []  # replica a's transaction (here: only the submission row) decides what is stored


def test_a_receipt_committed_late_is_not_skipped_by_a_cursor_read_before(pg):
    """A receipt inserted first but committed last still comes after the cursor a local system already holds."""
    store = pg.open(replica="b")
    with psycopg.connect(pg.dsn) as slow:  # replica a settles, its commit is late
        slow.execute(f'SET search_path TO "{pg.schema}"')
        slow.execute(
            "INSERT INTO receipts (sender, message_id, recipient, status, time, receipt) VALUES (%s, 'late', %s, 100, %s, 'r')",
            (SENDER, RECIPIENT, NOW),
        )
        store.refuse(sender=SENDER, message_id="early", receipts=[refusal("early")], event=event("refused"))
        [(cursor, first)] = store.receipts_for(SENDER)
        assert first.message_id == "early"
        slow.commit()
    assert [r.message_id for _, r in store.receipts_for(SENDER, after=cursor)] == ["late"]
