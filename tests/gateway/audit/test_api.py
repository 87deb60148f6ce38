"""The auditor REST API on a real aiohttp server: auditors only, every read audited, no AHV number anywhere (SQLite and PostgreSQL logs)."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.audit import (
    Action, AuditLog, person_ref, verify_checkpoint, verify_consistency, verify_export, verify_inclusion,
)
from gateway.audit.api import auditor_app
from gateway.audit.merkle import leaf_hash
from gateway.audit.record import Actor, ActorKind

from .conftest import NODE, SECRET, T0, message_record, test_key

LATER = T0 + timedelta(days=2)
PERSON = "756.1234.5678.97"
# Every spelling of the number that could leak: as sent, as digits, and the normalised identifier.
PERSON_FORMS = [PERSON, "7561234567897", "vn:7561234567897"]
TOKENS = {"dpo-lu": hashlib.sha256(b"token-of-the-dpo").hexdigest()}
GOOD = {"Authorization": "Bearer token-of-the-dpo"}
ROUTES = [
    ("GET", "/audit/v1/status"), ("GET", "/audit/v1/verify"), ("POST", "/audit/v1/query"),
    ("POST", "/audit/v1/report"), ("GET", "/audit/v1/export"), ("GET", "/audit/v1/proofs/inclusion?index=0"),
    ("GET", "/audit/v1/proofs/consistency?first=1"), ("GET", "/audit/v1/no-such-route"),
]


def authenticate(token: str) -> str | None:
    """Constant-time comparison of token hashes, as the node does for its configured auditors."""
    offered = hashlib.sha256(token.encode()).hexdigest()
    return next((name for name, known in TOKENS.items() if hmac.compare_digest(offered, known)), None)


def seed(log: AuditLog) -> None:
    """Three messages, one per append (so one checkpoint per size); msg-1 names the person."""
    log.append([message_record(0, sender="1-1061-1")])
    log.append([message_record(1, sender="1-1059-1", action=Action.REFUSED, person_refs=(person_ref(PERSON, SECRET),))])
    log.append([message_record(2, sender="2-LU-1", recipients=("1-1061-1",))])


def records(where) -> list[dict]:
    conn = where.connect()
    try:
        return [json.loads(body) for (body,) in conn.execute("SELECT body FROM records ORDER BY idx")]
    finally:
        conn.close()


def reads(where) -> list[dict]:
    """The audit_read / audit_export records, oldest first."""
    return [r for r in records(where) if r["action"] in ("audit_read", "audit_export")]


@pytest.fixture
def node_log(where) -> Iterator[AuditLog]:
    """The node's log, on SQLite and on PostgreSQL in turn."""
    with where.open(signing_key=test_key(), checkpoint_every=1) as log:
        seed(log)
        yield log


async def serve(log: AuditLog, **options) -> TestClient:
    options = {"person_secret": SECRET, "now": lambda: LATER, "authenticate": authenticate} | options
    root = web.Application()
    root.add_subapp("/audit/v1", auditor_app(log, **options))  # mounted as the node will
    client = TestClient(TestServer(root))
    await client.start_server()
    return client


@pytest.fixture
async def api(node_log: AuditLog) -> AsyncIterator[TestClient]:
    client = await serve(node_log)
    yield client
    await client.close()


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic token-of-the-dpo"},
    {"Authorization": "Bearer "}, {"Authorization": "token-of-the-dpo"},
], ids=["none", "wrong", "basic", "empty", "no-scheme"])
async def test_every_route_refuses_requests_without_an_auditor_token(api: TestClient, where, headers):
    """Without a valid bearer token every route, and any unknown path, answers 401 and nothing is recorded."""
    before = len(records(where))
    for method, path in ROUTES:
        response = await api.request(method, path, headers=headers, json={"person": PERSON})
        assert response.status == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(records(where)) == before


async def test_an_unknown_path_is_a_404_for_an_auditor(api: TestClient):
    """Authenticated, an unknown path is simply not found."""
    assert (await api.get("/audit/v1/no-such-route", headers=GOOD)).status == 404


async def test_auditor_app_refuses_a_short_person_secret(node_log: AuditLog):
    """The keyed-hash secret is checked when the app is built, not at the first search."""
    with pytest.raises(ValueError):
        auditor_app(node_log, person_secret=b"short", now=lambda: LATER, authenticate=authenticate)


# -- status and verify ---------------------------------------------------------------------


