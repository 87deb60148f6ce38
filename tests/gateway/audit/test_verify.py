"""Whole-log verification: every kind of tampering with the stored log is caught at the right index.

Every case runs on the SQLite file (scanned in this process and by worker processes) and
on a PostgreSQL schema (``postgresql``: the tampering then is SQL by a database user).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit import AuditLog, AuditVerificationError, verify_log
from gateway.audit import verify as verify_module
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.record import Action
from gateway.audit.merkle import leaf_hash
from gateway.audit.record import canonical_json

from .conftest import AUDITOR, NODE, T0, PgLog, SqliteLog, message_record, test_key

SIZE = 6


@pytest.fixture(autouse=True, params=["in-process", "workers", "workers-only", "postgresql"])
def scan_mode(request, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """Every case runs four times: one process; three ranges of two records, the first
    scanned here; the same with every range in a worker (as the auditor API does); and
    on PostgreSQL, where the whole log is scanned in one snapshot in this process.

    In worker mode a worker that fails would be replaced by an in-process scan and the
    test would still pass; the warning it logs is therefore turned into a failure.
    """
    if request.param in ("workers", "workers-only"):
        original = verify_module.verify_log

        def with_workers(*args, **kwargs):
            kwargs.setdefault("workers", 3)
            kwargs.setdefault("chunk", 2)
            kwargs.setdefault("scan_here", request.param == "workers")
            return original(*args, **kwargs)

        monkeypatch.setattr(verify_module, "verify_log", with_workers)
        monkeypatch.setitem(globals(), "verify_log", with_workers)
    yield request.param
    assert not [r for r in caplog.records if r.name == verify_module.log.name]


@pytest.fixture
def where(scan_mode: str, request, tmp_path: Path):
    """The log under test: a SQLite file, or (scan mode ``postgresql``) a fresh schema."""
    if scan_mode == "postgresql":
        schemas = request.getfixturevalue("pg_schemas")
        return PgLog(schemas.dsn, schemas.new())
    return SqliteLog(tmp_path / "a.sqlite")


@pytest.fixture
def another(scan_mode: str, request, tmp_path: Path):
    """A second log on the same backend."""
    if scan_mode == "postgresql":
        schemas = request.getfixturevalue("pg_schemas")
        return PgLog(schemas.dsn, schemas.new())
    return SqliteLog(tmp_path / "b.sqlite")


def build(where, *, checkpoint_every: int = 1) -> None:
    """One record per append; with checkpoint_every=1 every size 1..SIZE is signed."""
    with where.open(signing_key=test_key(), checkpoint_every=checkpoint_every) as log:
        for i in range(SIZE):
            log.append([message_record(i, person_refs=("ab" * 32,))])


def tamper(where, change: Callable[[sqlite3.Connection], None]) -> None:
    """Change the stored log with the rights of whoever can write its file or schema."""
    conn = where.connect()
    conn.execute("BEGIN")
    change(conn)
    conn.execute("COMMIT")
    conn.close()


def body(conn: sqlite3.Connection, idx: int) -> dict:
    return json.loads(conn.execute("SELECT body FROM records WHERE idx=?", (idx,)).fetchone()[0])


def set_body(conn: sqlite3.Connection, idx: int, obj: dict, *, rehash: bool) -> None:
    data = canonical_json(obj)
    if rehash:
        conn.execute("UPDATE records SET body=?, leaf_hash=? WHERE idx=?", (data, leaf_hash(data), idx))
    else:
        conn.execute("UPDATE records SET body=? WHERE idx=?", (data, idx))


def assert_bad_at(where, index: int | None) -> AuditVerificationError:
    with pytest.raises(AuditVerificationError) as caught:
        verify_log(where.source, test_key().public_key())
    assert caught.value.index == index
    return caught.value


def field_changes() -> list[tuple[str, Callable[[dict], None]]]:
    def setter(*keys: str, value: object) -> Callable[[dict], None]:
        def change(obj: dict) -> None:
            target = obj
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = value
        return change

    return [
        ("action", setter("action", value="refused")),
        ("actor.id", setter("actor", "id", value="someone-else")),
        ("actor.kind", setter("actor", "kind", value="admin")),
        ("details", setter("details", value={"note": "x"})),
        ("envelope.sender", setter("envelope", "sender", value="1-1059-1")),
        ("envelope.recipients", setter("envelope", "recipients", value=["3-CH-1"])),
        ("envelope.message_type", setter("envelope", "message_type", value="99")),
        ("envelope.message_class", setter("envelope", "message_class", value="1")),
        ("envelope.message_date", setter("envelope", "message_date", value="2026-03-02T08:00:00")),
        ("message_id", setter("message_id", value="msg-other")),
        ("node", setter("node", value="node-be")),
        ("outcome", setter("outcome", value="error")),
        ("person_refs", setter("person_refs", value=[])),
        ("policy.legal_basis", setter("policy", "legal_basis", value="none")),
        ("policy.purpose", setter("policy", "purpose", value="marketing")),
        ("policy.redactions", setter("policy", "redactions", value=[])),
        ("policy.revision", setter("policy", "revision", value="r8")),
        ("policy.rule_ids", setter("policy", "rule_ids", value=["allow-all"])),
        ("receipt_code", setter("receipt_code", value=100)),
        ("received_digest", setter("received_digest", value="f" * 64)),
        ("role", setter("role", value="relay")),
        ("sent_digest", setter("sent_digest", value="e" * 64)),
        ("time", setter("time", value="2026-03-01T09:00:00.000000Z")),
        ("v", setter("v", value=2)),
    ]


def test_an_untouched_log_verifies(where):
    """A log written by the node verifies, with every record covered by a checkpoint."""
    build(where)
    result = verify_log(where.source, test_key().public_key())
    assert (result.size, result.checkpoints, result.unsigned_tail) == (SIZE, SIZE, 0)


def test_the_field_list_covers_every_field_of_a_record():
    """The tampering cases below touch every top-level and nested field of a stored record."""
    obj = message_record(0).to_json()
    every = {k for k, v in obj.items() if not isinstance(v, dict) or not v} | {
        f"{k}.{n}" for k, v in obj.items() if isinstance(v, dict) and v for n in v
    } | {"details"}
    assert {name for name, _ in field_changes()} == every


@pytest.mark.parametrize("rehash", [False, True], ids=["body-only", "body-and-leaf-hash"])
@pytest.mark.parametrize("name,change", field_changes(), ids=[n for n, _ in field_changes()])
def test_changing_any_field_is_detected_at_its_index(where, name: str, change, rehash: bool):
    """Editing one field of record 3 in the SQLite file fails verification at index 3, even with a recomputed leaf hash."""
    path = where
    build(path)

    def edit(conn: sqlite3.Connection) -> None:
        obj = body(conn, 3)
        change(obj)
        set_body(conn, 3, obj, rehash=rehash)

    tamper(path, edit)
    assert_bad_at(path, 3)


def test_a_deleted_record_is_detected_at_its_index(where):
    """Deleting record 2 leaves a gap reported at index 2."""
    path = where
    build(path)
    tamper(path, lambda c: c.execute("DELETE FROM records WHERE idx=2"))
    assert "missing" in assert_bad_at(path, 2).reason


def test_a_deleted_and_renumbered_record_is_detected_at_its_index(where):
    """Deleting record 2 and closing the gap is reported at index 2."""
    path = where
    build(path)

    def edit(c: sqlite3.Connection) -> None:
        c.execute("DELETE FROM records WHERE idx=2")
        c.execute("UPDATE records SET idx=-idx WHERE idx>2")
        c.execute("UPDATE records SET idx=-idx-1 WHERE idx<0")

    tamper(path, edit)
    assert_bad_at(path, 2)


def test_an_inserted_record_is_detected_at_its_index(where):
    """A well-formed record inserted at position 2 (the rest shifted up) is reported at index 2."""
    path = where
    build(path)
    forged = message_record(99).canonical_bytes()

    def edit(c: sqlite3.Connection) -> None:
        c.execute("UPDATE records SET idx=-idx-1 WHERE idx>=2")
        c.execute("UPDATE records SET idx=-idx WHERE idx<0")
        c.execute("INSERT INTO records VALUES (2, ?, ?, ?)", ("2026-03-01T08:00:02.500000Z", leaf_hash(forged), forged))

    tamper(path, edit)
    assert_bad_at(path, 2)


def test_an_appended_record_without_checkpoint_is_only_an_unsigned_tail(where):
    """A record added after the newest checkpoint is not verified, and the result says so."""
    path = where
    build(path)
    forged = message_record(99).canonical_bytes()
    tamper(path, lambda c: c.execute("INSERT INTO records VALUES (?, 'x', ?, ?)", (SIZE, leaf_hash(forged), forged)))
    assert verify_log(path.source, test_key().public_key()).unsigned_tail == 1


@pytest.mark.parametrize("columns", ["body", "time, leaf_hash, body"], ids=["bodies", "whole-rows"])
def test_two_swapped_records_are_detected_at_the_first(where, columns: str):
    """Swapping records 1 and 4 (their bodies, or whole rows) is reported at index 1."""
    path = where
    build(path)

    def edit(c: sqlite3.Connection) -> None:
        c.execute("UPDATE records SET idx=-1 WHERE idx=1")
        c.execute("UPDATE records SET idx=1 WHERE idx=4")
        c.execute("UPDATE records SET idx=4 WHERE idx=-1")
        if columns == "body":  # put the leaf hashes back where they were
            rows = dict(c.execute("SELECT idx, leaf_hash FROM records WHERE idx IN (1, 4)").fetchall())
            c.execute("UPDATE records SET leaf_hash=? WHERE idx=1", (rows[4],))
            c.execute("UPDATE records SET leaf_hash=? WHERE idx=4", (rows[1],))

    tamper(path, edit)
    assert_bad_at(path, 1)


def test_a_truncated_tail_is_detected_at_the_first_missing_index(where):
    """Deleting the last two records is reported at index SIZE-2."""
    path = where
    build(path)
    tamper(path, lambda c: c.execute("DELETE FROM records WHERE idx>=?", (SIZE - 2,)))
    assert "truncated" in assert_bad_at(path, SIZE - 2).reason


def test_with_sparse_checkpoints_a_rewrite_is_located_between_checkpoints(where):
    """With checkpoints every 4 records, a consistent rewrite of record 5 is reported from index 4, the last good size."""
    path = where
    build(path, checkpoint_every=4)  # checkpoints at sizes 1 and 5, then the tail

    with path.open(signing_key=test_key()) as log:
        log.checkpoint(T0 + timedelta(hours=1))  # cover the tail: sizes 1, 5, 6

    def edit(conn: sqlite3.Connection) -> None:
        obj = body(conn, 5)
        obj["outcome"] = "error"
        set_body(conn, 5, obj, rehash=True)

    tamper(path, edit)
    error = assert_bad_at(path, 5)
    assert "[5, 6)" in error.reason


def test_a_forged_checkpoint_is_detected(where, another):
    """A checkpoint whose root was edited, or one signed by another key, fails verification."""
    path = where
    build(path)

    def edit_root(c: sqlite3.Connection) -> None:
        note = bytes(c.execute("SELECT note FROM checkpoints WHERE size=3").fetchone()[0])
        lines = note.split(b"\n")
        lines[3] = lines[3][:-3] + (b"AA=" if lines[3][-3:] != b"AA=" else b"AB=")
        c.execute("UPDATE checkpoints SET note=? WHERE size=3", (b"\n".join(lines),))

    tamper(path, edit_root)
    assert "signature" in assert_bad_at(path, None).reason

    other = another
    build(other)
    attacker = ec.generate_private_key(ec.SECP256R1())
    fake = Checkpoint(NODE, SIZE, b"\x00" * 32, T0).signed_bytes()
    tamper(other, lambda c: c.execute("INSERT INTO checkpoints (size, note, signature) VALUES (?, ?, ?)",
                                      (SIZE, fake, attacker.sign(fake, ec.ECDSA(hashes.SHA256())))))
    assert "signature" in assert_bad_at(other, None).reason


def test_a_log_without_any_checkpoint_does_not_verify(where):
    """Deleting every checkpoint leaves a log that nothing vouches for, reported at index 0."""
    path = where
    build(path)
    tamper(path, lambda c: c.execute("DELETE FROM checkpoints"))
    assert_bad_at(path, 0)



def test_a_later_edit_does_not_hide_an_earlier_one(where):
    """With records 4 and 5 both edited, verification reports index 4."""
    path = where
    build(path)

    def edit(conn: sqlite3.Connection) -> None:
        for idx in (5, 4):
            obj = body(conn, idx)
            obj["outcome"] = "error"
            set_body(conn, idx, obj, rehash=False)

    tamper(path, edit)
    assert_bad_at(path, 4)


# -- pruning: an emptied body is only acceptable where a signed prune record allows it ------

LATER = T0 + timedelta(days=800)


def pruned(path: Path) -> None:
    """The log of build(), with records 0..2 pruned (cut 3); the prune record is index SIZE."""
    build(path)
    with path.open(signing_key=test_key()) as log:
        assert log.prune(T0 + timedelta(seconds=3), now=LATER, actor=AUDITOR) == 3


def test_a_pruned_log_verifies(where):
    """After a prune the whole log, pruned prefix included, still verifies."""
    path = where
    pruned(path)
    result = verify_log(path.source, test_key().public_key())
    assert (result.size, result.pruned, result.unsigned_tail) == (SIZE + 1, 3, 0)


def test_an_emptied_body_outside_the_pruned_prefix_is_detected(where):
    """Setting the body of record 4 to NULL looks like pruning but is reported at index 4."""
    path = where
    pruned(path)
    tamper(path, lambda c: c.execute("UPDATE records SET body=NULL WHERE idx=4"))
    assert "prefix" in assert_bad_at(path, 4).reason


def test_emptying_bodies_beyond_the_signed_cut_is_detected(where):
    """Extending the pruned prefix past the cut of the prune record is reported at the cut."""
    path = where
    pruned(path)
    tamper(path, lambda c: c.execute("UPDATE records SET body=NULL WHERE idx<5"))
    assert "prune record" in assert_bad_at(path, 3).reason


def test_emptied_bodies_without_any_prune_record_are_detected(where):
    """A prefix of NULL bodies in a log that was never pruned is reported at index 0."""
    path = where
    build(path)
    tamper(path, lambda c: c.execute("UPDATE records SET body=NULL WHERE idx<2"))
    assert "prune record" in assert_bad_at(path, 0).reason


def test_a_wrong_prune_hint_only_costs_a_search(where):
    """The unsigned pointer to the prune record may be wrong or gone: verification finds the record itself."""
    path = where
    pruned(path)
    tamper(path, lambda c: c.execute("UPDATE meta SET value='1' WHERE key='last_prune_index'"))
    assert verify_log(path.source, test_key().public_key()).pruned == 3
    tamper(path, lambda c: c.execute("DELETE FROM meta WHERE key='last_prune_index'"))
    assert verify_log(path.source, test_key().public_key()).pruned == 3


def test_an_unsigned_prune_record_authorises_nothing(where):
    """A forged prune record appended after the newest checkpoint does not make emptied bodies acceptable."""
    path = where
    build(path)
    forged = replace(message_record(99), action=Action.CONFIG_CHANGE, envelope=None, message_id=None,
                     details={"change": "audit_prune", "before": "2026-03-01T08:00:03.000000Z", "cut_index": "3"})
    data = forged.canonical_bytes()

    def edit(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO records VALUES (?, 'x', ?, ?)", (SIZE, leaf_hash(data), data))
        c.execute("UPDATE records SET body=NULL WHERE idx<3")

    tamper(path, edit)
    assert_bad_at(path, 0)


@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/false"], ids=["cannot-start", "fails"])
def test_a_failed_worker_is_replaced_by_an_in_process_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture, executable: str):
    """When a worker cannot start or fails, its range is scanned here: same result, and a warning says so."""
    path = SqliteLog(tmp_path / "a.sqlite")
    build(path)
    monkeypatch.setattr(verify_module.sys, "executable", executable)
    assert verify_module.verify_log(path.source, test_key().public_key(), workers=3, chunk=2, scan_here=True).size == SIZE

    def edit(conn: sqlite3.Connection) -> None:
        obj = body(conn, 5)
        obj["outcome"] = "error"
        set_body(conn, 5, obj, rehash=False)

    tamper(path, edit)
    with pytest.raises(AuditVerificationError) as caught:
        verify_module.verify_log(path.source, test_key().public_key(), workers=3, chunk=2, scan_here=True)
    assert caught.value.index == 5
    assert [r.levelname for r in caplog.records if r.name == verify_module.log.name] == ["WARNING"] * 4
    caplog.clear()


@pytest.mark.parametrize("chunk", [1, 2, 4, 8, 16])
def test_roots_folded_from_chunks_equal_the_rfc_6962_roots(tmp_path: Path, chunk: int):
    """For every tree size of a 37-record log, the root folded from chunk scans equals MTH over the leaves."""
    from gateway.audit import scan

    path = tmp_path / "a.sqlite"
    with AuditLog.open(path, node=NODE, signing_key=test_key()) as log:
        log.append([message_record(i) for i in range(37)])
        tree = log.tree()
    sizes = list(range(0, 38))
    conn = scan.connect_read_only(str(path))
    try:
        results = [scan.scan_range(conn, lo, hi, chunk=chunk, sizes=sizes)
                   for lo, hi in verify_module._ranges(37, chunk, 3)]
    finally:
        conn.close()
    roots = verify_module._roots(results, sizes, chunk)
    assert roots == {size: tree.root(size) for size in sizes}
