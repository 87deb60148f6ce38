"""The append-only log: group commit, checkpoints, fail-closed writes, recovery and retention.

Tests that take ``where`` (or ``log``) run on SQLite and on PostgreSQL; those about the
SQLite file itself (WAL, file attributes) take ``log_path``.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.audit import DEFAULT_RETENTION, MIN_RETENTION, AuditLog, AuditUnavailable, verify_log
from gateway.audit.merkle import leaf_hash, root_of
from gateway.ids import StatusCode

from .conftest import AUDITOR, NODE, T0, message_record, test_key


def test_append_returns_consecutive_indices_across_batches(log: AuditLog):
    """Each batch gets the next indices, in the order of the records."""
    assert log.append([message_record(i) for i in range(3)]) == [0, 1, 2]
    assert log.append([message_record(3)]) == [3]
    assert log.append([]) == []
    assert log.size == 4


def test_records_are_stored_as_the_exact_bytes_that_are_hashed(log: AuditLog, where):
    """The stored body is the canonical JSON and the stored leaf hash is SHA-256(0x00 || body)."""
    records = [message_record(i) for i in range(3)]
    log.append(records)
    conn = where.connect()
    rows = conn.execute("SELECT body, leaf_hash FROM records ORDER BY idx").fetchall()
    conn.close()
    assert [bytes(b) for b, _ in rows] == [r.canonical_bytes() for r in records]
    assert [bytes(h) for _, h in rows] == [leaf_hash(r.canonical_bytes()) for r in records]


def test_a_log_written_by_one_node_is_refused_to_another(where, key):
    """A node never appends to (or signs checkpoints over) another node's log: opening it as another node is refused."""
    first = where.open(signing_key=key)
    first.append([message_record(0)])
    first.close()
    with pytest.raises(ValueError, match="belongs to another node"):
        where.open(node="node-elsewhere", signing_key=key)
    again = where.open(signing_key=key)  # its own node still opens it
    assert again.size == 1
    again.close()