async def test_status_reports_size_and_signed_checkpoint_and_is_audited(api: TestClient, where):
    """GET /status returns the size and the newest signed checkpoint, after recording who asked."""
    response = await api.get("/audit/v1/status", headers=GOOD)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert (body["node"], body["size"], body["read_index"]) == (NODE, 4, 3)
    checkpoint = verify_checkpoint(body["checkpoint"]["note"].encode(), base64.b64decode(body["checkpoint"]["signature"]),
                                   test_key().public_key(), origin=NODE)
    assert checkpoint.size == 4  # checkpoint_every=1: the read record itself is signed
    (read,) = reads(where)
    assert (read["actor"], read["details"]["read"], read["time"]) == ({"id": "dpo-lu", "kind": "auditor"}, "status",
                                                                     "2026-03-03T08:00:00.000000Z")


async def test_verify_reports_a_valid_log(api: TestClient):
    """GET /verify checks the whole log and reports its size and signed size."""
    body = await (await api.get("/audit/v1/verify", headers=GOOD)).json()
    assert body["valid"] is True
    assert (body["size"], body["signed_size"], body["unsigned_tail"], body["pruned"]) == (4, 4, 0, 0)


async def test_verify_reports_the_first_bad_index(api: TestClient, where):
    """After record 1 was edited in the stored log, GET /verify answers valid=false at index 1."""
    conn = where.connect()
    (stored,) = conn.execute("SELECT body FROM records WHERE idx = 1").fetchone()
    conn.execute("UPDATE records SET body = ? WHERE idx = 1", (bytes(stored).replace(b"refused", b"accepted"),))
    conn.close()
    body = await (await api.get("/audit/v1/verify", headers=GOOD)).json()
    assert (body["valid"], body["first_bad_index"]) == (False, 1)
    assert reads(where)[-1]["details"]["read"] == "verify"


# -- query and person search -----------------------------------------------------------------


@pytest.mark.parametrize("filters,expected", [
    ({}, ["msg-0", "msg-1", "msg-2"]),
    ({"participant": "sedex://1-1061-1"}, ["msg-0", "msg-2"]),
    ({"action": "refused"}, ["msg-1"]),
    ({"outcome": "error"}, []),
    ({"message_type": "20201", "message_id": "msg-2"}, ["msg-2"]),
    ({"since": "2026-03-01T08:00:01Z", "until": "2026-03-01T09:00:02+01:00"}, ["msg-1"]),
    ({"person": PERSON}, ["msg-1"]),
    ({"person": "756 1234 5678 97", "action": "forwarded"}, []),
])
async def test_query_returns_exactly_the_matching_records(api: TestClient, filters: dict, expected: list[str]):
    """POST /query applies each filter (AND) and returns the matching records with their indices."""
    response = await api.post("/audit/v1/query", headers=GOOD, json=filters)
    assert response.status == 200
    body = await response.json()
    assert [r["record"]["message_id"] for r in body["records"]] == expected
    assert all(r["record"]["message_id"] == f"msg-{r['index']}" for r in body["records"])


async def test_query_limit_truncates_and_says_so(api: TestClient):
    """With limit=2 of three matches, two records come back and truncated is true."""
    body = await (await api.post("/audit/v1/query", headers=GOOD, json={"limit": 2})).json()
    assert (len(body["records"]), body["truncated"]) == (2, True)


async def test_a_person_search_never_shows_the_ahv_number(api: TestClient, where, caplog: pytest.LogCaptureFixture):
    """The AHV number is hashed before the search: not in the response, not in the read record, not in any log line or file."""
    caplog.set_level(logging.DEBUG)
    response = await api.post("/audit/v1/query", headers=GOOD, json={"person": PERSON})
    text = await response.text()
    assert [r["record"]["message_id"] for r in json.loads(text)["records"]] == ["msg-1"]
    ref = person_ref(PERSON, SECRET)
    assert json.loads(text)["query"] == {"person_ref": ref}
    (read,) = reads(where)
    assert json.loads(read["details"]["query"]) == {"person_ref": ref}
    stored = where.stored_bytes()
    for form in PERSON_FORMS:
        assert form not in text
        assert form.encode() not in stored
        assert form not in caplog.text
    assert ref.encode() in stored  # the search is recorded, as its keyed hash


