"""Group commit: concurrent messages share fsyncs and audit transactions, and none is acknowledged early."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit import Action, Actor, ActorKind, AuditLog, AuditRecord, AuditUnavailable, Role
from gateway.audit.verify import verify_log
from gateway.groupcommit import AuditWriter, DurabilityError, GroupSync
from gateway.store import Store

from ..conftest import KANTON, LUZERN
from .nodes import client, running, sample_envelope
from .test_node import MOVE

NODE = "node-test"
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def node_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def record(i: int) -> AuditRecord:
    return AuditRecord(time=T0, node=NODE, role=Role.NONE, action=Action.CONFIG_CHANGE,
                       actor=Actor(ActorKind.NODE, NODE), details={"n": str(i)})  # fmt: skip


async def test_one_fsync_round_covers_every_write_noted_before_it(tmp_path):
    """Fifty writers that wait at once are made durable by one or two rounds, not fifty."""
    sync = GroupSync([tmp_path], name="test directory")
    try:
        for _ in range(50):
            sync.written()
        await asyncio.gather(*(sync.durable() for _ in range(50)))
        assert sync.pending == 0
        assert 1 <= sync.rounds <= 2
        await sync.durable()  # nothing new written: no new round
        assert sync.rounds <= 2
    finally:
        sync.close()


async def test_a_write_noted_after_a_round_is_covered_by_a_later_round(tmp_path):
    """durable() never returns on a round that began before the write it waits for."""
    sync = GroupSync([tmp_path], name="test directory")
    try:
        sync.written()
        first = asyncio.ensure_future(sync.durable())
        await asyncio.sleep(0)  # the waiter starts a round ...
        await asyncio.sleep(0)  # ... which counts the writes it covers and hands its fsync to the thread
        sync.written()
        await asyncio.gather(first, sync.durable())
        assert sync.pending == 0 and sync.rounds == 2
    finally:
        sync.close()


async def test_a_failed_fsync_is_raised_to_every_waiter(tmp_path):
    """If the disk refuses the fsync, nobody may acknowledge: each waiter gets DurabilityError."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "not-a-file"))  # opening a socket file fails (ENXIO)
    sync = GroupSync([tmp_path / "not-a-file"], name="test socket")
    try:
        sync.written()
        results = await asyncio.gather(sync.durable(), sync.durable(), return_exceptions=True)
        assert all(isinstance(r, DurabilityError) for r in results)
        assert sync.pending == 1
    finally:
        sync.close()
        listener.close()


async def test_concurrent_audit_appends_share_transactions_and_the_log_verifies(tmp_path, node_key):
    """Forty concurrent appends land in a few batches, with distinct consecutive indices, and verify."""
    log = AuditLog.open(tmp_path / "audit.db", node=NODE, signing_key=node_key)
    writer = AuditWriter(log, lambda: T0)
    try:
        results = await asyncio.gather(*(writer.append([record(2 * i), record(2 * i + 1)]) for i in range(40)))
        indices = [i for pair in results for i in pair]
        assert sorted(indices) == list(range(80))
        assert all(pair == [pair[0], pair[0] + 1] for pair in results)
        assert writer.batches < 40
        log.append([record(80)], now=T0)  # the node's own handle appends beside the writer's
        log.checkpoint(T0)
        assert log.size == 81
        verified = verify_log(log.path, node_key.public_key())  # raises at the first bad index
        assert verified.size == 81 and verified.unsigned_tail == 0
    finally:
        writer.close()
        log.close()


async def test_an_audit_batch_that_cannot_be_written_fails_every_waiter(tmp_path):
    """A log without its signing key cannot append: each waiting message gets AuditUnavailable (403)."""
    log = AuditLog.open(tmp_path / "audit.db", node=NODE, signing_key=None)
    writer = AuditWriter(log, lambda: T0)
    try:
        results = await asyncio.gather(*(writer.append([record(i)]) for i in range(5)), return_exceptions=True)
        assert all(isinstance(r, AuditUnavailable) for r in results)
        assert log.size == 0
    finally:
        writer.close()
        log.close()


@pytest.mark.parametrize(("commit", "synchronous"), [("group", 1), ("each", 2)])
def test_the_store_syncs_in_commit_only_when_configured_to(tmp_path, commit, synchronous):
    """'each' keeps SQLite's FULL sync in every COMMIT; 'group' leaves the sync to durable()."""
    store = Store(tmp_path, commit=commit)
    try:
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == synchronous
    finally:
        store.close()


def test_an_unknown_commit_mode_is_refused(tmp_path):
    """A typo in [store] commit fails at start, not silently per commit."""
    with pytest.raises(ValueError, match="commit"):
        Store(tmp_path, commit="sometimes")


async def test_concurrent_submissions_share_fsyncs_and_every_one_is_delivered(federation, clock):
    """Thirty messages submitted at once are all accepted with fewer fsync rounds than messages."""
    async with running(federation, clock) as nodes:
        origin = nodes["node-luzern"]
        before = origin.store.sync_rounds
        prepared = [sample_envelope(MOVE, LUZERN, KANTON, clock.now()) for _ in range(30)]
        async with client(federation, LUZERN) as api:
            answers = await asyncio.gather(*(api.submit(envelope, payload, MOVE.data.name) for _, envelope, payload in prepared))
        assert [status for status, _ in answers] == [202] * 30
        rounds = origin.store.sync_rounds - before
        assert 0 < rounds < 30 * 2  # each message would need a WAL and a blob-directory fsync of its own
        assert await origin.forward_due() == 30
        inbox = {entry.message_id for entry in nodes["node-kanton"].store.inbox(KANTON)}
        assert inbox == {message_id for message_id, _, _ in prepared}
        # the rows behind every 202 are committed in the store file itself
        db = sqlite3.connect(origin.config.store / "messages.db")
        try:
            (count,) = db.execute("SELECT COUNT(*) FROM submissions WHERE sender=?", (LUZERN,)).fetchone()
        finally:
            db.close()
        assert count == 30

