"""Audit records: validation, canonical JSON and the test vectors of docs/audit.md."""

from __future__ import annotations

from datetime import datetime

import pytest

from gateway.audit import AuditRecord, leaf_hash, person_ref, root_of
from gateway.audit.record import EnvelopeMeta, canonical_json

from .conftest import SECRET, message_record

VECTOR_RECORD_JSON = (
    '{"action":"forwarded","actor":{"id":"einwohnerregister","kind":"local_system"},"details":{},'
    '"envelope":{"message_class":"0","message_date":"2026-03-01T08:00:00","message_type":"20201",'
    '"recipients":["2-LU-1"],"sender":"1-1061-1"},"message_id":"msg-1","node":"node-lu-hub","outcome":"ok",'
    '"person_refs":["73e461d7d31e031f8f0f4e3298c76d760dad030ef32c8afd245d9e144e5b1333"],'
    '"policy":{"legal_basis":"RHG Art. 2","purpose":"Einwohnerkontrolle","redactions":["religion"],'
    '"revision":"r7","rule_ids":["lu-move-in"]},"receipt_code":null,'
    '"received_digest":"0000000000000000000000000000000000000000000000000000000000000001","role":"origin",'
    '"sent_digest":"00000000000000000000000000000000000000000000000000000000000003e9",'
    '"time":"2026-03-01T08:00:01.000000Z","v":1}'
)


def vector_record() -> AuditRecord:
    return message_record(1, person_refs=(person_ref("756.1234.5678.97", SECRET),))


def test_canonical_bytes_match_the_documented_vector():
    """The fixed record of docs/audit.md serialises to exactly the documented canonical JSON."""
    assert vector_record().canonical_bytes() == VECTOR_RECORD_JSON.encode("utf-8")


def test_leaf_hash_matches_the_documented_vector():
    """The leaf hash of the fixed record is the documented hex value."""
    assert leaf_hash(vector_record().canonical_bytes()).hex() == (
        "6bac831d9277ee5290da2c946ffbc415a57fe941577d407e6bc95549fbb2939b"
    )


def test_root_of_three_records_matches_the_documented_vector():
    """The root of a log holding records 0, 1, 2 of the fixture is the documented hex value."""
    leaves = [leaf_hash(message_record(i).canonical_bytes()) for i in range(3)]
    assert root_of(leaves).hex() == "d5bfd66132cb88f5dd346e90ab2c93780463e02a87e779178f5ef177a4217d5b"


def test_records_roundtrip_through_their_bytes():
    """Parsing a record's canonical bytes gives back an equal record."""
    record = vector_record()
    assert AuditRecord.from_bytes(record.canonical_bytes()) == record


def test_non_canonical_bytes_are_refused():
    """Bytes with whitespace or reordered keys are not accepted as a stored record."""
    pretty = VECTOR_RECORD_JSON.replace(",", ", ").encode("utf-8")
    with pytest.raises(ValueError):
        AuditRecord.from_bytes(pretty)


def test_canonical_json_keeps_unicode_and_sorts_keys():
    """Canonical JSON sorts keys, drops whitespace and writes UTF-8 rather than escapes."""
    assert canonical_json({"b": "Zürich", "a": [1, None]}) == '{"a":[1,null],"b":"Zürich"}'.encode()


def test_naive_times_bad_digests_and_bad_ids_are_refused():
    """A record without timezone, with a non-hex digest or a malformed message id is refused."""
    with pytest.raises(ValueError):
        message_record(1, when=datetime(2026, 3, 1, 8, 0, 0))
    with pytest.raises(ValueError):
        message_record(1, received="ABC")
    with pytest.raises(ValueError):
        message_record(1, message_id="bad id with spaces")


def test_envelope_participants_are_normalised():
    """sedex:// URIs in envelope metadata are stored as plain participant IDs."""
    meta = EnvelopeMeta(sender="sedex://1-1061-1", recipients=("sedex://2-LU-1",), message_type="20201")
    assert (meta.sender, meta.recipients) == ("1-1061-1", ("2-LU-1",))


def test_person_refs_are_sorted_and_unique():
    """The order of persons in a payload does not show in the record."""
    refs = ("b" * 64, "a" * 64, "b" * 64)
    assert message_record(1, person_refs=refs).person_refs == ("a" * 64, "b" * 64)


def test_three_record_log_proofs_match_the_documented_vectors():
    """Leaf hashes, the inclusion proof of index 1 and the consistency proof 2 -> 3 equal docs/audit.md."""
    from gateway.audit import MerkleTree

    leaves = [leaf_hash(message_record(i).canonical_bytes()) for i in range(3)]
    assert [h.hex() for h in leaves] == [
        "ded7b9b7c26f028a5bef52749fb437a0296ad5f782f5ca5ad5c9f3e1323f4d69",
        "9d8fb2fe0f1b648bb3d9f0ddee8f332b7d7463111aa0e902147a483c76397aa9",
        "bbb8515101bfa75a09c14c510a548143cf1f7f226f7ecb34961e11f9fdeabc69",
    ]
    tree = MerkleTree(leaves)
    assert [p.hex() for p in tree.inclusion_proof(1, 3)] == [leaves[0].hex(), leaves[2].hex()]
    assert tree.consistency_proof(2, 3) == [leaves[2]]
    assert tree.root(2).hex() == "7d72af4e4584d0e8488301f25a8796401b794bd48a7a60309fbd90d1f2a760ef"