@pytest.mark.parametrize("person", ["756.1234.5678", "Muster Hans", 7561234567897])
async def test_a_malformed_person_is_refused_without_echo(api: TestClient, where, person):
    """A person that is not an AHV number or local ID gets 400 naming the parameter, not its value; nothing is read."""
    response = await api.post("/audit/v1/query", headers=GOOD, json={"person": person})
    assert response.status == 400
    text = await response.text()
    assert json.loads(text)["parameter"] == "person"
    assert str(person) not in text and "Muster" not in text
    assert reads(where) == []


async def test_unknown_or_malformed_parameters_are_refused_without_echo(api: TestClient):
    """Unknown parameter names and malformed values are refused with 400, and neither is echoed."""
    response = await api.post("/audit/v1/query", headers=GOOD, json={"7561234567897": "x"})
    assert response.status == 400 and "7561234567897" not in await response.text()
    response = await api.post("/audit/v1/query", headers=GOOD, json={"since": "2026-03-01T08:00:00"})
    assert (response.status, (await response.json())["parameter"]) == (400, "since")
    response = await api.post("/audit/v1/query", headers=GOOD, json={"participant": "7561234567897"})
    assert response.status == 400 and "7561234567897" not in await response.text()
    response = await api.get("/audit/v1/status?person=7561234567897", headers=GOOD)
    assert response.status == 400 and "7561234567897" not in await response.text()
    response = await api.post("/audit/v1/query", headers=GOOD, data=b"[1, 2]")
    assert response.status == 400


async def test_person_search_without_a_secret_is_not_available(node_log: AuditLog):
    """A node without the audit secret answers 501 to person searches and reports, but serves other queries."""
    client = await serve(node_log, person_secret=None)
    try:
        assert (await client.post("/audit/v1/query", headers=GOOD, json={"person": PERSON})).status == 501
        assert (await client.post("/audit/v1/report", headers=GOOD, json={"person": PERSON})).status == 501
        assert (await client.post("/audit/v1/query", headers=GOOD, json={})).status == 200
    finally:
        await client.close()


async def test_the_access_report_lists_the_messages_about_the_person(api: TestClient, where):
    """POST /report returns the messages that named the person, and records the read by its keyed hash only."""
    response = await api.post("/audit/v1/report", headers=GOOD, json={"person": PERSON})
    text = await response.text()
    report = json.loads(text)
    assert [m["message_id"] for m in report["messages"]] == ["msg-1"]
    assert report["messages"][0]["sender"] == "1-1059-1" and report["messages"][0]["legal_bases"] == ["RHG Art. 2"]
    assert all(form not in text for form in PERSON_FORMS)
    (read,) = reads(where)
    assert read["details"] == {"read": "subject_access_report",
                               "query": json.dumps({"person_ref": person_ref(PERSON, SECRET)}, separators=(",", ":"))}


# -- export and proofs ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
async def test_an_export_streams_and_verifies_offline(api: TestClient, where, fmt: str):
    """GET /export streams a JSONL or CSV export that verifies with the node's public key alone."""
    response = await api.get(f"/audit/v1/export?format={fmt}", headers=GOOD)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson" if fmt == "jsonl" else "text/csv")
    assert response.headers.get("Transfer-Encoding") == "chunked"  # streamed, not buffered
    verified = verify_export(await response.text(), test_key().public_key(), origin=NODE)
    assert [i for i, _ in verified.records] == [0, 1, 2, 3]
    export_record = verified.records[-1][1]
    assert (export_record.action, export_record.actor) == (Action.AUDIT_EXPORT, Actor(ActorKind.AUDITOR, "dpo-lu"))
    assert export_record.details == {"format": fmt}
    if fmt == "csv":
        assert next(csv.reader(io.StringIO(await response.text()))) == ["kind", "index", "body", "proof", "signature"]


async def test_an_export_holds_the_window_or_one_message(api: TestClient):
    """since/until select a time window; message_id keeps the records of one message (what a trace needs)."""
    key = test_key().public_key()
    response = await api.get("/audit/v1/export?since=2026-03-01T08:00:01Z&until=2026-03-01T08:00:02Z", headers=GOOD)
    assert [i for i, _ in verify_export(await response.text(), key).records] == [1]
    response = await api.get("/audit/v1/export?message_id=msg-2", headers=GOOD)
    verified = verify_export(await response.text(), key)
    assert [(i, r.message_id) for i, r in verified.records] == [(2, "msg-2")]
    assert verified.checkpoint.size == 5  # covers both export records