def test_the_log_file_uses_wal_and_full_sync(log_path: Path):
    """The log's own connection runs in WAL mode with synchronous=FULL."""
    log = AuditLog.open(log_path, node=NODE, signing_key=test_key())
    log.append([message_record(0)])
    assert sqlite3.connect(log_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert log._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    log.close()


def test_the_first_batch_and_every_nth_record_get_a_signed_checkpoint(where):
    """Checkpoints are signed in the append transaction when the count or the interval is reached."""
    with where.open(signing_key=test_key(), checkpoint_every=3, checkpoint_interval=timedelta(hours=1)) as log:
        log.append([message_record(0)])
        assert log.latest_checkpoint().checkpoint.size == 1
        log.append([message_record(1)])
        assert log.latest_checkpoint().checkpoint.size == 1
        log.append([message_record(2), message_record(3)])
        assert log.latest_checkpoint().checkpoint.size == 4
        log.append([message_record(4, when=T0 + timedelta(hours=2))])
        latest = log.latest_checkpoint().checkpoint
        assert latest.size == 5
        assert latest.root == root_of([leaf_hash(message_record(i, when=T0 + timedelta(hours=2) if i == 4 else None)
                                                 .canonical_bytes()) for i in range(5)])


def test_checkpoints_can_be_signed_on_demand(log: AuditLog):
    """checkpoint(now) signs the current size and root with the given time."""
    log.append([message_record(i) for i in range(2)])
    signed = log.checkpoint(T0 + timedelta(days=1))
    assert (signed.checkpoint.size, signed.checkpoint.time) == (2, T0 + timedelta(days=1))
    assert log.latest_checkpoint() == signed


def test_a_log_file_of_another_node_is_refused(log: AuditLog, where):
    """Opening a node's log under another node id fails, and so does appending a foreign record."""
    log.append([message_record(0)])
    with pytest.raises(ValueError):
        where.open(node="node-be", signing_key=test_key())
    with pytest.raises(ValueError):
        log.append([message_record(1, node="node-be")])


def test_appends_by_another_process_are_picked_up(where):
    """Two handles on one log interleave appends without clashing indices, and the log still verifies."""
    with where.open(signing_key=test_key(), checkpoint_every=1) as first, \
            where.open(signing_key=test_key(), checkpoint_every=1) as second:
        assert first.append([message_record(0)]) == [0]
        assert second.append([message_record(1)]) == [1]
        assert first.append([message_record(2)]) == [2]
    assert verify_log(where.source, test_key().public_key()).size == 3


def test_concurrent_appenders_write_one_gapless_log(where):
    """Four handles appending at once get disjoint indices 0..n-1, and the checkpoints verify although their clocks disagree.

    Each handle's records carry times of their own range (as replicas with skewed clocks
    would), so a later append may bring an older time: checkpoint times still never go back.
    """
    where.open(signing_key=test_key()).close()  # create the tables once, as a node's first start does

    def run(number: int) -> list[int]:
        got: list[int] = []
        with where.open(signing_key=test_key(), checkpoint_every=7, busy_timeout=30) as handle:  # one per thread
            for batch in range(10):
                base = number * 1000 + batch * 10
                got += handle.append([message_record(base + i) for i in range(3)])
        return got

    with ThreadPoolExecutor(4) as pool:
        indices = [i for got in pool.map(run, range(4)) for i in got]
    assert sorted(indices) == list(range(120))
    result = verify_log(where.source, test_key().public_key())
    assert (result.size, result.checkpoints >= 120 // 9, result.unsigned_tail < 7) == (120, True, True)


def test_a_locked_database_fails_closed_and_recovers(where):
    """While another writer holds the lock, append raises AuditUnavailable (403) and writes nothing; then it works."""
    with where.open(signing_key=test_key(), busy_timeout=0.05) as log:
        log.append([message_record(0)])
        blocker = where.connect()
        if where.backend == "sqlite":
            blocker.execute("BEGIN IMMEDIATE")
        else:  # another replica inside its append: it holds the log's head row
            blocker.execute("BEGIN")
            blocker.execute("SELECT value FROM meta WHERE key = 'node' FOR UPDATE").fetchone()
        with pytest.raises(AuditUnavailable) as caught:
            log.append([message_record(1), message_record(2)])
        assert caught.value.status is StatusCode.LOGGING_NOT_REACHABLE
        blocker.execute("ROLLBACK")
        blocker.close()
        assert log.size == 1
        assert log.append([message_record(1)]) == [1]
    assert verify_log(where.source, test_key().public_key()).size == 2


def test_readiness_sees_a_writer_holding_the_log_and_the_size_on_disk_is_reported(where):
    """writable_problem() is None while the log is free and names the problem while another writer holds it; disk_bytes() is positive."""
    with where.open(signing_key=test_key()) as log:
        log.append([message_record(0)])
        assert log.writable_problem() is None
        assert log.disk_bytes() > 0
        blocker = where.connect()
        if where.backend == "sqlite":
            blocker.execute("BEGIN IMMEDIATE")
        else:
            blocker.execute("BEGIN")
            blocker.execute("SELECT value FROM meta WHERE key = 'node' FOR UPDATE").fetchone()
        try:
            assert "not writable" in log.writable_problem(timeout=0.05)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert log.writable_problem() is None


def test_an_unavailable_signing_key_fails_closed_and_recovers(where):
    """When the key store fails, append raises AuditUnavailable and writes nothing; once back, append works."""
    available = {"now": False}

    def key_store():
        if not available["now"]:
            raise OSError("HSM not reachable")
        return test_key()

    with where.open(signing_key=key_store) as log:
        with pytest.raises(AuditUnavailable):
            log.append([message_record(0)])
        assert log.size == 0
        available["now"] = True
        assert log.append([message_record(0)]) == [0]


def test_a_log_opened_without_key_refuses_to_append(where):
    """A read-only handle (no signing key) fails closed on append."""
    with where.open(signing_key=None) as log:
        with pytest.raises(AuditUnavailable):
            log.append([message_record(0)])


@pytest.mark.skipif(shutil.which("chattr") is None, reason="chattr not installed")
def test_an_immutable_log_file_fails_closed_and_recovers_without_restart(log_path: Path):
    """With the database and WAL files made immutable, append raises AuditUnavailable; after lifting it, append works.

    Tests run as root, which ignores permission bits, so the files get the ext4 immutable
    attribute (``chattr +i``), which binds root too: the kernel refuses every write to the
    open WAL (SQLite reports a disk I/O error) and re-opening gives a read-only database.
    The ``-shm`` file is left writable on purpose: SQLite maps it into memory, and a
    write-refused mapping kills the process with SIGBUS instead of returning an error.
    """
    with AuditLog.open(log_path, node=NODE, signing_key=test_key()) as log:
        log.append([message_record(0)])
        files = [str(log_path), f"{log_path}-wal"]
        if subprocess.run(["chattr", "+i", *files], capture_output=True).returncode != 0:
            pytest.skip("filesystem does not support the immutable attribute")
        try:
            with pytest.raises(AuditUnavailable):
                log.append([message_record(1)])
            with pytest.raises(AuditUnavailable):
                log.append([message_record(1)])
        finally:
            subprocess.run(["chattr", "-i", *files], check=True)
        assert log.append([message_record(1)]) == [1]
    assert verify_log(log_path, test_key().public_key()).size == 2


def test_prune_refuses_to_cut_inside_the_retention_period(log: AuditLog):
    """Records younger than the default retention (at least a year) cannot be pruned."""
    log.append([message_record(0)])
    assert DEFAULT_RETENTION >= timedelta(days=365)
    with pytest.raises(ValueError):
        log.prune(T0 + timedelta(seconds=1), now=T0 + timedelta(days=30), actor=AUDITOR)


def test_prune_drops_old_bodies_and_the_log_still_verifies(where):
    """Pruning removes old bodies from the stored log, keeps their leaf hashes, and the whole log still verifies."""
    old = [message_record(i, message_id=f"old-{i}") for i in range(4)]
    new = [message_record(i, message_id=f"new-{i}", when=T0 + timedelta(days=400 + i)) for i in range(3)]
    now = T0 + timedelta(days=800)
    with where.open(signing_key=test_key()) as log:
        log.append(old)
        log.append(new)
        assert log.prune(T0 + timedelta(days=10), now=now, actor=AUDITOR) == 4
        assert [r.message_id for _, _, r in log.iter_records()][:3] == ["new-0", "new-1", "new-2"]
    raw = where.stored_bytes()
    assert b'"old-0"' not in raw and b'"new-0"' in raw
    result = verify_log(where.source, test_key().public_key())
    assert (result.size, result.pruned, result.unsigned_tail) == (8, 4, 0)


@pytest.mark.parametrize("days", [365, 0, -400, 365.9, True])
def test_apply_retention_refuses_less_than_the_floor(log: AuditLog, days):
    """A retention below 366 days (or not a whole number of days) is refused and nothing is pruned."""
    log.append([message_record(0)])
    with pytest.raises(ValueError, match="366"):
        log.apply_retention(days, now=T0 + timedelta(days=2000), actor=AUDITOR)
    assert (log.size, MIN_RETENTION) == (1, timedelta(days=366))


def test_apply_retention_prunes_what_is_older_and_the_log_still_verifies(where):
    """Records older than the retention lose their bodies, younger ones keep them, and the log verifies before and after."""
    with where.open(signing_key=test_key()) as log:
        log.append([message_record(i, message_id=f"old-{i}") for i in range(3)])
        log.append([message_record(i, message_id=f"new-{i}", when=T0 + timedelta(days=300 + i)) for i in range(2)])
        assert verify_log(where.source, test_key().public_key()).pruned == 0
        now = T0 + timedelta(days=700)  # old-* are 700 days old, new-* about 400
        assert log.apply_retention(600, now=now, actor=AUDITOR) == 3
        assert [r.message_id for _, _, r in log.iter_records()][:2] == ["new-0", "new-1"]
        prune_record = list(log.iter_records())[-1][2]
        assert prune_record.details == {"change": "audit_prune", "before": "2026-06-09T08:00:00.000000Z", "cut_index": "3"}
    result = verify_log(where.source, test_key().public_key())
    assert (result.size, result.pruned, result.unsigned_tail) == (6, 3, 0)


def test_apply_retention_writes_nothing_when_nothing_is_due(where):
    """Called again (or on a young log), apply_retention appends no record and signs no checkpoint."""
    with where.open(signing_key=test_key()) as log:
        log.append([message_record(i) for i in range(3)])
        assert log.apply_retention(366, now=T0 + timedelta(days=30), actor=AUDITOR) == 0
        assert log.size == 3
        assert log.apply_retention(366, now=T0 + timedelta(days=400), actor=AUDITOR) == 3
        size, checkpoint = log.size, log.latest_checkpoint()
        assert log.apply_retention(366, now=T0 + timedelta(days=401), actor=AUDITOR) == 0
        assert (log.size, log.latest_checkpoint()) == (size, checkpoint)
    assert verify_log(where.source, test_key().public_key()).pruned == 3


# -- PostgreSQL only: the server itself fails -------------------------------------------------


def test_an_unreachable_database_fails_closed(tmp_path: Path):
    """A log whose PostgreSQL server does not answer cannot be opened: AuditUnavailable (403), no hang."""
    from gateway.audit.log_pg import PgAuditLog

    with pytest.raises(AuditUnavailable) as caught:
        PgAuditLog.open("postgresql://drehscheibe@127.0.0.1:1/none", schema="audit", node=NODE,
                        signing_key=test_key(), connect_timeout=2)  # fmt: skip
    assert caught.value.status is StatusCode.LOGGING_NOT_REACHABLE


def test_a_lost_database_connection_fails_closed_and_recovers(pg_schemas):
    """When the server ends the log's session, the next append fails closed and the one after reconnects."""
    from gateway.audit.log_pg import PgAuditLog

    schema = pg_schemas.new()
    with PgAuditLog.open(pg_schemas.dsn, schema=schema, node=NODE, signing_key=test_key()) as log:
        log.append([message_record(0)])
        import psycopg

        with psycopg.connect(pg_schemas.dsn, autocommit=True) as admin:
            ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                  " WHERE application_name = 'drehscheibe audit' AND pid <> pg_backend_pid()"
                                  " AND query NOT ILIKE '%pg_terminate_backend%'").fetchall()  # fmt: skip
        assert ended
        with pytest.raises(AuditUnavailable):
            log.append([message_record(1)])
        assert log.append([message_record(1)]) == [1]
    from gateway.audit.log_pg import PgLogSource

    assert verify_log(PgLogSource(pg_schemas.dsn, schema), test_key().public_key()).size == 2
