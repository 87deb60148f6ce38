"""Replica processes sharing one queue: every row is sent and settled exactly once, even when one dies."""

from __future__ import annotations

import json
import signal
from collections import Counter

import psycopg

from gateway.store import OutgoingState

from .replica import fill, spawn

ROWS = 1200


def finish(process, timeout: float = 240) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return json.loads(out)


def receipts_per_row(pg) -> Counter:
    with psycopg.connect(pg.dsn) as conn:
        conn.execute(f'SET search_path TO "{pg.schema}"')
        return Counter(conn.execute("SELECT message_id, recipient FROM receipts").fetchall())


def test_two_replica_processes_lease_and_settle_every_row_exactly_once(pg):
    """Two processes drain 1,200 queued rows concurrently: their leases never overlap and each row has one receipt."""
    store = pg.open(replica="filler")
    fill(store, ROWS)
    rows = {o.row for o in store.queued()}
    assert len(rows) == ROWS
    processes = [spawn("drain", pg.dsn, pg.directory, pg.schema, name, "--limit", "50") for name in ("a", "b")]
    a, b = (finish(p) for p in processes)
    assert set(a["leased"]).isdisjoint(b["leased"]), "a row was leased by both replicas"
    assert Counter(a["leased"] + b["leased"]) == Counter(rows), "every row leased exactly once"
    assert sorted(a["settled"] + b["settled"]) == sorted(rows)
    assert a["settled"] and b["settled"], "both replicas took part"
    assert store.queued() == []
    assert set(receipts_per_row(pg).values()) == {1} and sum(receipts_per_row(pg).values()) == ROWS
    assert all(o.state is OutgoingState.DELIVERED for o in store.outgoing_for("1-1061-1", "bulk-000000"))


def test_the_rows_of_a_replica_killed_mid_lease_are_taken_over_after_the_lease_and_settled_once(pg):
    """A replica killed while holding leases loses nothing: once its leases run out another replica settles its rows."""
    store = pg.open(replica="filler")
    fill(store, ROWS)
    rows = {o.row for o in store.queued()}
    doomed = spawn("lease", pg.dsn, pg.directory, pg.schema, "doomed", "--limit", "300", "--lease", "30")
    held = json.loads(doomed.stdout.readline())["leased"]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    assert len(held) == 300
    # While the dead replica's leases live, another replica settles everything else and leaves those rows alone.
    early = finish(spawn("drain", pg.dsn, pg.directory, pg.schema, "early", "--limit", "100", "--stop-when-idle"))
    assert sorted(early["settled"]) == sorted(set(rows) - set(held))
    assert {o.row for o in store.queued()} == set(held), "only the dead replica's rows are left"
    # After the lease (here: a replica whose clock is 31 s ahead), they are taken over.
    survivor = finish(spawn("drain", pg.dsn, pg.directory, pg.schema, "survivor", "--limit", "100", "--clock-offset", "31"))
    assert sorted(survivor["settled"]) == sorted(held)
    counts = receipts_per_row(pg)
    assert len(counts) == ROWS and set(counts.values()) == {1}