async def test_an_inclusion_proof_verifies_against_the_returned_checkpoint(api: TestClient):
    """GET /proofs/inclusion returns body, proof and a signed checkpoint that together verify."""
    key = test_key().public_key()
    for query in ("index=1", "index=1&size=3"):
        body = await (await api.get(f"/audit/v1/proofs/inclusion?{query}", headers=GOOD)).json()
        checkpoint = verify_checkpoint(body["checkpoint"]["note"].encode(),
                                       base64.b64decode(body["checkpoint"]["signature"]), key, origin=NODE)
        leaf = leaf_hash(body["body"].encode("utf-8"))
        assert leaf.hex() == body["leaf_hash"]
        verify_inclusion(leaf, 1, checkpoint.size, [bytes.fromhex(p) for p in body["proof"]], checkpoint.root)
    assert checkpoint.size == 3
    missing = await api.get("/audit/v1/proofs/inclusion?index=1&size=99", headers=GOOD)
    assert missing.status == 404
    assert (await api.get("/audit/v1/proofs/inclusion?index=3&size=3", headers=GOOD)).status == 400


async def test_a_consistency_proof_links_a_kept_checkpoint_to_a_new_one(api: TestClient, where):
    """From the checkpoint of size 2 an auditor kept, GET /proofs/consistency proves the current log extends it."""
    key = test_key().public_key()
    body = await (await api.get("/audit/v1/proofs/consistency?first=2", headers=GOOD)).json()
    old = verify_checkpoint(body["first_checkpoint"]["note"].encode(),
                            base64.b64decode(body["first_checkpoint"]["signature"]), key, origin=NODE)
    new = verify_checkpoint(body["checkpoint"]["note"].encode(), base64.b64decode(body["checkpoint"]["signature"]), key)
    assert (old.size, new.size) == (2, body["second"])
    verify_consistency(2, new.size, old.root, new.root, [bytes.fromhex(p) for p in body["proof"]])
    assert [r["details"]["read"] for r in reads(where)] == ["consistency_proof"]


# -- every read is recorded, and fail closed -------------------------------------------------


async def test_every_read_is_recorded_with_who_and_what(api: TestClient, where):
    """Each successful request appends one record naming the auditor and the read, in request order."""
    await api.get("/audit/v1/status", headers=GOOD)
    await api.get("/audit/v1/verify", headers=GOOD)
    await api.post("/audit/v1/query", headers=GOOD, json={"message_id": "msg-0"})
    await api.post("/audit/v1/report", headers=GOOD, json={"person": PERSON})
    await (await api.get("/audit/v1/export?format=csv", headers=GOOD)).read()
    await api.get("/audit/v1/proofs/inclusion?index=0", headers=GOOD)
    await api.get("/audit/v1/proofs/consistency?first=1", headers=GOOD)
    seen = [(r["action"], r["details"].get("read", r["details"].get("format"))) for r in reads(where)]
    assert seen == [("audit_read", "status"), ("audit_read", "verify"), ("audit_read", "query"),
                    ("audit_read", "subject_access_report"), ("audit_export", "csv"),
                    ("audit_read", "inclusion_proof"), ("audit_read", "consistency_proof")]
    assert {r["actor"]["id"] for r in reads(where)} == {"dpo-lu"}
    assert json.loads(reads(where)[2]["details"]["query"]) == {"message_id": "msg-0"}


async def test_reads_fail_closed_when_the_log_cannot_record_them(node_log: AuditLog, where):
    """When the checkpoint key is unavailable, every read answers 503 and returns no record."""
    available = {"key": True}

    def key_store():
        if not available["key"]:
            raise OSError("HSM not reachable")
        return test_key()

    with where.open(signing_key=key_store) as log:
        client = await serve(log)
        try:
            available["key"] = False
            for method, path in ROUTES[:-1]:
                response = await client.request(method, path, headers=GOOD, json={"person": PERSON})
                assert response.status == 503, (method, path)
                assert "msg-" not in await response.text()
            available["key"] = True
            assert (await client.get("/audit/v1/status", headers=GOOD)).status == 200
        finally:
            await client.close()
    assert len(reads(where)) == 1


async def test_a_large_export_arrives_whole(node_log: AuditLog):
    """An export of more records than one streamed batch arrives complete and verifies."""
    node_log.append([message_record(i, when=T0 + timedelta(minutes=1, microseconds=i)) for i in range(3, 1203)])
    client = await serve(node_log)
    try:
        response = await client.get("/audit/v1/export", headers=GOOD)
        verified = verify_export(await response.text(), test_key().public_key(), origin=NODE)
    finally:
        await client.close()
    assert [i for i, _ in verified.records] == list(range(1204))
